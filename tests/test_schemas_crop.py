import math

import numpy as np
import pytest

from fkp_live import schemas
from fkp_live.crop import Crop, crop_from_box, crop_from_points, roll_from_eyes


@pytest.mark.parametrize("schema", list(schemas.SCHEMAS.values()), ids=lambda s: s.name)
def test_schema_is_consistent(schema):
    m = schema.mirror_array()
    assert len(schema.names) == schema.n == len(m)
    assert sorted(m) == list(range(schema.n)), "mirror must be a permutation"
    assert np.array_equal(m[m], np.arange(schema.n)), "mirroring twice must be the identity"
    for line in schema.lines:
        assert all(0 <= i < schema.n for i in line)
    for groups in (schema.ocular, schema.pupils):
        if groups is not None:
            # the two eyes swap under the mirror
            assert sorted(m[list(groups[0])]) == sorted(groups[1])


def test_ibug_mirror_known_pairs():
    m = schemas.IBUG68.mirror
    assert m[36] == 45 and m[0] == 16 and m[30] == 30 and m[48] == 54 and m[62] == 62


def test_mirror_matches_geometry_on_real_mean_shapes():
    # mirror a symmetric-ish synthetic face: for every scheme with eyes, the mirrored point of the
    # image-left eye corner must be on the image-right side
    for s in (schemas.IBUG68, schemas.IMM58, schemas.KAGGLE15):
        left, right = s.ocular
        assert s.mirror[left[0]] == right[0]


def test_unknown_schema_message():
    with pytest.raises(KeyError, match="unknown keypoint schema 'nope'.*ibug68"):
        schemas.get("nope")


def test_map_points_masks_groups_with_missing_points():
    pts = np.arange(68 * 2, dtype=np.float32).reshape(68, 2)
    mask = np.ones(68, bool)
    mask[57] = False  # bottom lip centre missing
    out, m = schemas.map_points(pts, mask, schemas.IBUG_TO_KAGGLE)
    assert out.shape == (15, 2)
    assert not m[14] and m[:14].all()
    np.testing.assert_allclose(out[0], pts[42:48].mean(0))


def test_crop_round_trip():
    c = Crop(100.0, 80.0, 50.0, 0.3)
    pts = np.array([[90, 70], [120, 95], [100, 80]], np.float32)
    np.testing.assert_allclose(c.to_frame(c.from_frame(pts)), pts, atol=1e-3)
    # the centre maps to the middle of the crop
    np.testing.assert_allclose(c.from_frame(np.array([[100.0, 80.0]])), [[0.5, 0.5]], atol=1e-6)


def test_crop_from_points_levels_the_eyes():
    rng = np.random.default_rng(0)
    base = rng.uniform(-40, 40, (68, 2))
    base[36:42] = [-30, 0] + rng.normal(0, 1, (6, 2))
    base[42:48] = [30, 0] + rng.normal(0, 1, (6, 2))
    ang = math.radians(25)
    rot = np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    pts = base @ rot.T + [200, 150]
    crop = crop_from_points(pts, schemas.IBUG68, 1.3)
    eyes = schemas.IBUG68.eye_centres(pts)
    assert abs(crop.angle - roll_from_eyes(eyes[0], eyes[1])) < 1e-9
    uv = crop.from_frame(eyes)
    assert abs(uv[0, 1] - uv[1, 1]) < 1e-4, "eyes are level in the crop"
    inside = crop.from_frame(pts)
    assert inside.min() > 0 and inside.max() < 1, "every point is inside the crop"
    # the box's longer side is 1/scale of the crop
    span = inside.max(0) - inside.min(0)
    assert abs(span.max() - 1 / 1.3) < 1e-3


def test_crop_from_box_calibration():
    c = crop_from_box((100, 100, 200, 200), (0.0, 0.1, 1.5))
    assert (c.cx, c.cy, c.side) == pytest.approx((150, 160, 150))
