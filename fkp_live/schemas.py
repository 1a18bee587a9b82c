"""Keypoint schemes as data.

Every other module (readers, augmentation, metrics, drawing, the runtime) reads point names,
flip permutations, normalising points and drawing lines from here; none hard-codes an index.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Schema:
    name: str
    names: tuple[str, ...]
    # mirror[i] is the index that point i becomes after a horizontal flip.
    mirror: tuple[int, ...]
    # Two groups of indices whose means are the outer eye corners (inter-ocular NME), and two
    # whose means are the eye centres (inter-pupil NME). Either may be None for a scheme that
    # has no eyes (the single nose tip).
    ocular: tuple[tuple[int, ...], tuple[int, ...]] | None
    pupils: tuple[tuple[int, ...], tuple[int, ...]] | None
    # Poly-lines to draw, each a tuple of indices; closed ones repeat the first index at the end.
    lines: tuple[tuple[int, ...], ...] = field(default=())
    # Eye groups used to estimate the roll of a face (image-left eye, image-right eye).
    eyes: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    @property
    def n(self) -> int:
        return len(self.names)

    def mirror_array(self) -> np.ndarray:
        return np.asarray(self.mirror, dtype=np.int64)

    def _pair(self, groups, pts: np.ndarray) -> np.ndarray:
        # runs for every face in every frame: index arrays made once, and sums rather than
        # numpy's mean(), which costs several times more on a handful of points
        idx = _pair_index(groups)
        pts = np.asarray(pts)
        a = np.add.reduce(pts[..., idx[0][0], :], axis=-2) * idx[0][1]
        b = np.add.reduce(pts[..., idx[1][0], :], axis=-2) * idx[1][1]
        out = np.stack([a, b], axis=-2)
        return out if pts.dtype.kind == "f" else out.astype(np.float64)

    def line_arrays(self) -> list[np.ndarray]:
        """The poly-lines to draw as index arrays (made once per schema: drawn every frame)."""
        return _line_index(self.lines)

    def ocular_points(self, pts: np.ndarray) -> np.ndarray:
        """(..., N, 2) -> (..., 2, 2): the two outer eye corners."""
        if self.ocular is None:
            raise ValueError(f"schema {self.name!r} has no eye corners to normalise by")
        return self._pair(self.ocular, pts)

    def eye_centres(self, pts: np.ndarray) -> np.ndarray | None:
        """Image-left and image-right eye centres, used for roll; None if the scheme has none."""
        groups = self.eyes or self.pupils
        return None if groups is None else self._pair(groups, pts)


@functools.cache
def _line_index(lines) -> list[np.ndarray]:
    return [np.asarray(line, dtype=np.intp) for line in lines]


@functools.cache
def _pair_index(groups) -> tuple:
    """Index arrays and 1/len of two point groups (made once per group pair)."""
    return tuple((np.asarray(g, dtype=np.intp), 1.0 / len(g)) for g in groups)


def _closed(idx: range | list[int]) -> tuple[int, ...]:
    idx = list(idx)
    return tuple(idx + [idx[0]])


def _mirror_from_pairs(n: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    m = list(range(n))
    for a, b in pairs:
        m[a], m[b] = b, a
    return tuple(m)


# --- iBUG 68 (300-W). 0-based; "left/right" in names is as seen in the image. ---
_IBUG_NAMES = (
    [f"jaw_{i}" for i in range(17)]
    + [f"brow_l_{i}" for i in range(5)] + [f"brow_r_{i}" for i in range(5)]
    + [f"nose_bridge_{i}" for i in range(4)] + [f"nostril_{i}" for i in range(5)]
    + [f"eye_l_{i}" for i in range(6)] + [f"eye_r_{i}" for i in range(6)]
    + [f"mouth_outer_{i}" for i in range(12)] + [f"mouth_inner_{i}" for i in range(8)]
)
_IBUG_PAIRS = (
    [(i, 16 - i) for i in range(8)]
    + [(17 + i, 26 - i) for i in range(5)]
    + [(31, 35), (32, 34)]
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]
    + [(60, 64), (61, 63), (65, 67)]
)
IBUG68 = Schema(
    name="ibug68",
    names=tuple(_IBUG_NAMES),
    mirror=_mirror_from_pairs(68, _IBUG_PAIRS),
    ocular=((36,), (45,)),
    pupils=(tuple(range(36, 42)), tuple(range(42, 48))),
    lines=(
        tuple(range(0, 17)), tuple(range(17, 22)), tuple(range(22, 27)), tuple(range(27, 31)),
        tuple(range(31, 36)), _closed(range(36, 42)), _closed(range(42, 48)),
        _closed(range(48, 60)), _closed(range(60, 68)),
    ),
)

# --- IMM 58 (Stegmann et al.). Paths: jaw 0-12, eye (image right) 13-20, eye (image left) 21-28,
# brow (image right) 29-33, brow (image left) 34-38, mouth 39-46, nose 47-57; nose tip = 52. ---
_IMM_NAMES = (
    [f"jaw_{i}" for i in range(13)]
    + [f"eye_r_{i}" for i in range(8)] + [f"eye_l_{i}" for i in range(8)]
    + [f"brow_r_{i}" for i in range(5)] + [f"brow_l_{i}" for i in range(5)]
    + [f"mouth_{i}" for i in range(8)] + [f"nose_{i}" for i in range(11)]
)
_IMM_PAIRS = (
    [(i, 12 - i) for i in range(6)]
    + [(13 + i, 21 + i) for i in range(8)]
    + [(29 + i, 34 + i) for i in range(5)]
    + [(39, 43), (40, 42), (44, 46)]
    + [(47, 57), (48, 56), (49, 55), (50, 54), (51, 53)]
)
IMM58 = Schema(
    name="imm58",
    names=tuple(_IMM_NAMES),
    mirror=_mirror_from_pairs(58, _IMM_PAIRS),
    ocular=((21,), (13,)),
    pupils=(tuple(range(21, 29)), tuple(range(13, 21))),
    lines=(
        tuple(range(0, 13)), _closed(range(13, 21)), _closed(range(21, 29)),
        tuple(range(29, 34)), tuple(range(34, 39)), _closed(range(39, 47)), tuple(range(47, 58)),
    ),
)
IMM_NOSE_TIP = 52

# --- Kaggle Facial Keypoints (15). "left" is the subject's left, i.e. the image's right side. ---
KAGGLE_NAMES = (
    "left_eye_center", "right_eye_center",
    "left_eye_inner_corner", "left_eye_outer_corner",
    "right_eye_inner_corner", "right_eye_outer_corner",
    "left_eyebrow_inner_end", "left_eyebrow_outer_end",
    "right_eyebrow_inner_end", "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner", "mouth_right_corner",
    "mouth_center_top_lip", "mouth_center_bottom_lip",
)
KAGGLE15 = Schema(
    name="kaggle15",
    names=KAGGLE_NAMES,
    mirror=_mirror_from_pairs(15, [(0, 1), (2, 4), (3, 5), (6, 8), (7, 9), (11, 12)]),
    ocular=((5,), (3,)),
    pupils=((1,), (0,)),
    lines=((5, 1, 4), (2, 0, 3), (9, 8), (6, 7), (12, 13, 11, 14, 12)),
)
# The four points that Kaggle's large subset (about 70% of its images) labels.
KAGGLE_BIG_SUBSET = (0, 1, 10, 14)

# iBUG index (or group averaged) for each Kaggle point; used to convert 68-point data.
IBUG_TO_KAGGLE: tuple[tuple[int, ...], ...] = (
    tuple(range(42, 48)), tuple(range(36, 42)),
    (42,), (45,), (39,), (36,),
    (22,), (26,), (21,), (17,),
    (30,),
    (54,), (48,), (51,), (57,),
)

NOSE_TIP = Schema(name="nose1", names=("nose_tip",), mirror=(0,), ocular=None, pupils=None)

# 5 points as face detectors give them (image-left eye, image-right eye, nose, mouth corners).
FIVE = Schema(
    name="five",
    names=("eye_l", "eye_r", "nose_tip", "mouth_l", "mouth_r"),
    mirror=(1, 0, 2, 4, 3),
    ocular=((0,), (1,)),
    pupils=((0,), (1,)),
    lines=((0, 1), (3, 4)),
)
IBUG_TO_FIVE: tuple[tuple[int, ...], ...] = (
    tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,),
)

# (from schema, to schema) -> groups: how to compute one scheme's points from another's
MAPPINGS = {("ibug68", "kaggle15"): IBUG_TO_KAGGLE, ("ibug68", "five"): IBUG_TO_FIVE}

SCHEMAS: dict[str, Schema] = {s.name: s for s in (IBUG68, IMM58, KAGGLE15, NOSE_TIP, FIVE)}


def get(name: str) -> Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(
            f"unknown keypoint schema {name!r}; known: {', '.join(sorted(SCHEMAS))}"
        ) from None


def map_points(pts: np.ndarray, mask: np.ndarray, groups) -> tuple[np.ndarray, np.ndarray]:
    """Map (..., N, 2) points to another scheme whose point k is the mean of pts[groups[k]].

    A mapped point is labelled only when every source point of its group is labelled.
    """
    out = np.stack([pts[..., list(g), :].mean(axis=-2) for g in groups], axis=-2)
    m = np.stack([mask[..., list(g)].all(axis=-1) for g in groups], axis=-1)
    return out.astype(np.float32), m
