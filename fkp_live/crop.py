"""The crop convention: how a face becomes the model's input square, and back.

A crop is a square in frame pixels: centre (cx, cy), side length, and a roll angle (radians, the
angle of the image-left -> image-right eye line). The model sees that square rotated upright and
resized to `size` x `size`; it answers in crop fractions (0..1), which `Crop.to_frame` maps back.

Training (train/) and the runtime (fkp_live/) both build crops with these functions, so the model
sees at run time the kind of crop it was trained on. The constants (scale, rotate, detector box
calibration) live in the model card.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .schemas import Schema


@dataclass(frozen=True)
class Crop:
    cx: float
    cy: float
    side: float
    angle: float = 0.0  # radians; positive when the image-right eye is lower than the left

    def matrix(self, size: int) -> np.ndarray:
        """2x3 affine mapping frame pixels to crop pixels (crop pixels span 0..size)."""
        k = size / self.side
        c, s = math.cos(self.angle) * k, math.sin(self.angle) * k
        # rotate by -angle about the centre, scale, move the centre to size/2 (plain floats: this
        # runs for every face in every frame)
        h = size / 2
        return np.array([[c, s, h - c * self.cx - s * self.cy],
                         [-s, c, h + s * self.cx - c * self.cy]])

    def inverse(self, size: int) -> np.ndarray:
        """2x3 affine mapping crop pixels back to frame pixels."""
        k = self.side / size
        c, s = math.cos(self.angle) * k, math.sin(self.angle) * k
        h = size / 2
        return np.array([[c, -s, self.cx - c * h + s * h],
                         [s, c, self.cy - s * h - c * h]])

    def to_frame(self, uv: np.ndarray) -> np.ndarray:
        """Crop fractions (..., 2) in 0..1 -> frame pixels."""
        # inverse(size) applied to uv * size (any size), one 3x2 matrix of plain floats: fewer numpy
        # calls, which matters right after the model, when their code is out of the caches (per
        # face, median CPU 31 -> 18 us after an ONNX Runtime run; the same float64 results)
        k = self.side
        c, s = math.cos(self.angle) * k, math.sin(self.angle) * k
        m = np.array([[c, s], [-s, c], [self.cx - (c - s) / 2, self.cy - (s + c) / 2]])
        return (np.asarray(uv) @ m[:2] + m[2]).astype(np.float32)

    def from_frame(self, pts: np.ndarray) -> np.ndarray:
        """Frame pixels (..., 2) -> crop fractions."""
        m = self.matrix(1)
        return (np.asarray(pts, dtype=np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)


def roll_from_eyes(eye_l: np.ndarray, eye_r: np.ndarray) -> float:
    d = np.asarray(eye_r, dtype=np.float64) - np.asarray(eye_l, dtype=np.float64)
    return float(math.atan2(d[1], d[0]))


def crop_from_points(
    pts: np.ndarray,
    schema: Schema,
    scale: float,
    rotate: bool = True,
    mask: np.ndarray | None = None,
) -> Crop:
    """The crop a model card's convention makes from keypoints (frame pixels, (N, 2)).

    Roll comes from the eye line; the box is the points' extent measured in the upright frame,
    its centre the box centre, its side `scale` times the longer edge.
    """
    pts = np.asarray(pts, dtype=np.float64)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
    angle = 0.0
    if rotate:
        eyes = schema.eye_centres(pts)
        ok = True
        if mask is not None and schema.eyes is None and schema.pupils is not None:
            ok = all(mask[list(g)].all() for g in schema.pupils)
        if eyes is not None and ok and np.all(np.isfinite(eyes)):
            angle = roll_from_eyes(eyes[0], eyes[1])
    use = pts if mask is None else pts[mask]
    if len(use) == 0:
        raise ValueError("no labelled points to build a crop from")
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # frame -> upright
    up = use @ rot.T
    lo, hi = up.min(axis=0), up.max(axis=0)
    centre_up = (lo + hi) / 2
    centre = rot.T @ centre_up
    side = float(max(hi - lo)) * scale
    return Crop(float(centre[0]), float(centre[1]), max(side, 1.0), angle)


def crop_from_box(
    box: np.ndarray,
    calibration: tuple[float, float, float],
    angle: float = 0.0,
) -> Crop:
    """A detector box (x0, y0, x1, y1) -> crop, by the card's calibration (dx, dy, scale).

    The crop's centre is the box centre moved by (dx, dy) box sizes (in the upright frame) and its
    side is `scale` times the box size (the mean of width and height).
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    size = ((x1 - x0) + (y1 - y0)) / 2
    dx, dy, k = calibration
    c, s = math.cos(angle), math.sin(angle)
    ox, oy = dx * size, dy * size
    cx = (x0 + x1) / 2 + c * ox - s * oy
    cy = (y0 + y1) / 2 + s * ox + c * oy
    return Crop(cx, cy, max(k * size, 1.0), angle)


