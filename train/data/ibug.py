"""300-W `.pts` files (iBUG 68 points) with their images beside them."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from . import DataError, Sample, SkipReport, SkippableError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_pts(path: str | Path, n_points: int | None = 68) -> np.ndarray:
    """Parse a .pts file: the standard header form or bare `x y` lines. Returns 0-based pixels.

    The iBUG convention is 1-based pixels, so 1 is subtracted from every coordinate.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    pts: list[tuple[float, float]] = []
    declared = None
    in_braces = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        low = line.lower()
        if low.startswith("version"):
            continue
        if low.startswith("n_points"):
            try:
                declared = int(line.split(":", 1)[1])
            except (IndexError, ValueError):
                raise DataError(f"{path}:{lineno}: bad n_points line {line!r}") from None
            continue
        if line == "{":
            in_braces = True
            continue
        if line == "}":
            in_braces = False
            continue
        if in_braces is False:
            raise DataError(f"{path}:{lineno}: text after the closing brace: {line!r}")
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: expected two numbers `x y`, got {line!r}")
        try:
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            raise DataError(f"{path}:{lineno}: not a number in {line!r}") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise DataError(f"{path}:{lineno}: non-finite coordinate in {line!r}")
        pts.append((x - 1.0, y - 1.0))
    if declared is not None and declared != len(pts):
        raise DataError(f"{path}: header says n_points {declared} but the file has {len(pts)} points")
    if n_points is not None and len(pts) != n_points:
        raise DataError(f"{path}: expected {n_points} points, found {len(pts)}")
    return np.asarray(pts, dtype=np.float32).reshape(-1, 2)


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Write 0-based points as a standard 1-based .pts file."""
    lines = ["version: 1", f"n_points:  {len(points)}", "{"]
    lines += [f"{x + 1:.3f} {y + 1:.3f}" for x, y in np.asarray(points, dtype=np.float64)]
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n")


def image_for(pts_path: Path) -> Path:
    for suf in IMAGE_SUFFIXES:
        p = pts_path.with_suffix(suf)
        if p.exists():
            return p
    raise DataError(f"{pts_path}: no image beside it (looked for {', '.join(IMAGE_SUFFIXES)})")


def read_image(path: Path, grey: bool = False) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: unreadable image (corrupt or not an image); remove or replace it")
    return img


def list_pts(root: str | Path) -> list[Path]:
    root = Path(root)
    if root.is_file() and root.suffix == ".pts":
        return [root]
    if not root.is_dir():
        raise DataError(f"{root}: no such folder of .pts files")
    return sorted(root.rglob("*.pts"))


def load_sample(pts_path: Path, grey: bool = False, n_points: int | None = 68) -> Sample:
    pts = read_pts(pts_path, n_points)
    img = read_image(image_for(pts_path), grey)
    return Sample(img, pts, np.ones(len(pts), bool), str(pts_path), "ibug68")


def load_dir(root, grey: bool = False, skip_bad: bool = False, n_points: int | None = 68):
    """Every .pts under `root` with its image. Returns (samples, SkipReport)."""
    out, skipped = [], []
    files = list_pts(root)
    if not files:
        raise DataError(f"{root}: no .pts files found")
    for p in files:
        try:
            out.append(load_sample(p, grey, n_points))
        except DataError as e:
            if not skip_bad:
                raise SkippableError(str(e), "files") from None
            skipped.append((str(p), str(e).split(": ", 1)[-1]))
    return out, SkipReport(skipped)


def split_of(path: str | Path, val_frac: float = 0.05, test_frac: float = 0.10) -> str:
    """A fixed, content-independent split by a hash of the file's stem: train, val or test.

    It never changes when files are added, so a test image stays out of training for good.
    """
    p = Path(path)
    key = f"{p.parent.name}/{p.stem}"
    h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    if h < test_frac:
        return "test"
    if h < test_frac + val_frac:
        return "val"
    return "train"
