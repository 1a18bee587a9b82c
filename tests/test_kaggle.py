"""Kaggle Facial Keypoints files: exact formats, masked points, errors with file and line."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fkp_live.schemas import KAGGLE_BIG_SUBSET
from train.data import DataError, Sample, SkippableError
from train.data import kaggle

# Kaggle's header, written out literally (not built from the module under test).
HEADER = (
    "left_eye_center_x,left_eye_center_y,right_eye_center_x,right_eye_center_y,"
    "left_eye_inner_corner_x,left_eye_inner_corner_y,left_eye_outer_corner_x,left_eye_outer_corner_y,"
    "right_eye_inner_corner_x,right_eye_inner_corner_y,right_eye_outer_corner_x,right_eye_outer_corner_y,"
    "left_eyebrow_inner_end_x,left_eyebrow_inner_end_y,left_eyebrow_outer_end_x,left_eyebrow_outer_end_y,"
    "right_eyebrow_inner_end_x,right_eyebrow_inner_end_y,right_eyebrow_outer_end_x,right_eyebrow_outer_end_y,"
    "nose_tip_x,nose_tip_y,mouth_left_corner_x,mouth_left_corner_y,mouth_right_corner_x,mouth_right_corner_y,"
    "mouth_center_top_lip_x,mouth_center_top_lip_y,mouth_center_bottom_lip_x,mouth_center_bottom_lip_y,"
    "Image"
)


def pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (96, 96), dtype=np.uint8)


def img_cell(img: np.ndarray) -> str:
    return " ".join(str(v) for v in img.reshape(-1))


def full_coords(seed: int) -> list[str]:
    r = np.random.default_rng(seed)
    return [f"{v:.6f}" for v in r.uniform(5, 90, 30)]


def big_subset_coords(seed: int) -> list[str]:
    cells = full_coords(seed)
    for k in range(15):
        if k not in KAGGLE_BIG_SUBSET:
            cells[2 * k] = cells[2 * k + 1] = ""
    return cells


def row(coords: list[str], img: np.ndarray) -> str:
    return ",".join(coords + [img_cell(img)])


def write(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_header_constant_matches_kaggle():
    assert ",".join(kaggle.TRAINING_HEADER) == HEADER


def test_read_training_values_masks_and_pixels(tmp_path):
    imgs = [pixels(0), pixels(1)]
    full, part = full_coords(10), big_subset_coords(11)
    p = write(tmp_path / "training.csv", [HEADER, row(full, imgs[0]), row(part, imgs[1])])
    samples, report = kaggle.read_training(p)
    assert not report and len(samples) == 2
    a, b = samples
    assert a.schema == "kaggle15" and a.image.dtype == np.uint8 and a.image.shape == (96, 96)
    np.testing.assert_array_equal(a.image, imgs[0])
    np.testing.assert_array_equal(b.image, imgs[1])
    # coordinates kept exactly as Kaggle's pixels, x then y per point
    np.testing.assert_allclose(a.points, np.array(full, float).reshape(15, 2), atol=1e-4)
    assert a.mask.all()
    # the partly labelled row is kept, its missing points masked
    assert b.mask.tolist() == [k in KAGGLE_BIG_SUBSET for k in range(15)]
    assert np.isnan(b.points[~b.mask]).all() and np.isfinite(b.points[b.mask]).all()
    assert a.source.endswith("training.csv:2") and b.source.endswith("training.csv:3")


def test_write_training_round_trip(tmp_path):
    p = write(tmp_path / "in.csv", [HEADER, row(full_coords(1), pixels(2)), row(big_subset_coords(3), pixels(4))])
    samples, _ = kaggle.read_training(p)
    out = tmp_path / "out.csv"
    assert kaggle.write_training(out, samples) == 2
    text = out.read_text().splitlines()
    assert text[0] == HEADER
    # masked points are empty cells
    cells = text[2].split(",")
    assert cells[4] == "" and cells[5] == "" and cells[20] != ""
    again, _ = kaggle.read_training(out)
    for s, t in zip(samples, again):
        np.testing.assert_array_equal(s.image, t.image)
        np.testing.assert_array_equal(s.mask, t.mask)
        np.testing.assert_allclose(s.points, t.points, atol=1e-4, equal_nan=True)
    assert not list(tmp_path.glob(".*tmp*"))


def test_write_training_rejects_non_kaggle_samples(tmp_path):
    s = Sample(np.zeros((64, 64), np.uint8), np.zeros((15, 2), np.float32), np.ones(15, bool), "x", "kaggle15")
    with pytest.raises(ValueError, match="96 x 96"):
        kaggle.write_training(tmp_path / "t.csv", [s])
    s = Sample(np.zeros((96, 96), np.uint8), np.zeros((68, 2), np.float32), np.ones(68, bool), "x", "ibug68")
    with pytest.raises(ValueError, match="15"):
        kaggle.write_training(tmp_path / "t.csv", [s])
    assert not (tmp_path / "t.csv").exists()


def _bad_rows():
    good = full_coords(5)
    img = pixels(5)
    short_img = " ".join(img_cell(img).split()[:9215])
    coords_nan = list(good)
    coords_nan[3] = "abc"
    half = list(good)
    half[21] = ""
    big = img_cell(img).split()
    big[100] = "256"
    frac = img_cell(img).split()
    frac[7] = "1.5"
    return {
        "too few pixels": (",".join(good + [short_img]), "9215 pixel values"),
        "non-number coordinate": (",".join(coords_nan + [img_cell(img)]), "right_eye_center_y"),
        "pixel out of range": (",".join(good + [" ".join(big)]), "256"),
        "non-integer pixel": (",".join(good + [" ".join(frac)]), "'1.5'"),
        "missing column": (",".join(good[1:] + [img_cell(img)]), "expected 31 columns"),
        "x without y": (",".join(half + [img_cell(img)]), "nose_tip"),
        "inf": (",".join(["inf"] + good[1:] + [img_cell(img)]), "non-finite"),
    }


@pytest.mark.parametrize("case", list(_bad_rows()))
def test_bad_row_names_file_and_line(tmp_path, case):
    bad, needle = _bad_rows()[case]
    good = row(full_coords(1), pixels(1))
    p = write(tmp_path / "training.csv", [HEADER, good, good, bad, good])
    with pytest.raises(DataError) as e:
        kaggle.read_training(p)
    msg = str(e.value)
    assert f"{p}:4:" in msg, msg
    assert needle in msg, msg
    assert isinstance(e.value, SkippableError) and e.value.unit == "rows"
    assert "--skip-bad" not in msg, "the reader names no CLI flag; the CLI adds it"


def test_skip_bad_counts_and_reasons(tmp_path):
    rows = _bad_rows()
    good = row(full_coords(1), pixels(1))
    lines = [HEADER, good, rows["too few pixels"][0], good, rows["missing column"][0], "", good]
    p = write(tmp_path / "training.csv", lines)
    samples, report = kaggle.read_training(p, skip_bad=True)
    assert len(samples) == 3
    assert [src for src, _ in report.skipped] == [f"{p}:3", f"{p}:5"]
    assert "pixel values" in report.skipped[0][1] and "columns" in report.skipped[1][1]
    assert "skipped 2" in report.summary()
    # skipping does not hide the line numbers of the good rows (blank line 6 is ignored)
    assert [s.source for s in samples] == [f"{p}:2", f"{p}:4", f"{p}:7"]


@pytest.mark.parametrize(
    "header",
    [
        HEADER.replace("left_eye_center_x", "left_eye_x"),
        HEADER.replace(",Image", ""),
        "ImageId,Image",
        HEADER.replace("left_eye_center_x,left_eye_center_y,right_eye_center_x,right_eye_center_y",
                       "right_eye_center_x,right_eye_center_y,left_eye_center_x,left_eye_center_y"),
    ],
)
def test_bad_header_raises_even_with_skip_bad(tmp_path, header):
    p = write(tmp_path / "training.csv", [header, row(full_coords(1), pixels(1))])
    with pytest.raises(DataError, match=rf"{p}:1: not a Kaggle training\.csv header"):
        kaggle.read_training(p, skip_bad=True)


def test_empty_and_missing_file(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        kaggle.read_training(tmp_path / "e.csv")
    with pytest.raises(DataError, match="cannot open"):
        kaggle.read_training(tmp_path / "nope.csv")


def test_bom_header_accepted(tmp_path):
    p = tmp_path / "training.csv"
    p.write_bytes(("\ufeff" + HEADER + "\n" + row(full_coords(1), pixels(1)) + "\n").encode("utf-8"))
    samples, _ = kaggle.read_training(p)
    assert len(samples) == 1


# ---------------------------------------------------------------- test.csv


def test_read_test(tmp_path):
    imgs = [pixels(7), pixels(8), pixels(9)]
    p = write(tmp_path / "test.csv", ["ImageId,Image"] + [f"{i},{img_cell(m)}" for i, m in zip((1, 2, 5), imgs)])
    ids, images = kaggle.read_test(p)
    assert ids == [1, 2, 5]
    assert images.shape == (3, 96, 96) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, np.stack(imgs))


def test_write_test_round_trip(tmp_path):
    imgs = [pixels(1), pixels(2)]
    kaggle.write_test(tmp_path / "test.csv", [1, 2], imgs)
    assert (tmp_path / "test.csv").read_text().splitlines()[0] == "ImageId,Image"
    ids, images = kaggle.read_test(tmp_path / "test.csv")
    assert ids == [1, 2]
    np.testing.assert_array_equal(images, np.stack(imgs))


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("x,{img}", "ImageId 'x'"),
        ("3,{short}", "pixel values"),
        ("1,{img}", "already used on line 2"),
        ("3", "expected 2 columns"),
    ],
)
def test_read_test_bad_rows(tmp_path, bad, needle):
    img = img_cell(pixels(1))
    short = " ".join(img.split()[:100])
    p = write(tmp_path / "test.csv", ["ImageId,Image", f"1,{img}", f"2,{img}", bad.format(img=img, short=short)])
    with pytest.raises(DataError) as e:
        kaggle.read_test(p)
    assert f"{p}:4:" in str(e.value) and needle in str(e.value), str(e.value)


def test_read_test_bad_header(tmp_path):
    p = write(tmp_path / "test.csv", ["Id,Image", f"1,{img_cell(pixels(1))}"])
    with pytest.raises(DataError, match=rf"{p}:1: not a Kaggle test\.csv header"):
        kaggle.read_test(p)


# ---------------------------------------------------------------- lookup and submission

LOOKUP = [
    "RowId,ImageId,FeatureName,Location",
    "1,1,left_eye_center_x,",
    "2,1,left_eye_center_y,",
    "3,1,nose_tip_x,",
    "4,2,mouth_center_bottom_lip_y,",
    "5,2,right_eye_center_x,",
    "6,2,left_eye_center_x,",
]


def _preds():
    a = np.full((15, 2), 50.0)
    a[0] = (-3.0, 40.25)  # left_eye_center: x below 0 -> clipped to 0
    a[10] = (48.5, 60.0)
    b = np.full((15, 2), 20.0)
    b[14, 1] = 101.0  # bottom lip y above 96 -> clipped to 96
    b[1, 0] = 30.125
    b[0, 0] = 96.0
    return {1: a, 2: b}


def test_write_submission_order_and_clipping(tmp_path):
    lookup = write(tmp_path / "IdLookupTable.csv", LOOKUP)
    out = tmp_path / "sub.csv"
    assert kaggle.write_submission(lookup, _preds(), out) == 6
    lines = out.read_text().splitlines()
    assert lines[0] == "RowId,Location"
    got = [(int(r), float(v)) for r, v in (ln.split(",") for ln in lines[1:])]
    assert got == [(1, 0.0), (2, 40.25), (3, 48.5), (4, 96.0), (5, 30.125), (6, 96.0)]
    assert not list(tmp_path.glob(".*tmp*"))


def test_write_submission_keeps_lookup_row_order(tmp_path):
    shuffled = [LOOKUP[0], LOOKUP[3], LOOKUP[1], LOOKUP[6], LOOKUP[2]]
    lookup = write(tmp_path / "IdLookupTable.csv", [ln.replace(",,", ",") for ln in shuffled])
    out = tmp_path / "sub.csv"
    kaggle.write_submission(lookup, _preds(), out)
    assert [ln.split(",")[0] for ln in out.read_text().splitlines()[1:]] == ["3", "1", "6", "2"]


def test_write_submission_missing_prediction_leaves_old_file(tmp_path):
    lookup = write(tmp_path / "IdLookupTable.csv", LOOKUP)
    out = tmp_path / "sub.csv"
    out.write_text("old\n")
    with pytest.raises(ValueError, match=r"IdLookupTable\.csv:5: no prediction for ImageId 2"):
        kaggle.write_submission(lookup, {1: _preds()[1]}, out)
    assert out.read_text() == "old\n"
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match=r"shape \(15, 2\)"):
        kaggle.write_submission(lookup, {1: np.zeros((68, 2)), 2: _preds()[2]}, out)
    bad = _preds()
    bad[1][10, 0] = math.nan
    with pytest.raises(ValueError, match="nose_tip_x is not finite"):
        kaggle.write_submission(lookup, bad, out)


@pytest.mark.parametrize(
    "bad, needle",
    [("7,2,left_eye_x,", "unknown FeatureName"), ("x,2,nose_tip_x,", "integers"), ("1,2,nose_tip_x,", "already used"),
     ("7,2", "expected 4 columns")],
)
def test_lookup_bad_rows(tmp_path, bad, needle):
    lookup = write(tmp_path / "IdLookupTable.csv", LOOKUP + [bad])
    with pytest.raises(DataError) as e:
        kaggle.write_submission(lookup, _preds(), tmp_path / "sub.csv")
    assert f"{lookup}:8:" in str(e.value) and needle in str(e.value), str(e.value)
    assert not (tmp_path / "sub.csv").exists()


def test_score_submission(tmp_path):
    truth_samples = []
    for i in range(2):
        pts = np.random.default_rng(i).uniform(10, 80, (15, 2)).astype(np.float32)
        truth_samples.append(Sample(pixels(i), pts, np.ones(15, bool), f"t{i}", "kaggle15"))
    kaggle.write_training(tmp_path / "truth.csv", truth_samples)
    kaggle.write_lookup(tmp_path / "lookup.csv", [1, 2])
    preds = {i + 1: s.points.copy() for i, s in enumerate(truth_samples)}
    kaggle.write_submission(tmp_path / "lookup.csv", preds, tmp_path / "sub.csv")
    assert kaggle.score_submission(tmp_path / "sub.csv", tmp_path / "lookup.csv", tmp_path / "truth.csv") < 1e-3
    preds = {k: v + 2.0 for k, v in preds.items()}
    kaggle.write_submission(tmp_path / "lookup.csv", preds, tmp_path / "sub.csv")
    rmse = kaggle.score_submission(tmp_path / "sub.csv", tmp_path / "lookup.csv", tmp_path / "truth.csv")
    assert rmse == pytest.approx(2.0, abs=1e-3)
