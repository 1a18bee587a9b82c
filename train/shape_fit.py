"""A linear shape correction fitted to a model's own runtime readings.

The net's errors are not independent from point to point: where a face turns or its mouth opens,
the jaw contour and the brows slide in ways the rest of the face predicts. `fit` learns that from
the training split: each face's first-frame reading (end to end from the detector, as the runtime
reads a new face) is brought into a common frame by the similarity transform that best maps it
onto the mean training shape; a ridge regression then maps the aligned reading (and a constant)
to its error in that frame. `apply` adds the predicted correction back, in the reading's own frame,
so the correction does not depend on where the face is, how large or how rolled.

The export puts the same arithmetic inside the ONNX graph (`train.export.ShapeCorrected`), after
the points: every read the runtime makes is corrected, the runtime itself is unchanged.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import echo as _echo

FORMAT = "fkp-shape-correction"
SCALE = 100.0  # the mean shape's norm: the ridge penalty is in these units


class ShapeFitError(Exception):
    """A shape correction that cannot be fitted, read or applied; the message names the file or option."""


def align(pts: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The similarity transform taking each shape of `pts` (B, N, 2) closest to `ref` (N, 2, centred
    on 0) in least squares: (aligned shapes (B, N, 2), a (B,), b (B,)) with aligned = M (p - mean p)
    for M = [[a, -b], [b, a]]."""
    c = pts - pts.mean(axis=1, keepdims=True)
    n = (c ** 2).sum(axis=(1, 2))
    if (n <= 0).any():
        raise ShapeFitError("a shape with all its points in one place cannot be aligned")
    a = (c * ref).sum(axis=(1, 2)) / n
    b = (c[..., 0] * ref[:, 1] - c[..., 1] * ref[:, 0]).sum(axis=1) / n
    x, y = c[..., 0], c[..., 1]
    out = np.stack([a[:, None] * x - b[:, None] * y, b[:, None] * x + a[:, None] * y], axis=-1)
    return out, a, b


def mean_shape(shapes: np.ndarray, rounds: int = 5) -> np.ndarray:
    """Generalised Procrustes mean of (B, N, 2) shapes, centred on 0 with norm SCALE."""
    ref = shapes[0] - shapes[0].mean(axis=0)
    for _ in range(rounds):
        ref = ref / np.linalg.norm(ref) * SCALE
        ref = align(shapes, ref)[0].mean(axis=0)
        ref -= ref.mean(axis=0)
    return ref / np.linalg.norm(ref) * SCALE


def _features(pts: np.ndarray, mean: np.ndarray):
    q, a, b = align(pts, mean)
    x = np.concatenate([(q - mean).reshape(len(pts), -1), np.ones((len(pts), 1))], axis=1)
    return x, a, b


def fit(pred: np.ndarray, truth: np.ndarray, ridge: float) -> dict:
    """Mean shape and weights ((2N + 1) x 2N) of the correction from readings `pred` to `truth`
    (both (B, N, 2), same pixels), with ridge penalty `ridge` (in SCALE units)."""
    if not ridge > 0:
        raise ShapeFitError(f"--ridge must be > 0, not {ridge}")
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if pred.shape != truth.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ShapeFitError(f"readings {pred.shape} and truth {truth.shape} must both be (faces, points, 2)")
    if len(pred) < 2 * pred.shape[1]:
        raise ShapeFitError(f"{len(pred)} faces are too few to fit a correction of {pred.shape[1]} points "
                            f"(at least {2 * pred.shape[1]})")
    mean = mean_shape(truth)
    x, a, b = _features(pred, mean)
    d = truth - pred  # the error, turned and scaled into the aligned frame
    r = np.stack([a[:, None] * d[..., 0] - b[:, None] * d[..., 1],
                  b[:, None] * d[..., 0] + a[:, None] * d[..., 1]], axis=-1).reshape(len(pred), -1)
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ r)
    return {"mean": mean, "weights": w}


