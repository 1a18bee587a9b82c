"""Morphs of still pictures: sequences from face to face (`Morph`), caricatures against a mean
shape, and the mean face of many pictures (`average`).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .mesh import (EYE_CORNERS, apply_affine, delaunay, invert_affine, picture_shape, signed_areas, similarity,
                   triangulation_shape)
from .warping import warp, warp_maps


@dataclass
class Subject:
    """One picture and the 68 points of its face (0-based pixels)."""

    image: np.ndarray
    points: np.ndarray
    name: str = "image"


def cover_transform(size_from: tuple[int, int], size_to: tuple[int, int]) -> np.ndarray:
    """Scale a picture to cover another size, centred (the overflow is cut): 2x3."""
    (w0, h0), (w1, h1) = size_from, size_to
    k = max(w1 / w0, h1 / h0)
    return np.array([[k, 0, (w1 - 1) / 2 - k * (w0 - 1) / 2], [0, k, (h1 - 1) / 2 - k * (h0 - 1) / 2]])


class Morph:
    """A morph through `subjects` (2 or more; 1 with a caricature) on the first picture's canvas.

    align: each later face is moved (similarity on the outer eye corners) onto the first face's
    eyes, so the eyes hold still; otherwise each picture is scaled to cover the first's size.
    Every picture is resampled once, from its own pixels. The mesh is triangulated once, on the
    mean of all shapes. `image(k, warp_frac, dissolve_frac)` is one picture between subject k and
    k + 1; `frames(n)` the whole sequence.
    """

    def __init__(self, subjects: list[Subject], align: bool = True):
        if not subjects:
            raise ValueError("nothing to morph")
        self.subjects = subjects
        h, w = subjects[0].image.shape[:2]
        self.size = (w, h)
        ref = subjects[0].points
        self.to_canvas = []
        for s in subjects:
            sh, sw = s.image.shape[:2]
            if s is subjects[0]:
                m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
            elif align:
                m = similarity(s.points[list(EYE_CORNERS)], ref[list(EYE_CORNERS)])
            else:
                m = cover_transform((sw, sh), self.size)
            self.to_canvas.append(m)
        # each face's shape on the canvas, and where those points lie in its own picture
        self.shapes = [picture_shape(apply_affine(m, s.points), self.size) for m, s in zip(self.to_canvas, subjects)]
        self.sources = [apply_affine(invert_affine(m), sh) for m, sh in zip(self.to_canvas, self.shapes)]
        self.tris = delaunay(triangulation_shape(np.mean(self.shapes, 0)))

    def shape(self, k: int, warp_frac: float) -> np.ndarray:
        a = self.shapes[k]
        b = self.shapes[min(k + 1, len(self.shapes) - 1)]
        return (1 - warp_frac) * a + warp_frac * b

    def warped(self, k: int, shape: np.ndarray) -> np.ndarray:
        """Subject k's picture warped to `shape` (canvas pixels)."""
        return warp(self.subjects[k].image, self.sources[k], shape, self.tris, self.size)

    def image(self, k: int = 0, warp_frac: float = 0.5, dissolve_frac: float | None = None) -> np.ndarray:
        """The picture between subject k and k + 1: shape `warp_frac` of the way, colour
        `dissolve_frac` (default = warp_frac). Fractions outside 0..1 extrapolate."""
        d = warp_frac if dissolve_frac is None else dissolve_frac
        shape = self.shape(k, warp_frac)
        if k + 1 >= len(self.subjects):
            return self.warped(k, shape)
        a = self.warped(k, shape) if d != 1 else None
        b = self.warped(k + 1, shape) if d != 0 else None
        if a is None:
            return b
        if b is None:
            return a
        return cv2.addWeighted(a, 1.0 - d, b, d, 0.0)

    def frames(self, per_transition: int, hold: int = 0):
        """Every picture of the sequence: `per_transition` steps from each face to the next (the
        first step is the face itself), the last face at the end, each face shown `hold` extra times."""
        for k in range(len(self.subjects) - 1):
            for i in range(per_transition):
                t = i / per_transition
                img = self.image(k, t, t)
                yield img
                if i == 0:
                    for _ in range(hold):
                        yield img
        last = self.image(len(self.subjects) - 1, 0.0)
        for _ in range(1 + hold):
            yield last

    def folded(self, shape: np.ndarray) -> int:
        """How many triangles are turned over in `shape` (a warp there overlaps itself)."""
        return int((signed_areas(shape, self.tris) < 0).sum())