def box_from_crop(crop: Crop, calibration: tuple[float, float, float]) -> tuple[float, float, float, float]:
    """The detector box that `crop_from_box` turns into `crop` (its inverse): where a detector
    should find the face a track is following."""
    dx, dy, k = calibration
    size = crop.side / k
    c, s = math.cos(crop.angle), math.sin(crop.angle)
    ox, oy = dx * size, dy * size
    bx = crop.cx - (c * ox - s * oy)
    by = crop.cy - (s * ox + c * oy)
    return (bx - size / 2, by - size / 2, bx + size / 2, by + size / 2)


# How a detector's box relates to the keypoints' crop when a model card has no calibration for it:
# (dx, dy, r), the crop centre offset in box sizes and the keypoints' box extent over the detector
# box size; the crop side is card.crop_scale x r x box size. Measured on 300-W (AFW, HELEN and
# LFPW training crops, medians over ~500 faces) with this crop convention; a card's own calibration wins.
DEFAULT_BOX_FIT = {
    "blazeface": (0.0, 0.06, 0.96),
    "blazeface-full": (0.0, 0.11, 0.90),
    "haar": (0.01, 0.16, 0.86),
}


def box_calibration(card, detector_name: str) -> tuple[float, float, float]:
    """(dx, dy, scale) for `crop_from_box`: the card's own for this detector, else the default fit."""
    cal = card.box_calibration or {}
    for key in (detector_name, detector_name.split("-")[0]):
        if key in cal:
            dx, dy, k = (float(v) for v in cal[key])
            return dx, dy, k
    dx, dy, r = DEFAULT_BOX_FIT.get(detector_name, DEFAULT_BOX_FIT["blazeface"])
    return dx, dy, card.crop_scale * r


def rows_spanned(crops: list[Crop], height: int) -> list[tuple[int, int]]:
    """The image rows the crops' (rotated) squares cover, clipped to `height`, overlapping spans
    merged: [(first, end), ...] in order."""
    spans = []
    for c in crops:
        r = c.side / 2 * (abs(math.cos(c.angle)) + abs(math.sin(c.angle))) + 2  # +2: bilinear taps
        y0, y1 = max(int(c.cy - r), 0), min(int(math.ceil(c.cy + r)), height)
        if y1 > y0:
            spans.append((y0, y1))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for y0, y1 in spans:
        if merged and y0 <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], y1))
        else:
            merged.append((y0, y1))
    return merged


def prefetch(image: np.ndarray, crops: list[Crop]) -> None:
    """Read the image rows the crops cover, front to back, so that their warps find them in cache.

    A video frame reaches the tracker decoded by another thread, and out of this core's caches.
    `warpAffine` walks a rotated, scaled square of it, an order the CPU cannot predict, and waits
    on memory at almost every cache line. Reading the rows in order first streams them in at the
    memory's speed. On this 2-core machine, one face's 128-pixel crop from a freshly decoded frame
    took, warp alone against rows read and warp (`thread_time`, medians of 200 frames):
    512x512, 0.10-0.17 ms against 0.06-0.09; 1920x1080, 0.18-0.31 ms against 0.11-0.17. Reading
    only the crop's columns is slower: a row's part is too short for the CPU to stream."""
    for y0, y1 in rows_spanned(crops, image.shape[0]):
        cv2.sumElems(image[y0:y1])


def warp(image: np.ndarray, crop: Crop, size: int, border: int = cv2.BORDER_CONSTANT,
         dst: np.ndarray | None = None) -> np.ndarray:
    """Cut the crop out of `image` as a size x size image (same channels as `image`); into `dst`
    (size x size, C-contiguous, the image's type) when given."""
    return cv2.warpAffine(
        image, crop.matrix(size), (size, size), dst=dst, flags=cv2.INTER_LINEAR, borderMode=border,
        borderValue=0,
    )
