"""The generic `image,x_0,y_0,...` CSV: relative paths, masked points, errors with file and line."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from train.data import DataError, SkippableError
from train.data.generic import header_for, read_csv

HEADER5 = "image,x_0,y_0,x_1,y_1,x_2,y_2,x_3,y_3,x_4,y_4"


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    cv2.imwrite(str(d / "a.png"), a)
    cv2.imwrite(str(d / "b.png"), b)
    (d / "broken.jpg").write_bytes(b"this is not a jpeg")
    return {"a": a, "b": b}


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD_A = "imgs/a.png,1,2,3,4,5.5,6.25,7,8,9,10"
GOOD_B = "imgs/b.png,1,2,,,5,6,nan,NaN,9,10"


def test_header_for():
    assert ",".join(header_for(5)) == HEADER5


def test_read_relative_paths_masks_and_schema(tmp_path, images):
    p = write(tmp_path / "pts.csv", [HEADER5, GOOD_A, GOOD_B])
    samples, report = read_csv(p)
    assert not report and len(samples) == 2
    a, b = samples
    assert a.schema == "five" and b.schema == "five"  # 5 points -> the one 5-point schema
    np.testing.assert_array_equal(a.image, images["a"])
    np.testing.assert_array_equal(b.image, images["b"])
    np.testing.assert_allclose(a.points, [[1, 2], [3, 4], [5.5, 6.25], [7, 8], [9, 10]])
    assert a.mask.all()
    assert b.mask.tolist() == [True, False, True, False, True]
    assert np.isnan(b.points[[1, 3]]).all()
    assert a.source == f"{p}:2" and b.source == f"{p}:3"


def test_grey_and_absolute_path(tmp_path, images):
    absolute = tmp_path / "imgs" / "a.png"
    (tmp_path / "sub").mkdir()
    p = write(tmp_path / "sub" / "pts.csv", [HEADER5, f"{absolute},1,2,3,4,5,6,7,8,9,10"])
    samples, _ = read_csv(p, grey=True)
    assert samples[0].image.shape == (40, 50)
    grey = cv2.cvtColor(images["a"], cv2.COLOR_BGR2GRAY).astype(int)
    assert np.abs(samples[0].image.astype(int) - grey).max() <= 1  # libpng rounds differently


def test_schema_name(tmp_path, images):
    p = write(tmp_path / "pts.csv", [HEADER5, GOOD_A])
    samples, _ = read_csv(p, schema_name="five")
    assert samples[0].schema == "five"
    with pytest.raises(DataError, match=rf"{p}:1: the header has 5 points but schema 'kaggle15' has 15"):
        read_csv(p, schema_name="kaggle15")
    with pytest.raises(DataError, match="unknown keypoint schema 'nope'"):
        read_csv(p, schema_name="nope")


def test_point_count_without_schema(tmp_path, images):
    p = write(tmp_path / "pts.csv", ["image,x_0,y_0,x_1,y_1,x_2,y_2", "imgs/a.png,1,2,3,4,5,6"])
    with pytest.raises(DataError, match=rf"{p}:1: cannot tell the keypoint schema of 3 points"):
        read_csv(p)


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("imgs/missing.png,1,2,3,4,5,6,7,8,9,10", "not found"),
        ("imgs/broken.jpg,1,2,3,4,5,6,7,8,9,10", "unreadable"),
        ("imgs/a.png,1,2,3,4,5,6,7,8,9", "expected 11 columns"),
        ("imgs/a.png,1,2,3,4,5,6,7,8,9,10,11", "expected 11 columns"),
        ("imgs/a.png,1,two,3,4,5,6,7,8,9,10", "column y_0: not a number"),
        ("imgs/a.png,1,2,3,,5,6,7,8,9,10", "only one of its two coordinates"),
        (",1,2,3,4,5,6,7,8,9,10", "image column is empty"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path, images, bad, needle):
    p = write(tmp_path / "pts.csv", [HEADER5, GOOD_A, GOOD_B, bad, GOOD_A])
    with pytest.raises(DataError) as e:
        read_csv(p)
    msg = str(e.value)
    assert f"{p}:4:" in msg and needle in msg, msg
    assert isinstance(e.value, SkippableError) and e.value.unit == "rows"
    assert "--skip-bad" not in msg, "the reader names no CLI flag; the CLI adds it"


def test_skip_bad_counts(tmp_path, images):
    lines = [HEADER5, GOOD_A, "imgs/missing.png,1,2,3,4,5,6,7,8,9,10", GOOD_B,
             "imgs/a.png,1,2", "imgs/broken.jpg,1,2,3,4,5,6,7,8,9,10", GOOD_A]
    p = write(tmp_path / "pts.csv", lines)
    samples, report = read_csv(p, skip_bad=True)
    assert len(samples) == 3
    assert [src for src, _ in report.skipped] == [f"{p}:3", f"{p}:5", f"{p}:6"]
    assert "not found" in report.skipped[0][1]
    assert "columns" in report.skipped[1][1]
    assert "unreadable" in report.skipped[2][1]


@pytest.mark.parametrize(
    "header, needle",
    [
        ("img,x_0,y_0", "first header column must be 'image'"),
        ("image,x_0,y_0,x_1", "needs an x and a y per point"),
        ("image,x_0,y_0,y_1,x_1", "header column 4 is 'y_1' where 'x_1' was expected"),
        ("image", "0 coordinate columns"),
    ],
)
def test_bad_header(tmp_path, images, header, needle):
    p = write(tmp_path / "pts.csv", [header, GOOD_A])
    with pytest.raises(DataError) as e:
        read_csv(p, skip_bad=True)
    assert f"{p}:1:" in str(e.value) and needle in str(e.value), str(e.value)


def test_empty_file(tmp_path):
    (tmp_path / "pts.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        read_csv(tmp_path / "pts.csv")
