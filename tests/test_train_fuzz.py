"""Property-based tests (hypothesis) for the training readers and the crop geometry.

Readers: any bytes or any mutation of a valid file gives points or a DataError that names the file,
never another exception. Geometry: crops and back-projection are inverse; a flip with the mirror
permutation, done twice, is the identity; a written .pts reads back to the same points.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fkp_live import schemas
from fkp_live.crop import Crop, crop_from_points
from train.augment import flip_points
from train.data import DataError
from train.data import generic, ibug, imm, kaggle

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


def _valid_pts(n=68) -> str:
    body = "\n".join(f"{10 + i:.3f} {20 + 0.5 * i:.3f}" for i in range(n))
    return f"version: 1\nn_points:  {n}\n{{\n{body}\n}}\n"


def _mutate(text: str, data) -> bytes:
    b = bytearray(text.encode())
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if not b:
            break
        i = data.draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del b[i]
    return bytes(b)


def _only_data_errors(read, path):
    try:
        return read(path)
    except DataError as e:
        assert str(path.name) in str(e)  # the message names the file
        return None


@FAST
@given(data=st.data())
def test_pts_reader_mutated_files(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("pts") / "x.pts"
    p.write_bytes(_mutate(_valid_pts(), data) if data.draw(st.booleans()) else data.draw(st.binary(max_size=300)))
    pts = _only_data_errors(ibug.read_pts, p)
    if pts is not None:
        assert pts.shape == (68, 2) and np.isfinite(pts).all()


@FAST
@given(pts=st.lists(st.tuples(finite, finite), min_size=68, max_size=68))
def test_pts_write_read_round_trip(tmp_path_factory, pts):
    p = tmp_path_factory.mktemp("rt") / "y.pts"
    a = np.array(pts, np.float64)
    ibug.write_pts(p, a)
    np.testing.assert_allclose(ibug.read_pts(p), a, atol=1e-3)


def _valid_asf() -> str:
    rows = "\n".join(f"0 0 {0.2 + 0.01 * i:.4f} {0.3 + 0.005 * i:.4f} {i} {max(i - 1, 0)} {min(i + 1, 57)}"
                     for i in range(58))
    return f"# comment\n58\n{rows}\n01-1m.jpg\n"


@FAST
@given(data=st.data())
def test_asf_reader_mutated_files(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("asf") / "01-1m.asf"
    p.write_bytes(_mutate(_valid_asf(), data) if data.draw(st.booleans()) else data.draw(st.binary(max_size=300)))
    out = _only_data_errors(lambda q: imm.read_asf(q, 640, 480), p)
    if out is not None:
        pts, _ = out
        assert pts.shape == (58, 2)


def _valid_kaggle_training() -> str:
    cols = [f"{n}_{a}" for n in schemas.KAGGLE_NAMES for a in ("x", "y")]
    img = " ".join(str(i % 256) for i in range(96 * 96))
    row = ",".join(f"{30 + i * 0.5:.2f}" for i in range(len(cols)))
    return ",".join(cols + ["Image"]) + "\n" + row + "," + img + "\n"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_kaggle_training_reader_mutated_files(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("kg") / "training.csv"
    text = _valid_kaggle_training()
    # mutate the header and the coordinates (the 37 KB image cell is left to one case)
    head, rest = text[:2000], text[2000:]
    p.write_bytes(_mutate(head, data) + rest.encode() if data.draw(st.booleans()) else data.draw(st.binary(max_size=400)))
    out = _only_data_errors(kaggle.read_training, p)
    if out is not None:
        samples, _ = out
        for s in samples:
            assert s.points.shape == (15, 2) and s.image.shape[:2] == (96, 96)


@FAST
@given(data=st.data())
def test_generic_csv_reader_mutated_files(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("gen")
    import cv2

    cv2.imwrite(str(d / "a.png"), np.zeros((40, 40, 3), np.uint8))
    header = ",".join(generic.header_for(5))
    row = "a.png," + ",".join(f"{5 + i}" for i in range(10))
    p = d / "points.csv"
    p.write_bytes(_mutate(f"{header}\n{row}\n", data) if data.draw(st.booleans()) else data.draw(st.binary(max_size=200)))
    out = _only_data_errors(lambda q: generic.read_csv(q, schema_name=None), p)
    if out is not None:
        samples, _ = out
        assert all(s.points.shape[1] == 2 for s in samples)


# ------------------------------------------------------------------------------- geometry
crops = st.builds(Crop, cx=st.floats(-500, 1500), cy=st.floats(-500, 1500), side=st.floats(4, 2000),
                  angle=st.floats(-math.pi, math.pi))


@settings(max_examples=200, deadline=None)
@given(crop=crops, uv=st.lists(st.tuples(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5)), min_size=1, max_size=20))
def test_crop_and_back_projection_are_inverse(crop, uv):
    uv = np.array(uv, np.float64)
    px = crop.to_frame(uv)
    np.testing.assert_allclose(crop.from_frame(px), uv, atol=1e-4 * max(1.0, 1000 / crop.side))


@settings(max_examples=100, deadline=None)
@given(shift=st.tuples(st.floats(-300, 300), st.floats(-300, 300)), scale=st.floats(0.2, 5),
       angle=st.floats(-1.2, 1.2))
def test_crop_from_points_follows_the_face(shift, scale, angle):
    """Moving, scaling and rolling a face moves, scales and rolls its crop the same way."""
    base = np.stack([np.linspace(0, 60, 68), 40 + 20 * np.sin(np.linspace(0, 6, 68))], axis=1)
    base[36], base[45] = (10, 20), (50, 20)  # outer eye corners: level eyes
    c0 = crop_from_points(base, schemas.IBUG68, 1.3)
    c, s = math.cos(angle), math.sin(angle)
    m = scale * np.array([[c, -s], [s, c]])
    moved = base @ m.T + np.array(shift)
    c1 = crop_from_points(moved, schemas.IBUG68, 1.3)
    assert c1.side == pytest.approx(c0.side * scale, rel=1e-6)
    assert math.remainder(c1.angle - c0.angle - angle, 2 * math.pi) == pytest.approx(0, abs=1e-6)
    # the same points land on the same crop fractions
    np.testing.assert_allclose(c1.from_frame(moved), c0.from_frame(base), atol=1e-4)


@pytest.mark.parametrize("name", ["ibug68", "imm58", "kaggle15"])
@settings(max_examples=30, deadline=None)
@given(pts=st.lists(st.tuples(st.floats(0, 127), st.floats(0, 127)), min_size=68, max_size=68),
       mask_bits=st.lists(st.booleans(), min_size=68, max_size=68))
def test_flip_with_the_mirror_permutation_twice_is_identity(name, pts, mask_bits):
    schema = schemas.get(name)
    p = np.array(pts[: schema.n], np.float32)
    m = np.array(mask_bits[: schema.n], bool)
    p1, m1 = flip_points(p, m, schema, 128)
    p2, m2 = flip_points(p1, m1, schema, 128)
    np.testing.assert_allclose(p2, p, atol=1e-4)
    assert (m2 == m).all()
    # a left point goes to the slot of its mirror partner, at the mirrored x
    perm = schema.mirror_array()
    np.testing.assert_allclose(p1[:, 0], 127 - p[perm, 0], atol=1e-4)
