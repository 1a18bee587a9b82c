"""Face identities across frames: match detections to tracks by box overlap.

Between detections every face follows its own keypoints, so ids can only change hands at a
detection frame; there each detection goes to at most one track and each track takes at most one
detection, chosen by an exact minimum-cost assignment (no scipy in the runtime), and a track
whose box overlaps an older track's is dropped, so two visible faces never swap ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..crop import Crop
from .smooth import KeypointSmoother


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (A, 4) and b (B, 4), (x0, y0, x1, y1) -> (A, B)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def min_cost_assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Exact rectangular assignment (Hungarian method, shortest augmenting paths, O(n^3)):
    the (row, col) pairs, one per row of the smaller side, with the least total cost."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.size == 0:
        return []
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape  # n <= m
    INF = float("inf")
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=int)  # p[j]: row (1-based) assigned to column j; 0 = none
    way = np.zeros(m + 1, dtype=int)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, INF)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            free = ~used[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], INF)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    pairs = [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j]]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    return sorted(pairs)


def match(track_boxes: np.ndarray, det_boxes: np.ndarray, min_iou: float = 0.3) -> list[tuple[int, int]]:
    """(track, detection) pairs maximising total IoU, each pair overlapping at least `min_iou`."""
    if len(track_boxes) == 0 or len(det_boxes) == 0:
        return []
    o = iou(track_boxes, det_boxes)
    pairs = min_cost_assignment(1.0 - o)
    return [(t, d) for t, d in pairs if o[t, d] >= min_iou]


@dataclass
class Track:
    id: int
    crop: Crop  # where to look in the next frame
    smoother: KeypointSmoother | None  # None: smoothing off
    points: np.ndarray | None = None  # last raw keypoints
    smoothed: np.ndarray | None = None
    confidence: float = 0.0
    born: int = 0  # frame index of its first detection
    point_confidence: np.ndarray | None = None  # (N,) the last read's, where the model gives it


class IdPool:
    """Ids count up from 0 and are never reused within a run, so an id names one appearance."""

    def __init__(self) -> None:
        self._next = 0

    def take(self) -> int:
        self._next += 1
        return self._next - 1

    def reset(self) -> None:
        self._next = 0