def apply(pts: np.ndarray, mean: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Readings (B, N, 2) corrected (any pixel frame: the correction turns and scales with them)."""
    pts = np.asarray(pts, np.float64)
    x, a, b = _features(pts, mean)
    r = (x @ weights).reshape(pts.shape)
    det = a * a + b * b  # back through the inverse of [[a, -b], [b, a]]
    rx = (a[:, None] * r[..., 0] + b[:, None] * r[..., 1]) / det[:, None]
    ry = (-b[:, None] * r[..., 0] + a[:, None] * r[..., 1]) / det[:, None]
    return pts + np.stack([rx, ry], axis=-1)


def save(path, params: dict, **about) -> None:
    """Write a correction (.npz) atomically, with what it was fitted on (`about`: strings, numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, format=FORMAT, mean=params["mean"], weights=params["weights"],
             **{k: np.asarray(v) for k, v in about.items()})
    tmp.replace(path)


def read(path, points: int | None = None) -> dict:
    """A correction written by `save`: {"mean", "weights", and what it was fitted on}. Raises
    ShapeFitError naming the file when it is not one, or (with `points`) is for another count."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ShapeFitError(f"{path}: no such file; make one with `fkp-train shape-fit`") from None
    except Exception as e:  # not an npz at all
        raise ShapeFitError(f"{path}: not a shape correction ({e.__class__.__name__}); "
                            "make one with `fkp-train shape-fit`") from None
    if str(data.get("format", "")) != FORMAT or "mean" not in data or "weights" not in data:
        raise ShapeFitError(f"{path}: not a shape correction (no {FORMAT} mean and weights); "
                            "make one with `fkp-train shape-fit`")
    mean, w = data["mean"], data["weights"]
    n = mean.shape[0] if mean.ndim == 2 and mean.shape[1] == 2 else -1
    if n < 1 or w.shape != (2 * n + 1, 2 * n) or not (np.isfinite(mean).all() and np.isfinite(w).all()):
        raise ShapeFitError(f"{path}: mean {mean.shape} and weights {w.shape} do not fit together "
                            "(expected (N, 2) and (2N+1, 2N), finite)")
    if points is not None and n != points:
        raise ShapeFitError(f"{path}: a correction for {n} points, but the model reads {points}")
    out = {k: (v.item() if v.ndim == 0 else v) for k, v in data.items() if k != "format"}
    return out


def runtime_reads(model: str, data, split: str, limit: int | None = None):
    """Each face's first-frame reading of a split, end to end from the detector as the runtime reads
    a new face: (readings, truth) of the faces found, how many were missed, and the tracker."""
    from .datasets import load_split
    from .eval_runtime import read_faces
    from .tasks import get

    samples, _ = load_split(get("ibug68").with_(channels=3), data, split)
    pred, _, truth, missed, tr = read_faces(samples[:limit], model, tracked=False)
    return np.array(pred), np.array(truth), missed, tr


def measure(model: str, data, ridge: float = 1000.0, limit: int | None = None, echo=_echo) -> dict:
    """Fit a correction on the training split's runtime readings of `model` and report the
    first-frame NME of the training and validation splits before and after it (the correction
    applied to each face's final reading; the export applies it to every read)."""
    from fkp_live.card import ModelCard, resolve

    from .eval_runtime import scores

    onnx_path, card_path = resolve(model)
    card = ModelCard.load(card_path)
    if card.schema != "ibug68":
        raise ShapeFitError(f"{onnx_path}: reads {card.schema} points; shape-fit fits 68-point (ibug68) "
                            "models on a 300-W folder")
    if card.training.get("shape_correction"):
        raise ShapeFitError(f"{onnx_path}: this model already applies a shape correction (see its card); "
                            "fit on the export made without --shape-correction")
    pred, truth, missed, tr = runtime_reads(model, data, "train", limit)
    params = fit(pred, truth, ridge)
    report = {"model": model, "fitted_on": tr.landmarker.onnx_path.name, "ridge": ridge, "train_faces": len(pred),
              "train_missed": missed}

    def nme(p, t):
        return scores(p, t)["first_frame"]["nme_io"]

    report["train_nme_before"], report["train_nme_after"] = nme(pred, truth), nme(apply(pred, **params), truth)
    vp, vt, vmissed, _ = runtime_reads(model, data, "val")
    report["val_faces"], report["val_missed"] = len(vp), vmissed
    report["val_nme_before"], report["val_nme_after"] = nme(vp, vt), nme(apply(vp, **params), vt)
    echo(f"train: {report['train_nme_before']} -> {report['train_nme_after']} % NME over {len(pred)} faces; "
         f"val: {report['val_nme_before']} -> {report['val_nme_after']} % over {len(vp)} faces "
         f"(first frame, the correction applied to the final reading)")
    return {"params": params, "report": report}
