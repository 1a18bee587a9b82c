"""Build a Kaggle Facial Keypoints–format dataset from any 68-point (iBUG / 300-W) dataset.

Each face is mapped 68 -> 15 points with `IBUG_TO_KAGGLE`, cut out as an axis-aligned square
around its points, and resized to 96 x 96 greyscale, framed like Kaggle's faces. Then labels are
removed at random the way Kaggle's data lacks them: about 70% of the training images keep only the
4 points of `KAGGLE_BIG_SUBSET`, the rest keep all 15.

Output folder:

* ``training.csv``: the training part (everything not held out), partly labelled.
* ``test.csv`` + ``IdLookupTable.csv``: the held-out part, as Kaggle's test set (ImageId from 1).
* ``test_truth.csv``: the held-out part in training.csv's layout with all its labels; data row k
  (line k + 1) is ImageId k, so a submission can be scored (`train.data.kaggle.score_submission`).
* ``sources.csv``: ``file,row,source``: which original file each row came from.

Framing: the crop is a square of side ``margin`` x the longer side of the 68 points' bounding box,
its centre the box centre moved down the image by ``shift`` x the box's longer side (negative =
up). The defaults (margin 1.15, shift -0.17) were fitted on the 2012 faces of 300-W's afw,
helen_train and lfpw_train so that the mean converted points land on Kaggle's mean points (eye
centres near x 30 and 66 at y 38, bottom lip near y 79-84): 1.5 px RMS over the 15 mean points.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from fkp_live.schemas import IBUG_TO_KAGGLE, KAGGLE15, KAGGLE_BIG_SUBSET, map_points

from .data import DataError, Sample, SkipReport, SkippableError
from .data import kaggle
from .data.ibug import list_pts, load_sample, split_of

SIZE = kaggle.SIZE
DEFAULT_MARGIN = 1.15
DEFAULT_SHIFT = -0.17

# Kaggle's mean training points (96 x 96 pixels, KAGGLE_NAMES order), for reference and tests.
KAGGLE_MEAN_POINTS = np.array(
    [
        [66.4, 37.7], [30.3, 38.0], [59.2, 37.9], [73.3, 37.7], [36.7, 38.0], [22.4, 38.0],
        [56.1, 29.3], [79.5, 29.7], [39.3, 29.5], [15.9, 30.4], [48.4, 62.7],
        [63.3, 76.0], [32.9, 76.2], [48.0, 72.9], [48.6, 79.0],
    ],
    dtype=np.float32,
)


@dataclass
class ConvertSummary:
    out_dir: Path
    n_train: int = 0
    n_train_complete: int = 0  # training rows with all 15 points labelled
    n_train_big_subset: int = 0  # training rows with only KAGGLE_BIG_SUBSET labelled
    n_test: int = 0
    n_test_complete: int = 0
    n_lookup_rows: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def text(self) -> str:
        pct = 100.0 * self.n_train_complete / self.n_train if self.n_train else 0.0
        lines = [
            f"wrote {self.out_dir}:",
            f"  training.csv   {self.n_train} images, {self.n_train_complete} complete (all 15 points, "
            f"{pct:.0f}%), {self.n_train_big_subset} with only the 4 big-subset points",
            f"  test.csv       {self.n_test} held-out images ({self.n_test_complete} complete in "
            f"test_truth.csv), IdLookupTable.csv {self.n_lookup_rows} rows",
        ]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} face(s) that could not be converted:")
            lines += [f"    {src}: {why}" for src, why in self.skipped[:5]]
        return "\n".join(lines)


def kaggle_crop(points: np.ndarray, margin: float = DEFAULT_MARGIN, shift: float = DEFAULT_SHIFT):
    """The square (x0, y0, side) in integer source pixels that frames 68 points like Kaggle."""
    pts = np.asarray(points, dtype=np.float64)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < 2:
        raise ValueError("need at least two labelled points to frame a face")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = float(max(hi - lo))
    if extent <= 0:
        raise ValueError("the points have no extent")
    side = max(int(round(margin * extent)), 2)
    cx, cy = (lo + hi) / 2 + np.array([0.0, shift * extent])
    # the crop spans pixel edges x0 .. x0 + side; its centre is at x0 + side / 2 - 0.5 in centre
    # coordinates, so round that.
    x0 = int(math.floor(cx + 0.5 - side / 2 + 0.5))
    y0 = int(math.floor(cy + 0.5 - side / 2 + 0.5))
    return x0, y0, side


def cut_square(image: np.ndarray, x0: int, y0: int, side: int, size: int = SIZE) -> np.ndarray:
    """Greyscale `size` x `size` from the square [x0, x0+side) x [y0, y0+side) (edges replicated)."""
    h, w = image.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if xa >= xb or ya >= yb:
        raise ValueError(f"the face's square ({x0}, {y0}, side {side}) lies outside the {w}x{h} image")
    cut = image[ya:yb, xa:xb]
    if cut.ndim == 3:
        cut = cv2.cvtColor(cut, cv2.COLOR_BGRA2GRAY if cut.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    pad = (ya - y0, y0 + side - yb, xa - x0, x0 + side - xb)
    if any(pad):
        cut = cv2.copyMakeBorder(cut, *pad, borderType=cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    return cv2.resize(cut, (size, size), interpolation=interp)


def to_crop_pixels(points: np.ndarray, x0: int, y0: int, side: int, size: int = SIZE) -> np.ndarray:
    """Source pixel centres -> pixel centres of the `size` x `size` image of the square."""
    k = size / side
    return ((np.asarray(points, np.float64) - (x0, y0) + 0.5) * k - 0.5).astype(np.float32)


def convert_sample(sample: Sample, margin: float = DEFAULT_MARGIN, shift: float = DEFAULT_SHIFT) -> Sample:
    """One 68-point sample -> a 96 x 96 greyscale Kaggle sample with all mappable points labelled."""
    if sample.schema != "ibug68" or np.shape(sample.points) != (68, 2):
        raise ValueError(f"{sample.source}: expected a 68-point ibug68 sample, got {sample.schema!r}")
    mask68 = np.asarray(sample.mask, bool)
    pts68 = np.where(mask68[:, None], sample.points, np.nan)
    x0, y0, side = kaggle_crop(pts68, margin, shift)
    img = cut_square(sample.image, x0, y0, side)
    pts15, mask15 = map_points(to_crop_pixels(pts68, x0, y0, side), mask68, IBUG_TO_KAGGLE)
    pts15[~mask15] = np.nan
    return Sample(img, pts15, mask15, sample.source, KAGGLE15.name)


def _is_test(sample: Sample) -> bool:
    return split_of(sample.source) == "test"


def convert_to_kaggle(
    samples_68: Iterable[Sample],
    out_dir: str | Path,
    seed: int = 0,
    keep_all_frac: float = 0.3,
    margin: float = DEFAULT_MARGIN,
    shift: float = DEFAULT_SHIFT,
    holdout: Callable[[Sample], bool] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
) -> ConvertSummary:
    """Write a Kaggle-format dataset (see the module docstring) from 68-point samples.

    samples_68: ibug68 `Sample`s (colour or grey); any iterable, consumed once, so a generator
        that loads one image at a time keeps memory small (`iter_ibug` makes one).
    out_dir: created if needed; the files in it are replaced.
    seed: the random label removal depends only on the seed and the order of the samples.
    keep_all_frac: the fraction of training images that keep all 15 points (rounded to a whole
        number of images); the others keep only `KAGGLE_BIG_SUBSET`. 1.0 keeps every label.
    margin, shift: the framing (module docstring).
    holdout: says which samples go to the test part; default: 300-W's fixed split
        (`train.data.ibug.split_of(sample.source) == "test"`). ``lambda s: False`` holds none out.
    progress: show a tqdm bar; echo: where the summary goes (None: nowhere).
    """
    if not 0.0 <= keep_all_frac <= 1.0:
        raise ValueError(f"keep_all_frac must be within 0..1, got {keep_all_frac}")
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    out = Path(out_dir)
    holdout = holdout or _is_test
    summary = ConvertSummary(out)
    train: list[Sample] = []
    test: list[Sample] = []
    total = len(samples_68) if isinstance(samples_68, Sequence) else None
    for s in tqdm(samples_68, total=total, desc="convert", unit="face", disable=not progress):
        if s.schema != "ibug68" or np.shape(s.points) != (68, 2):
            raise ValueError(f"{s.source}: expected a 68-point ibug68 sample, got {s.schema!r}")
        try:
            k = convert_sample(s, margin, shift)
        except ValueError as e:
            summary.skipped.append((s.source, str(e)))
            continue
        (test if holdout(s) else train).append(k)
    if not train and not test:
        raise DataError("no face could be converted; " + "; ".join(w for _, w in summary.skipped[:3]))

    # Label removal: exactly round(keep_all_frac * n) training images keep all their points.
    rng = np.random.default_rng(seed)
    n_all = int(round(keep_all_frac * len(train)))
    keep_all = np.zeros(len(train), bool)
    keep_all[rng.permutation(len(train))[:n_all]] = True
    big = np.zeros(KAGGLE15.n, bool)
    big[list(KAGGLE_BIG_SUBSET)] = True
    for s, full in zip(train, keep_all):
        if not full:
            s.mask = s.mask & big
            s.points[~s.mask] = np.nan

    out.mkdir(parents=True, exist_ok=True)
    kaggle.write_training(out / "training.csv", train)
    kaggle.write_training(out / "test_truth.csv", test)
    ids = list(range(1, len(test) + 1))
    kaggle.write_test(out / "test.csv", ids, [s.image for s in test])
    summary.n_lookup_rows = kaggle.write_lookup(out / "IdLookupTable.csv", ids, [s.mask for s in test])
    _write_sources(out / "sources.csv", train, test)

    summary.n_train = len(train)
    summary.n_train_complete = sum(int(s.mask.all()) for s in train)
    summary.n_train_big_subset = sum(int((s.mask == big).all()) for s in train)
    summary.n_test = len(test)
    summary.n_test_complete = sum(int(s.mask.all()) for s in test)
    if echo is not None:
        echo(summary.text())
    return summary


def _write_sources(path: Path, train: list[Sample], test: list[Sample]) -> None:
    def write(f):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "row", "source"])
        w.writerows(["training.csv", i, s.source] for i, s in enumerate(train, 1))
        w.writerows(["test.csv", i, s.source] for i, s in enumerate(test, 1))

    kaggle.atomic_write_text(path, write)


def iter_ibug(roots: Iterable[str | Path], skip_bad: bool = False, report: SkipReport | None = None):
    """Yield 68-point samples from .pts folders one at a time (greyscale, so memory stays small).

    Bad files raise `DataError`, or with ``skip_bad=True`` are skipped and appended to
    ``report.skipped``. A Sequence-like wrapper is returned so progress bars know the total.
    """
    files = []
    for r in roots:
        found = list_pts(r)
        if not found:
            raise DataError(f"{r}: no .pts files found")
        files += found
    return _IbugFiles(files, skip_bad, report)


class _IbugFiles(Sequence):
    def __init__(self, files: list[Path], skip_bad: bool, report: SkipReport | None):
        self.files, self.skip_bad, self.report = files, skip_bad, report

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):  # pragma: no cover - Sequence protocol only
        return load_sample(self.files[i], grey=True)

    def __iter__(self):
        for p in self.files:
            try:
                yield load_sample(p, grey=True)
            except DataError as e:
                if not self.skip_bad:
                    raise SkippableError(str(e), "files") from None
                if self.report is not None:
                    self.report.skipped.append((str(p), str(e).split(": ", 1)[-1]))
