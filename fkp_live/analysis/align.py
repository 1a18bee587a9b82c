"""Aligned face crops: the similarity transform that puts the two eye centres on fixed pixels.

The eye centres (the mean of each eye's points in the model's scheme) go to (0.342, 0.461) and
(0.658, 0.461) of the crop's side: the eye line of the ArcFace 112 x 112 template, made symmetric.
Same size in, same pixels out: every crop of every face and frame has its eyes on the same pixels,
the image-left eye on the left.

    >>> import numpy as np
    >>> m = align_matrix((100.0, 200.0), (160.0, 200.0), 112)
    >>> np.round(m @ [100.0, 200.0, 1.0], 2).tolist(), np.round(m @ [160.0, 200.0, 1.0], 2).tolist()
    ([38.3, 51.63], [73.7, 51.63])
"""
from __future__ import annotations

import cv2
import numpy as np

EYE_TARGETS = ((0.342, 0.461), (0.658, 0.461))  # fractions of the crop side


def eye_targets(size: int) -> np.ndarray:
    """Where the image-left and image-right eye centres land in a size x size crop (pixels)."""
    return np.asarray(EYE_TARGETS, dtype=np.float64) * size


def align_matrix(eye_l, eye_r, size: int) -> np.ndarray:
    """2x3 similarity (rotation, uniform scale, shift; no shear or mirror) mapping the two eye
    centres in frame pixels to their targets in a size x size crop."""
    p, q = complex(*np.asarray(eye_l, dtype=np.float64)), complex(*np.asarray(eye_r, dtype=np.float64))
    (px, py), (qx, qy) = eye_targets(size)
    P, Q = complex(px, py), complex(qx, qy)
    if abs(q - p) < 1e-9:
        raise ValueError("the two eye centres coincide")
    z = (Q - P) / (q - p)  # scale and rotation as one complex number
    t = P - z * p
    return np.array([[z.real, -z.imag, t.real], [z.imag, z.real, t.imag]])


def aligned_crop(image: np.ndarray, eyes: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Cut the eye-aligned size x size crop out of `image` (outside the frame is black).
    eyes: (2, 2) image-left and image-right eye centres. Returns (crop, the 2x3 matrix used)."""
    m = align_matrix(eyes[0], eyes[1], size)
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)
    return crop, m
