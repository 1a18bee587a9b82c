"""Faces that 300-W holds few of (a wide-open mouth, a turned head), found from their points, so
that training can see them more often."""
from __future__ import annotations

import numpy as np

from fkp_live import schemas

SCHEMA = schemas.get("ibug68")
UPPER_LIP, LOWER_LIP = (61, 62, 63), (65, 66, 67)  # inner lip points
NOSE_TIP = 30


def pose_and_mouth(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, 68, 2) -> (mouth opening, yaw proxy), both in inter-ocular distances: the gap between
    the inner lips, and how far the nose tip sits from the eyes' midpoint along the eye line."""
    p = np.asarray(points, np.float64)
    e = SCHEMA.ocular_points(p)
    axis = e[:, 1] - e[:, 0]
    iod = np.linalg.norm(axis, axis=-1)
    axis = axis / iod[:, None]
    normal = np.stack([-axis[:, 1], axis[:, 0]], axis=-1)
    gap = p[:, list(LOWER_LIP)].mean(axis=1) - p[:, list(UPPER_LIP)].mean(axis=1)
    mouth = np.abs((gap * normal).sum(axis=-1)) / iod
    off = p[:, NOSE_TIP] - e.mean(axis=1)
    yaw = np.abs((off * axis).sum(axis=-1)) / iod
    return mouth, yaw


def rare(points: np.ndarray, quantile: float = 0.9) -> np.ndarray:
    """(F,) bool: the faces in the top share (1 - quantile) by mouth opening or by yaw."""
    mouth, yaw = pose_and_mouth(points)
    return (mouth > np.quantile(mouth, quantile)) | (yaw > np.quantile(yaw, quantile))


def oversampled(samples: list, factor: int, quantile: float = 0.9) -> tuple[list, int]:
    """`samples` with each rare 68-point face (all points labelled) repeated `factor` times in
    all; returns (samples, how many faces were rare)."""
    if factor <= 1:
        return samples, 0
    full = [i for i, s in enumerate(samples) if len(s.points) == 68 and bool(np.all(s.mask))]
    if not full:
        return samples, 0
    flags = rare(np.array([samples[i].points for i in full]), quantile)
    picked = [samples[i] for i, f in zip(full, flags) if f]
    return samples + picked * (factor - 1), len(picked)