def caricature(subject: Subject, mean_points: np.ndarray, warp_frac: float) -> tuple[np.ndarray, int]:
    """`subject`'s face moved `warp_frac` of the way from a mean shape to itself (1: unchanged,
    0: the mean shape, > 1: its differences from the mean exaggerated, < 0: reversed).
    The mean is first fitted to the face (least-squares similarity on all 68 points).
    Returns the picture and how many triangles fold (0 for a clean warp)."""
    m = Morph([subject])
    p = subject.points
    mean = apply_affine(similarity(mean_points, p), mean_points)
    shape = picture_shape(keep_lip_gap(mean + warp_frac * (p - mean), p), m.size)
    return m.warped(0, shape), m.folded(shape)


INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper and lower inner lip, left to right


def keep_lip_gap(shape: np.ndarray, own: np.ndarray) -> np.ndarray:
    """`shape` with each inner-lip pair's gap taken from `own` (the face's own points) around the
    pair's new middle: exaggerating a mouth's opening would push the lips through each other."""
    s = np.array(shape, np.float64, copy=True)
    for u, lo in INNER_LIP_PAIRS:
        mid, half = (s[u] + s[lo]) / 2, (own[u] - own[lo]) / 2
        s[u], s[lo] = mid + half, mid - half
    return s


@dataclass
class Average:
    image: np.ndarray  # the mean face, BGR
    points: np.ndarray  # the mean shape (68, 2) in its pixels
    used: list  # names of the faces averaged


def mean_eye_corners(size: tuple[int, int]) -> np.ndarray:
    """Where the outer eye corners go on a mean-face canvas of `size`."""
    w, h = size
    d = 0.36 * w
    return np.array([[(w - 1) / 2 - d / 2, 0.42 * (h - 1)], [(w - 1) / 2 + d / 2, 0.42 * (h - 1)]])


def average(subjects: list[Subject], size: tuple[int, int] = (400, 400)) -> Average:
    """The mean face: each face moved by a similarity onto fixed outer eye corners, the shapes
    averaged, every face warped to the mean shape (one resampling from its own pixels) and the
    pixels averaged where each picture has pixels (no border smear)."""
    if not subjects:
        raise ValueError("no faces to average")
    w, h = size
    eyes = mean_eye_corners(size)
    ms = [similarity(s.points[list(EYE_CORNERS)], eyes) for s in subjects]
    aligned = [apply_affine(m, s.points) for m, s in zip(ms, subjects)]
    mean = np.mean(aligned, 0)
    target = picture_shape(mean, size)
    tris = delaunay(triangulation_shape(target))
    acc = np.zeros((h, w, 3), np.float64)
    cnt = np.zeros((h, w), np.float64)
    box = (0, 0, w, h)
    for m, a, s in zip(ms, aligned, subjects):
        src = apply_affine(invert_affine(m), picture_shape(a, size))
        mx, my, _ = warp_maps(src, target, tris, box)
        img = cv2.remap(s.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        sh, sw = s.image.shape[:2]
        valid = ((mx >= -0.5) & (mx <= sw - 0.5) & (my >= -0.5) & (my <= sh - 0.5)).astype(np.float64)
        acc += img * valid[..., None]
        cnt += valid
    out = np.empty((h, w, 3), np.uint8)
    have = cnt > 0
    fill = acc[have].sum(0) / max(cnt[have].sum(), 1) if have.any() else np.full(3, 128.0)
    mean_img = np.where(have[..., None], acc / np.maximum(cnt, 1)[..., None], fill)
    np.clip(mean_img + 0.5, 0, 255, out=mean_img)
    out[:] = mean_img
    return Average(out, mean, [s.name for s in subjects])
