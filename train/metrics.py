"""Honest metrics: NME (inter-ocular, inter-pupil), RMSE, MAE, AUC and failure rate, CED.

All functions take numpy arrays: pred and truth (B, N, 2) in pixels, mask (B, N) of labelled
points. A sample with no labelled point, or no labelled eye pair for NME, is left out (NaN).
"""
from __future__ import annotations

import numpy as np

from fkp_live.schemas import Schema


def point_errors(pred, truth, mask) -> np.ndarray:
    """(B, N) Euclidean error per point, NaN where unlabelled."""
    e = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(truth, np.float64), axis=-1)
    return np.where(mask, e, np.nan)


def _norm_distance(truth, mask, groups) -> np.ndarray:
    a = np.asarray(truth, np.float64)[:, list(groups[0])].mean(1)
    b = np.asarray(truth, np.float64)[:, list(groups[1])].mean(1)
    mask = np.asarray(mask, bool)
    ok = mask[:, list(groups[0])].all(1) & mask[:, list(groups[1])].all(1)
    d = np.linalg.norm(a - b, axis=-1)
    # a degenerate normaliser (both eyes on one spot) makes NME undefined, not infinite
    return np.where(ok & (d > 0), d, np.nan)


def inter_ocular(truth, mask, schema: Schema) -> np.ndarray:
    """(B,) the inter-ocular distance of each face's true points (NaN where it is undefined)."""
    return _norm_distance(truth, mask, schema.ocular)


def nme_per_sample(pred, truth, mask, schema: Schema, norm: str = "ocular") -> np.ndarray:
    """(B,) mean point error over labelled points / normalising distance (a fraction)."""
    groups = schema.ocular if norm == "ocular" else schema.pupils
    if groups is None:
        raise ValueError(f"schema {schema.name} has no {norm} points to normalise by")
    e = point_errors(pred, truth, mask)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(np.where(mask.any(1, keepdims=True), e, 0), axis=1)
    mean = np.where(mask.any(1), mean, np.nan)
    return mean / _norm_distance(truth, mask, groups)


def rmse(pred, truth, mask) -> float:
    """Kaggle's RMSE: root of the mean squared error over every labelled coordinate."""
    d = (np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) ** 2
    m = np.repeat(np.asarray(mask, bool)[..., None], 2, axis=-1)
    return float(np.sqrt(d[m].mean())) if m.any() else float("nan")


def mae(pred, truth, mask) -> float:
    """Mean absolute coordinate error in pixels over labelled coordinates."""
    d = np.abs(np.asarray(pred, np.float64) - np.asarray(truth, np.float64))
    m = np.repeat(np.asarray(mask, bool)[..., None], 2, axis=-1)
    return float(d[m].mean()) if m.any() else float("nan")


def mean_pixel_error(pred, truth, mask) -> float:
    """Mean Euclidean point error in pixels."""
    return _nanmean(point_errors(pred, truth, mask))


def ced(nmes: np.ndarray, limit: float = 0.08, steps: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds and the fraction of samples at or below each."""
    nmes = np.asarray(nmes, np.float64)
    nmes = nmes[np.isfinite(nmes)]
    xs = np.linspace(0, limit, steps + 1)
    ys = (nmes[None, :] <= xs[:, None]).mean(1) if len(nmes) else np.zeros_like(xs)
    return xs, ys


def auc(nmes: np.ndarray, limit: float = 0.08) -> float:
    """Area under the CED curve up to `limit`, divided by `limit` (1.0 = every error is 0);
    NaN when no sample has a defined NME."""
    if not np.isfinite(np.asarray(nmes, np.float64)).any():
        return float("nan")
    xs, ys = ced(nmes, limit)
    return float(np.trapz(ys, xs) / limit)


def failure_rate(nmes: np.ndarray, limit: float = 0.08) -> float:
    nmes = np.asarray(nmes, np.float64)
    nmes = nmes[np.isfinite(nmes)]
    return float((nmes > limit).mean()) if len(nmes) else float("nan")


def per_point_error(pred, truth, mask, norm: np.ndarray | None = None) -> np.ndarray:
    """(N,) mean error of each point (divided per sample by `norm` when given)."""
    e = point_errors(pred, truth, mask)
    if norm is not None:
        e = e / np.asarray(norm)[:, None]
    with np.errstate(invalid="ignore"):
        return np.nanmean(e, axis=0)


def _nanmean(x) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def summary(pred, truth, mask, schema: Schema, limit: float = 0.08) -> dict:
    """Every metric that applies to the schema, as plain floats (NME etc. in percent)."""
    mask = np.asarray(mask, bool)
    out = {
        "n": int(mask.any(1).sum()),
        "mean_px": mean_pixel_error(pred, truth, mask),
        "mae_px": mae(pred, truth, mask),
        "rmse_px": rmse(pred, truth, mask),
    }
    if schema.ocular is not None:
        nme_o = nme_per_sample(pred, truth, mask, schema, "ocular")
        out.update({
            "n_nme": int(np.isfinite(nme_o).sum()),
            "nme_io": 100 * _nanmean(nme_o),
            "nme_ip": 100 * _nanmean(nme_per_sample(pred, truth, mask, schema, "pupil")),
            f"auc@{limit:g}": float(auc(nme_o, limit)),
            f"fr@{limit:g}": 100 * float(failure_rate(nme_o, limit)),
        })
    return out
