"""68-point readers judged on faces none of them was trained on: the IMM Face Database.

IMM's 58 points are not iBUG's 68, so each reader gets its own linear map from its 68 points to
IMM's 58 (a ridge regression on the reader's points, centred and scaled by its own outer-eye
distance), fitted on IMM's training people (1-32) and scored on the other eight (33-40), by IMM's
inter-ocular NME. The map costs every reader about the same, so the ranking is what counts: a
reader that has seen 300-W's faces (dlib's predictor, an ensemble that uses it) cannot flatter
itself here as it does on 300-W's splits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fkp_live import schemas

from .eval_runtime import region_errors
from .metrics import summary

IBUG = schemas.get("ibug68")
IMM = schemas.get("imm58")


def _normalised(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 68, 2) -> points centred on their mean and divided by their outer-eye distance."""
    centre = points.mean(axis=1, keepdims=True)
    eyes = IBUG.ocular_points(points)
    scale = np.linalg.norm(eyes[:, 1] - eyes[:, 0], axis=-1)[:, None, None]
    return (points - centre) / scale, centre, scale


def fit_map(readings: np.ndarray, truth: np.ndarray, ridge: float) -> np.ndarray:
    """Least-squares weights (137, 116) from a reader's normalised 68 points (and a constant) to IMM's 58."""
    x, centre, scale = _normalised(readings)
    y = (truth - centre) / scale
    from .teacher import ridge as least_squares

    a = np.c_[x.reshape(len(x), -1), np.ones(len(x))]
    return least_squares(a, y.reshape(len(y), -1), ridge)


def apply_map(weights: np.ndarray, readings: np.ndarray) -> np.ndarray:
    x, centre, scale = _normalised(readings)
    a = np.c_[x.reshape(len(x), -1), np.ones(len(x))]
    return (a @ weights).reshape(len(x), -1, 2) * scale + centre


def score_reader(readings: dict[str, np.ndarray], truth: dict[str, np.ndarray], person: dict[str, int],
                 ridge: float = 1.0, train_people: int = 32) -> dict:
    """NME (% of IMM's inter-ocular distance) of one reader's mapped points on the held-out people.
    `readings`: image stem -> (68, 2) frame pixels for every face the reader found."""
    names = sorted(readings)
    train = [n for n in names if person[n] <= train_people]
    test = [n for n in names if person[n] > train_people]
    if len(train) < 20 or not test:
        raise ValueError(f"too few faces read to fit and score the map ({len(train)} of the training people, "
                         f"{len(test)} of the others)")
    r = {n: np.asarray(readings[n], np.float64) for n in names}
    w = fit_map(np.array([r[n] for n in train]), np.array([truth[n] for n in train]), ridge)
    out = {"faces": len(test), "missed": sum(1 for n in truth if person[n] > train_people) - len(test)}
    for split, group in (("test", test), ("fit", train)):
        t = np.array([truth[n] for n in group])
        pred = apply_map(w, np.array([r[n] for n in group]))
        mask = np.ones(t.shape[:2], bool)
        out[f"{split}_nme_io"] = round(summary(pred, t, mask, IMM)["nme_io"], 3)
        if split == "test":
            out["test_regions"] = region_errors(pred, t, mask, IMM)
    return out


def imm_faces(folder) -> tuple[dict, dict, dict]:
    """IMM's images (BGR), 58-point truth and person number, by image stem."""
    from .data.imm import load_dir, person_of

    samples, _ = load_dir(folder)
    images = {Path(s.source).stem: s.image for s in samples}
    truth = {Path(s.source).stem: np.asarray(s.points, np.float64) for s in samples}
    person = {Path(s.source).stem: person_of(s.source) for s in samples}
    return images, truth, person


def read_model(model: str, images: dict) -> dict:
    """A shipped model's first-frame reading of each image, as the runtime meets a new face."""
    from .teacher import Anchors

    read = Anchors(model)
    return {name: pts for name, image in images.items() if (pts := read(image)) is not None}


def read_dlib(loaded, model_path, images: dict) -> dict:
    """dlib's 68-point predictor from its own HOG detector (upsampled once, the best-scoring face);
    `loaded`: what `eval_runtime.load_dlib(model_path)` gave."""
    from .eval_runtime import dlib_read

    return {name: pts for name, image in images.items() if (pts := dlib_read(loaded, image, model_path)) is not None}


def read_labels(folder, names) -> dict:
    """68-point .pts files named for the IMM images (as `teacher-label` or `pseudo-label` write them)."""
    from .data.ibug import read_pts

    folder = Path(folder)
    out = {}
    for name in names:
        p = folder / f"{name}.pts"
        if p.exists():
            pts = np.asarray(read_pts(p), np.float64)
            if pts.shape != (68, 2):
                raise ValueError(f"{p}: {len(pts)} points; --labels takes 68-point .pts files")
            out[name] = pts
    if not out:
        raise ValueError(f"--labels {folder}: no .pts file named for an IMM image (like 01-1m.pts)")
    return out
