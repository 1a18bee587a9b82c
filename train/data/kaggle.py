"""Kaggle Facial Keypoints Detection files: training.csv, test.csv, IdLookupTable.csv, submissions.

The formats, exactly as Kaggle ships them:

* ``training.csv``: a header of 30 coordinate columns, ``left_eye_center_x,left_eye_center_y,
  right_eye_center_x, ... ,mouth_center_bottom_lip_y`` (the 15 points of `KAGGLE_NAMES` in order,
  ``_x`` then ``_y`` for each), then ``Image``: 9216 space-separated integers 0..255, a 96 x 96
  greyscale image in row-major order. An empty coordinate means the point is not labelled (about
  70% of Kaggle's rows label only the 4 points of `KAGGLE_BIG_SUBSET`); such rows are kept, with
  the point masked (NaN and ``mask`` False), never dropped.
* ``test.csv``: ``ImageId,Image``.
* ``IdLookupTable.csv``: ``RowId,ImageId,FeatureName,Location`` with Location empty; it lists the
  coordinates a submission must give, and in which order.
* a submission: ``RowId,Location``, one row per lookup row in the lookup's order, Location being
  the predicted coordinate clipped to [0, 96].

Coordinate convention: Kaggle's coordinates are pixel coordinates in the 96 x 96 image and are
kept exactly as they are, no shift, no scaling. They are read as this package's convention
(0-based, pixel centres: the centre of the top-left pixel is (0, 0), of the bottom-right pixel
(95, 95)), so ``Sample.points`` of a Kaggle row holds the CSV's numbers unchanged, and writing a
`Sample` back writes its points unchanged. Predictions passed to `write_submission` must be in the
same 96 x 96 pixel frame.

Line numbers in error messages are 1-based and count the header as line 1, so the first data row
is line 2 (what an editor shows).
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from fkp_live.schemas import KAGGLE15, KAGGLE_NAMES

from . import DataError, Sample, SkipReport, SkippableError

SIZE = 96
N_PIXELS = SIZE * SIZE
N_POINTS = len(KAGGLE_NAMES)
COORD_COLUMNS: tuple[str, ...] = tuple(f"{n}_{a}" for n in KAGGLE_NAMES for a in ("x", "y"))
TRAINING_HEADER: tuple[str, ...] = COORD_COLUMNS + ("Image",)
TEST_HEADER = ("ImageId", "Image")
LOOKUP_HEADER = ("RowId", "ImageId", "FeatureName", "Location")
SUBMISSION_HEADER = ("RowId", "Location")
# FeatureName -> (point index, axis 0 for x / 1 for y)
FEATURES: dict[str, tuple[int, int]] = {c: (i // 2, i % 2) for i, c in enumerate(COORD_COLUMNS)}


class _RowError(Exception):
    """A bad row; the caller adds the file and line."""


# ------------------------------------------------------------------------------------------
# helpers shared with the generic CSV reader and the converter


def open_csv(path: Path):
    """Open a CSV for reading (a UTF-8 BOM, as Excel writes it, is ignored)."""
    try:
        return open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e})") from e


def read_header(path: str | Path):
    """Open a CSV -> (path, its header's fields or None for an empty file, the rows after it)."""
    path = Path(path)
    rows = read_rows(path)
    first = next(rows, None)
    return path, (first[1] if first else None), rows


def read_rows(path: Path):
    """Yield (line number, fields) for each non-blank row, the header included.

    The line number is that of the row's last physical line (1-based), as `csv` counts it.
    """
    with open_csv(path) as f:
        reader = csv.reader(f)
        try:
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                yield reader.line_num, fields
        except (csv.Error, UnicodeDecodeError) as e:
            raise DataError(
                f"{path}:{reader.line_num + 1}: not a readable CSV ({e}); "
                "is this the right file?"
            ) from e


def parse_coord(text: str, column: str) -> float:
    """One coordinate cell: a float, or NaN when empty (or 'nan') = not labelled."""
    t = text.strip()
    if not t or t.lower() == "nan":
        return math.nan
    try:
        v = float(t)
    except ValueError:
        raise _RowError(f"column {column}: not a number: {_short(t)!r}") from None
    if not math.isfinite(v):
        raise _RowError(f"column {column}: non-finite coordinate {t!r}")
    return v


def points_from_cells(cells: list[str], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Cells x0, y0, x1, y1, ... -> (points (N, 2) float32 with NaN where unlabelled, mask (N,))."""
    vals = np.array([parse_coord(c, n) for c, n in zip(cells, names)], dtype=np.float64)
    pts = vals.reshape(-1, 2)
    has = np.isfinite(pts)
    half = has[:, 0] != has[:, 1]
    if half.any():
        k = int(np.flatnonzero(half)[0])
        raise _RowError(
            f"point {names[2 * k][:-2]!r} has only one of its two coordinates "
            f"({names[2 * k]}={cells[2 * k]!r}, {names[2 * k + 1]}={cells[2 * k + 1]!r}); "
            "give both or leave both empty"
        )
    mask = has[:, 0]
    pts = pts.astype(np.float32)
    pts[~mask] = np.nan
    return pts, mask


def atomic_write_text(path: str | Path, write: Callable) -> Path:
    """Write a file through `write(file_object)` into a temporary file, then `os.replace` it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_csv(path: str | Path, header, rows) -> None:
    """A header and rows, written atomically (see atomic_write_text)."""

    def write(f):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)

    atomic_write_text(path, write)


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[:n] + "..."


def _check_header(path: Path, fields: list[str] | None, expected: tuple[str, ...], what: str):
    if fields is None:
        raise DataError(f"{path}: empty file; expected a {what} header: {','.join(expected)}")
    got = tuple(f.strip() for f in fields)
    if got == expected:
        return
    if len(got) != len(expected):
        detail = f"it has {len(got)} columns, a {what} file has {len(expected)}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
        detail = f"column {i + 1} is {_short(got[i])!r} where {expected[i]!r} was expected"
    raise DataError(
        f"{path}:1: not a Kaggle {what} header ({detail}); the header must be "
        f"{_short(','.join(expected), 120)}. Is this the right file?"
    )


def _parse_image(text: str) -> np.ndarray:
    parts = text.split()
    if len(parts) != N_PIXELS:
        raise _RowError(
            f"Image has {len(parts)} pixel values, expected {N_PIXELS} (96 x 96); "
            "the row is truncated or not a Kaggle image"
        )
    try:
        vals = np.array(parts, dtype=np.int64)
    except ValueError:
        bad = next(p for p in parts if not _is_int(p))
        raise _RowError(f"Image: pixel value {_short(bad)!r} is not an integer") from None
    if vals.min() < 0 or vals.max() > 255:
        bad = int(vals[(vals < 0) | (vals > 255)][0])
        raise _RowError(f"Image: pixel value {bad} is outside 0..255")
    return vals.astype(np.uint8).reshape(SIZE, SIZE)


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def _image_cell(img: np.ndarray) -> str:
    return " ".join(map(str, img.reshape(-1).tolist()))


def _check_image(img: np.ndarray, where: str) -> np.ndarray:
    img = np.asarray(img)
    if img.shape != (SIZE, SIZE) or img.dtype != np.uint8:
        raise ValueError(
            f"{where}: a Kaggle image must be 96 x 96 greyscale uint8, got {img.shape} {img.dtype}"
        )
    return img


# ------------------------------------------------------------------------------------------
# training.csv


def read_training(path: str | Path, skip_bad: bool = False) -> tuple[list[Sample], SkipReport]:
    """Read a Kaggle ``training.csv`` -> (samples, SkipReport).

    Each `Sample` has a (96, 96) uint8 greyscale image, (15, 2) float32 points in Kaggle's pixel
    coordinates (unchanged; NaN where the cell is empty), the labelled-mask, source
    ``"<path>:<line>"`` and schema ``"kaggle15"``. Rows with missing coordinates are kept.

    A bad row (wrong number of pixels or columns, a non-number, a coordinate given without its
    partner) raises `DataError` naming the file and line; with ``skip_bad=True`` it is skipped and
    listed in the report instead. A header that is not Kaggle's always raises.
    """
    path, header, rows = read_header(path)
    _check_header(path, header, TRAINING_HEADER, "training.csv")
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    names = list(COORD_COLUMNS)
    for line, fields in rows:
        try:
            if len(fields) != len(TRAINING_HEADER):
                raise _RowError(
                    f"expected {len(TRAINING_HEADER)} columns (30 coordinates and Image), "
                    f"got {len(fields)}; a column is missing or a value contains a comma"
                )
            pts, mask = points_from_cells(fields[:30], names)
            img = _parse_image(fields[30])
        except _RowError as e:
            if not skip_bad:
                raise SkippableError(f"{path}:{line}: {e}; fix or delete the row", "rows") from None
            skipped.append((f"{path}:{line}", str(e)))
            continue
        samples.append(Sample(img, pts, mask, f"{path}:{line}", KAGGLE15.name))
    return samples, SkipReport(skipped)


def write_training(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples as a Kaggle ``training.csv`` (atomically); returns the number of rows.

    Every sample must be a 96 x 96 uint8 greyscale image with 15 points in Kaggle's order and
    pixel frame (as `read_training` gives them); unlabelled points are written as empty cells.
    """
    rows = []
    for i, s in enumerate(samples):
        where = f"sample {i} ({s.source})"
        img = _check_image(s.image, where)
        pts = np.asarray(s.points, dtype=np.float64)
        mask = np.asarray(s.mask, dtype=bool)
        if pts.shape != (N_POINTS, 2) or mask.shape != (N_POINTS,):
            raise ValueError(
                f"{where}: expected 15 Kaggle points, got points {pts.shape}, mask {mask.shape}"
            )
        if s.schema != KAGGLE15.name:
            raise ValueError(f"{where}: schema {s.schema!r}, expected {KAGGLE15.name!r}")
        cells = []
        for (x, y), m in zip(pts, mask):
            if m and not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(f"{where}: a labelled point is not finite ({x}, {y})")
            cells += [_fmt(x), _fmt(y)] if m else ["", ""]
        rows.append(cells + [_image_cell(img)])

    _write_csv(path, TRAINING_HEADER, rows)
    return len(rows)


def _fmt(v: float) -> str:
    s = f"{float(v):.4f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


# ------------------------------------------------------------------------------------------
# test.csv


def read_test(path: str | Path) -> tuple[list[int], np.ndarray]:
    """Read a Kaggle ``test.csv`` -> (image ids, images (N, 96, 96) uint8), in file order.

    Any bad row raises `DataError` naming the file and line (a test set cannot skip rows: the
    submission must answer every image).
    """
    path, header, rows = read_header(path)
    _check_header(path, header, TEST_HEADER, "test.csv")
    ids: list[int] = []
    images: list[np.ndarray] = []
    seen: dict[int, int] = {}
    for line, fields in rows:
        try:
            if len(fields) != 2:
                raise _RowError(f"expected 2 columns (ImageId, Image), got {len(fields)}")
            try:
                image_id = int(fields[0].strip())
            except ValueError:
                raise _RowError(f"ImageId {_short(fields[0])!r} is not an integer") from None
            if image_id in seen:
                raise _RowError(f"ImageId {image_id} already used on line {seen[image_id]}")
            img = _parse_image(fields[1])
        except _RowError as e:
            raise DataError(f"{path}:{line}: {e}; fix the row or re-download test.csv") from None
        seen[image_id] = line
        ids.append(image_id)
        images.append(img)
    arr = np.stack(images) if images else np.zeros((0, SIZE, SIZE), np.uint8)
    return ids, arr


def write_test(path: str | Path, ids: Iterable[int], images: Iterable[np.ndarray]) -> int:
    """Write ``ImageId,Image`` rows (atomically); returns the number of rows."""
    rows = []
    for i, img in zip(ids, images, strict=True):
        rows.append([str(int(i)), _image_cell(_check_image(img, f"ImageId {i}"))])

    _write_csv(path, TEST_HEADER, rows)
    return len(rows)


# ------------------------------------------------------------------------------------------
# IdLookupTable.csv and submissions


def read_lookup(path: str | Path) -> list[tuple[int, int, str, int]]:
    """Read ``IdLookupTable.csv`` -> [(RowId, ImageId, FeatureName, line)] in file order."""
    path, header, rows = read_header(path)
    _check_header(path, header, LOOKUP_HEADER, "IdLookupTable.csv")
    out = []
    seen: dict[int, int] = {}
    for line, fields in rows:
        try:
            if len(fields) != 4:
                raise _RowError(
                    f"expected 4 columns (RowId, ImageId, FeatureName, Location), got {len(fields)}"
                )
            try:
                row_id, image_id = int(fields[0].strip()), int(fields[1].strip())
            except ValueError:
                raise _RowError(
                    f"RowId and ImageId must be integers, got {_short(fields[0])!r}, "
                    f"{_short(fields[1])!r}"
                ) from None
            feature = fields[2].strip()
            if feature not in FEATURES:
                raise _RowError(
                    f"unknown FeatureName {_short(feature)!r}; expected one of the 30 training.csv "
                    "coordinate columns such as left_eye_center_x"
                )
            if row_id in seen:
                raise _RowError(f"RowId {row_id} already used on line {seen[row_id]}")
        except _RowError as e:
            raise DataError(f"{path}:{line}: {e}; fix the row or re-download the file") from None
        seen[row_id] = line
        out.append((row_id, image_id, feature, line))
    return out


def write_lookup(path: str | Path, image_ids: Iterable[int], masks: Iterable[np.ndarray] | None = None) -> int:
    """Write an ``IdLookupTable.csv`` asking for every labelled coordinate of each image, in order.

    `masks` (one (15,) bool per image) leaves out points that are not labelled; None asks for all
    30 coordinates of every image. RowIds run from 1. Returns the number of rows.
    """
    ids = [int(i) for i in image_ids]
    masks = [np.ones(N_POINTS, bool)] * len(ids) if masks is None else list(masks)
    rows = []
    for image_id, m in zip(ids, masks, strict=True):
        for col in COORD_COLUMNS:
            if m[FEATURES[col][0]]:
                rows.append([len(rows) + 1, image_id, col, ""])

    _write_csv(path, LOOKUP_HEADER, rows)
    return len(rows)


def write_submission(
    lookup_csv: str | Path,
    predictions: Mapping[int, np.ndarray],
    out_path: str | Path,
) -> int:
    """Write a Kaggle submission ``RowId,Location`` for every row of ``IdLookupTable.csv``.

    `predictions` maps each ImageId (int, as `read_test` returns them) to a (15, 2) array of
    points in Kaggle's 96 x 96 pixel frame, in `KAGGLE_NAMES` order. Rows come out in the lookup's
    order, each Location clipped to [0, 96]. The file is written atomically (a temporary file,
    then `os.replace`), so a failed run never leaves half a submission. Returns the row count.

    Raises `DataError` for a bad lookup file and `ValueError` when an image the lookup asks for
    has no prediction, a prediction has the wrong shape, or a needed value is not finite.
    """
    lookup = read_lookup(lookup_csv)
    preds: dict[int, np.ndarray] = {}
    for k, v in predictions.items():
        a = np.asarray(v, dtype=np.float64)
        if a.shape != (N_POINTS, 2):
            raise ValueError(f"prediction for ImageId {k}: expected shape (15, 2), got {a.shape}")
        preds[int(k)] = a
    rows = []
    for row_id, image_id, feature, line in lookup:
        p = preds.get(image_id)
        if p is None:
            raise ValueError(
                f"{lookup_csv}:{line}: no prediction for ImageId {image_id}; predict every image "
                "of test.csv"
            )
        k, axis = FEATURES[feature]
        v = p[k, axis]
        if not math.isfinite(v):
            raise ValueError(f"prediction for ImageId {image_id} {feature} is not finite ({v})")
        rows.append([row_id, _fmt(min(max(v, 0.0), float(SIZE)))])

    _write_csv(out_path, SUBMISSION_HEADER, rows)
    return len(rows)


def read_submission(path: str | Path) -> dict[int, float]:
    """Read a submission ``RowId,Location`` -> {RowId: Location}."""
    path, header, rows = read_header(path)
    _check_header(path, header, SUBMISSION_HEADER, "submission")
    out: dict[int, float] = {}
    for line, fields in rows:
        try:
            if len(fields) != 2:
                raise _RowError(f"expected 2 columns (RowId, Location), got {len(fields)}")
            try:
                out[int(fields[0])] = float(fields[1])
            except ValueError:
                raise _RowError(f"not a number in {_short(','.join(fields))!r}") from None
        except _RowError as e:
            raise DataError(f"{path}:{line}: {e}") from None
    return out


def score_submission(submission_csv: str | Path, lookup_csv: str | Path, truth_csv: str | Path) -> float:
    """RMSE (pixels) of a submission against a ``test_truth.csv`` (training.csv layout).

    Row k (1-based, after the header) of the truth file holds ImageId k, as `convert_to_kaggle`
    writes it. Lookup rows whose truth is unlabelled are ignored.
    """
    sub = read_submission(submission_csv)
    truth, _ = read_training(truth_csv)
    err = []
    for row_id, image_id, feature, line in read_lookup(lookup_csv):
        if row_id not in sub:
            raise ValueError(f"{submission_csv}: no row for RowId {row_id} ({lookup_csv}:{line})")
        if not 1 <= image_id <= len(truth):
            raise ValueError(f"{lookup_csv}:{line}: ImageId {image_id} has no row in {truth_csv}")
        k, axis = FEATURES[feature]
        t = truth[image_id - 1]
        if t.mask[k]:
            err.append(sub[row_id] - float(t.points[k, axis]))
    if not err:
        raise ValueError(f"{truth_csv}: no labelled coordinate to score against")
    return float(np.sqrt(np.mean(np.square(err))))
