"""A morph's inputs: pictures, their 68 points (a 300-W .pts file, an fkp-live CSV, or found by
the tracker) and mean shapes (JSON), each bad file a MorphError naming it.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np

from ...frame import Frame, to_bgr
from .mesh import N_POINTS


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class MorphError(Exception):
    """Bad input for a morph: the message names the file or option and what to do."""


def load_image(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read an image as BGR uint8, or raise MorphError naming the file."""
    p = Path(path)
    if not p.exists():
        raise MorphError(f"{what} {p} does not exist")
    if p.is_dir():
        raise MorphError(f"{what} {p} is a folder, not an image")
    data = np.fromfile(str(p), np.uint8) if p.stat().st_size else np.zeros(0, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise MorphError(f"cannot read {what} {p}: not an image OpenCV can decode")
    try:
        return to_bgr(img)
    except ValueError as e:
        raise MorphError(f"cannot read {what} {p}: {e}") from None


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """A 300-W .pts file (1-based pixel coordinates) -> (N, 2) float64, 0-based pixel centres."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise MorphError(f"cannot read points file {p}: {e.strerror or e}") from None
    if "{" not in text or "}" not in text:
        raise MorphError(f"{p} is not a .pts file (expected 'n_points: N', then the points between {{ and }})")
    body = text[text.index("{") + 1:text.rindex("}")]
    try:
        pts = np.array([[float(v) for v in line.split()[:2]] for line in body.splitlines() if line.strip()])
    except ValueError:
        raise MorphError(f"{p}: a point line is not two numbers") from None
    n_decl = None
    for line in text[:text.index("{")].splitlines():
        if line.strip().lower().startswith("n_points"):
            try:
                n_decl = int(line.split(":", 1)[1])
            except (IndexError, ValueError):
                raise MorphError(f"{p}: bad n_points line {line.strip()!r}") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or (n_decl is not None and len(pts) != n_decl):
        raise MorphError(f"{p}: {len(pts)} points between the braces, n_points says {n_decl}")
    return pts - 1.0


def read_csv_points(path: str | os.PathLike, image_name: str | None = None, face: int | None = None) -> np.ndarray:
    """68 points from a CSV written by `fkp-live --csv` (columns frame,timestamp,face_id,confidence,
    success,x_0..x_67,y_0..y_67[,source]).

    The row used: among rows with success 1, those whose `source` names `image_name` (when the
    file has a source column and such rows), else all of them; of those, the first frame's, and
    in that frame face number `face` (in file order; default the first).
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise MorphError(f"cannot read points file {p}: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise MorphError(f"cannot read points file {p} as CSV: {e}") from None
    if not rows or "x_0" not in rows[0] or "y_0" not in rows[0]:
        raise MorphError(f"{p} is not a CSV written by fkp-live --csv (no x_0, y_0 columns)")
    n = sum(1 for k in rows[0] if k and k.startswith("x_"))
    good = [r for r in rows if (r.get("success") or "").strip() == "1"]
    if image_name and "source" in rows[0]:
        mine = [r for r in good if Path(r.get("source") or "").name == Path(image_name).name]
        good = mine or good
    if not good:
        raise MorphError(f"{p} has no row with a face (success 1)")
    first = good[0].get("frame")
    frame_rows = [r for r in good if r.get("frame") == first]
    k = 0 if face is None else face
    if not 0 <= k < len(frame_rows):
        raise MorphError(f"{p}: frame {first} has {len(frame_rows)} face(s); face {k} is not one of them")
    r = frame_rows[k]
    try:
        pts = np.array([[float(r[f"x_{i}"]), float(r[f"y_{i}"])] for i in range(n)])
    except (KeyError, TypeError, ValueError):
        raise MorphError(f"{p}: row of frame {first} has missing or bad coordinates") from None
    return pts


def read_points(path: str | os.PathLike, image_name: str | None = None, face: int | None = None) -> np.ndarray:
    """Points for one image from a 300-W .pts file or an fkp-live CSV: (68, 2), 0-based pixels."""
    p = Path(path)
    if not p.exists():
        raise MorphError(f"points file {p} does not exist")
    if p.suffix.lower() == ".csv":
        pts = read_csv_points(p, image_name, face)
    elif p.suffix.lower() == ".pts":
        pts = read_pts(p)
    else:
        raise MorphError(f"points file {p}: give a 300-W .pts file or a CSV written by fkp-live --csv")
    check_points(pts, str(p))
    return pts


def check_points(pts: np.ndarray, where: str) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    if pts.shape != (N_POINTS, 2):
        raise MorphError(f"{where}: morphing needs the 68 iBUG points, got {pts.shape[0] if pts.ndim else 0}")
    if not np.isfinite(pts).all():
        raise MorphError(f"{where}: some points are missing (not finite)")
    return pts


def save_mean(path: str | os.PathLike, points: np.ndarray, size: tuple[int, int], files=()) -> None:
    """The mean shape as JSON: 68 points in the pixels of a picture of `size` (w, h)."""
    head = {"format": "fkp-live mean shape", "schema": "ibug68", "size": [int(size[0]), int(size[1])],
            "faces": len(files)}
    pts = ",\n  ".join(json.dumps([round(float(x), 3), round(float(y), 3)]) for x, y in np.asarray(points))
    text = (json.dumps(head)[:-1] + ',\n "points": [\n  ' + pts + "\n ],\n"
            + ' "files": ' + json.dumps([str(f) for f in files]) + "\n}\n")
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise MorphError(f"cannot write mean shape {path}: {e.strerror or e}") from None


def load_mean(path: str | os.PathLike) -> np.ndarray:
    """The 68 points of a mean shape written by `save_mean` (`fkp-live average`)."""
    p = Path(path)
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
        pts = np.asarray(rec["points"], np.float64)
    except OSError as e:
        raise MorphError(f"cannot read mean shape {p}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError):
        raise MorphError(f"{p} is not a mean shape written by fkp-live average (JSON with 'points')") from None
    return check_points(pts, str(p))


# ------------------------------------------------------------------ points found by the tracker
def find_faces(image: np.ndarray, tracker) -> list:
    """Every face in a still picture, numbered left to right (by the middle of its box)."""
    faces = tracker.track(Frame(0, None, image), still=True).faces
    return sorted(faces, key=lambda f: (f.box[0] + f.box[2]) / 2)


def face_points(image: np.ndarray, tracker, name: str, face: int | None = None) -> np.ndarray:
    """The 68 points of one face of a still: the largest (default) or number `face` from the left."""
    if getattr(tracker, "schema", None) is not None and tracker.schema.n != N_POINTS:
        raise MorphError(f"morphing needs a 68-point iBUG model; {tracker.schema.name} has {tracker.schema.n} points")
    faces = find_faces(image, tracker)
    if not faces:
        raise MorphError(f"no face found in {name}; give its points with --points FILE.pts, or try a larger, "
                         "frontal face")
    if face is None:
        f = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    elif 0 <= face < len(faces):
        f = faces[face]
    else:
        raise MorphError(f"{name} has {len(faces)} face(s), numbered 0 to {len(faces) - 1} from the left; "
                         f"--face {face} is not one of them")
    return np.asarray(f.points, np.float64)
