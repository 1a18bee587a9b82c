"""IMM Face Database `.asf` files: 58 points in coordinates relative to the image size."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from . import DataError, Sample, SkipReport, SkippableError
from .ibug import read_image

N_POINTS = 58


def read_asf(path: str | Path, width: int, height: int) -> tuple[np.ndarray, str | None]:
    """Parse an .asf file -> (points in 0-based pixels (58, 2), host image name or None)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    body = [(i, ln.strip()) for i, ln in enumerate(lines, 1) if ln.strip() and not ln.strip().startswith("#")]
    if not body:
        raise DataError(f"{path}: empty .asf file")
    lineno, first = body[0]
    try:
        n = int(first)
    except ValueError:
        raise DataError(f"{path}:{lineno}: expected the point count, got {first!r}") from None
    if n != N_POINTS:
        raise DataError(f"{path}:{lineno}: expected {N_POINTS} points, the file says {n}")
    rows = []
    for lineno, ln in body[1:]:
        if len(rows) == n or len(ln.split()) == 1:  # the host image's name ends the points
            break
        rows.append((lineno, ln))
    if len(rows) < n:
        raise DataError(f"{path}: expected {n} point lines, found {len(rows)}")
    pts = np.empty((n, 2), np.float32)
    for k, (lineno, ln) in enumerate(rows):
        parts = re.split(r"\s+", ln)
        if len(parts) < 7:  # some files carry extra trailing columns
            raise DataError(f"{path}:{lineno}: expected 7 fields `path type x y index from to`, got {ln!r}")
        try:
            x, y, idx = float(parts[2]), float(parts[3]), int(parts[4])
        except ValueError:
            raise DataError(f"{path}:{lineno}: not a number in {ln!r}") from None
        if idx != k:
            raise DataError(f"{path}:{lineno}: point index {idx} where {k} was expected")
        # relative coordinates: pixel = x_rel * width (the IMM convention)
        pts[k] = (x * width, y * height)
    host = body[1 + n][1] if len(body) > 1 + n and len(body[1 + n][1].split()) == 1 else None
    return pts, host


def person_of(path: str | Path) -> int:
    m = re.match(r"(\d+)-", Path(path).name)
    if not m:
        raise DataError(f"{path}: IMM file names look like NN-Kg.asf (person, view, gender)")
    return int(m.group(1))


def load_dir(root, grey: bool = False, skip_bad: bool = False, split: str | None = None,
             train_people: int = 32):
    """IMM samples; `split` 'train' (people 1-32), 'val' (33-40) or None for all."""
    root = Path(root)
    files = sorted(root.glob("*.asf")) if root.is_dir() else []
    if not files:
        raise DataError(f"{root}: no .asf files found (is this the IMM folder?)")
    out, skipped = [], []
    for p in files:
        try:
            person = person_of(p)
            if split == "train" and person > train_people or split == "val" and person <= train_people:
                continue
            img_path = p.with_suffix(".jpg")
            img = read_image(img_path, grey)
            pts, _host = read_asf(p, img.shape[1], img.shape[0])
            out.append(Sample(img, pts, np.ones(N_POINTS, bool), str(p), "imm58"))
        except DataError as e:
            if not skip_bad:
                raise SkippableError(str(e), "files") from None
            skipped.append((str(p), str(e).split(": ", 1)[-1]))
    return out, SkipReport(skipped)
