"""300-W .pts and IMM .asf readers, on files written here and on the real data when present."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.data import DataError, SkippableError, ibug, imm

from conftest import DATA
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")


def _img(path, w=64, h=48):
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def test_pts_standard_and_bare(tmp_path):
    pts = np.random.default_rng(0).uniform(0, 60, (68, 2)).astype(np.float32)
    ibug.write_pts(tmp_path / "a.pts", pts)
    np.testing.assert_allclose(ibug.read_pts(tmp_path / "a.pts"), pts, atol=1e-3)
    (tmp_path / "b.pts").write_text("\n".join(f"{x + 1} {y + 1}" for x, y in pts))
    np.testing.assert_allclose(ibug.read_pts(tmp_path / "b.pts"), pts, atol=1e-4)


def test_pts_is_one_based(tmp_path):
    (tmp_path / "c.pts").write_text("version: 1\nn_points: 1\n{\n1 1\n}\n")
    assert ibug.read_pts(tmp_path / "c.pts", None).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("body,match", [
    ("version: 1\nn_points: 68\n{\n1 2\n}\n", "header says n_points 68 but the file has 1"),
    ("version: 1\nn_points: 1\n{\n1 x\n}\n", r"c.pts:4: not a number"),
    ("version: 1\nn_points: 1\n{\n1 2 3\n}\n", r"c.pts:4: expected two numbers"),
    ("1 2\n3 4\n", "expected 68 points, found 2"),
])
def test_pts_bad_files_name_file_and_line(tmp_path, body, match):
    (tmp_path / "c.pts").write_text(body)
    with pytest.raises(DataError, match=match):
        ibug.read_pts(tmp_path / "c.pts")


def test_load_dir_skip_bad(tmp_path):
    pts = np.random.default_rng(1).uniform(0, 40, (68, 2))
    for name in ("good", "bad_img", "bad_pts"):
        ibug.write_pts(tmp_path / f"{name}.pts", pts)
        _img(tmp_path / f"{name}.jpg")
    (tmp_path / "bad_img.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "bad_pts.pts").write_text("1 2\n")
    with pytest.raises(SkippableError, match="bad_img.jpg: unreadable image") as e:
        ibug.load_dir(tmp_path)
    assert e.value.unit == "files" and "--" not in str(e.value), "the reader names no CLI flag"
    samples, report = ibug.load_dir(tmp_path, skip_bad=True)
    assert [Path(s.source).stem for s in samples] == ["good"]
    assert len(report.skipped) == 2 and "skipped 2 bad file(s)" in report.summary()
    assert samples[0].mask.all() and samples[0].image.shape == (48, 64, 3)


def test_split_is_fixed():
    names = [f"/x/afw/img_{i}.pts" for i in range(2000)]
    splits = [ibug.split_of(n) for n in names]
    assert splits == [ibug.split_of(n) for n in names]
    frac = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert 0.08 < frac["test"] < 0.12 and 0.03 < frac["val"] < 0.07


ASF_HEAD = "# comment\n\n58\n\n"


def _asf(path, rows, host="01-1m.jpg"):
    path.write_text(ASF_HEAD + "\n".join(rows) + f"\n\n# host image\n{host}\n")


def _rows(rng):
    return [f"0 \t4 \t{x:.6f} \t{y:.6f} \t{i} \t0 \t1" for i, (x, y) in enumerate(rng.uniform(0.2, 0.8, (58, 2)))]


def test_asf_relative_to_pixels(tmp_path):
    rng = np.random.default_rng(2)
    rows = _rows(rng)
    _asf(tmp_path / "01-1m.asf", rows)
    pts, host = imm.read_asf(tmp_path / "01-1m.asf", 640, 480)
    x, y = (float(v) for v in rows[5].split()[2:4])
    assert pts[5].tolist() == pytest.approx([x * 640, y * 480], abs=1e-3)
    assert host == "01-1m.jpg"


def test_asf_bad_lines(tmp_path):
    rng = np.random.default_rng(3)
    rows = _rows(rng)
    rows[10] = "0 4 0.5 oops 10 0 1"
    _asf(tmp_path / "02-1m.asf", rows)
    with pytest.raises(DataError, match=r"02-1m.asf:15: not a number"):
        imm.read_asf(tmp_path / "02-1m.asf", 640, 480)
    _asf(tmp_path / "03-1m.asf", _rows(rng)[:40])
    with pytest.raises(DataError, match="expected 58 point lines, found 40"):
        imm.read_asf(tmp_path / "03-1m.asf", 640, 480)


def test_imm_person_split(tmp_path):
    rng = np.random.default_rng(4)
    for person in (1, 32, 33, 40):
        p = tmp_path / f"{person:02d}-1m.asf"
        _asf(p, _rows(rng))
        _img(p.with_suffix(".jpg"), 640, 480)
    tr, _ = imm.load_dir(tmp_path, split="train")
    va, _ = imm.load_dir(tmp_path, split="val")
    assert sorted(imm.person_of(s.source) for s in tr) == [1, 32]
    assert sorted(imm.person_of(s.source) for s in va) == [33, 40]


@needs_data
def test_real_300w_and_imm():
    samples, rep = ibug.load_dir(DATA / "300w" / "afw")
    assert len(samples) > 300 and not rep
    s = samples[0]
    h, w = s.image.shape[:2]
    assert (s.points >= -5).all() and (s.points[:, 0] < w + 5).all() and (s.points[:, 1] < h + 5).all()
    # image-left outer eye corner (36) is left of the image-right one (45) on a frontal-ish face
    assert np.mean([x.points[36, 0] < x.points[45, 0] for x in samples]) > 0.95
    tr, _ = imm.load_dir(DATA / "imm", split="train")
    va, _ = imm.load_dir(DATA / "imm", split="val")
    assert len(tr) == 192 and len(va) == 48
    nose = np.array([s.points[52] for s in tr])
    assert (nose[:, 0] > 150).all() and (nose[:, 0] < 500).all()
