"""Augmentation that moves the points with the pixels.

Everything geometric (the face crop, a jittered box, rotation, scale, translation, a horizontal
flip) is composed into ONE 2x3 affine, applied once to the image with `cv2.warpAffine` and to the
points with the same matrix, so pixels and points cannot drift apart. A flip also reorders the
points by the schema's mirror permutation (the left eye becomes the right eye).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from fkp_live.crop import crop_from_points
from fkp_live.schemas import Schema


@dataclass
class AugmentConfig:
    rotate_deg: float = 30.0  # uniform in +-rotate_deg
    scale: tuple[float, float] = (0.9, 1.15)  # crop side multiplier (log-uniform)
    shift: float = 0.08  # centre shift, fraction of the crop side (normal sd)
    flip: float = 0.5  # probability
    brightness: float = 0.25  # +- fraction
    contrast: float = 0.3
    colour: float = 0.15  # per-channel gain for colour inputs
    blur: float = 0.2  # probability of a Gaussian blur
    equalise: float = 0.1  # probability of histogram equalisation
    noise: float = 0.2  # probability of Gaussian noise
    occlude: float = 0.2  # probability of a random patch over part of the face
    negative: float = 0.0  # probability of a crop holding no face (confidence target 0)
    # The labels' own left-right offset, as a fraction of the inter-ocular distance (+: labels sit
    # right of the features they mark). A plain flip turns +b into -b, so a net trained with flips
    # learns neither and reads b to the left of every label; with this set, a flipped sample's
    # points move right by 2b and keep the labels' convention. 300-W: 0.0082 (README, Reproduce 3).
    flip_shift: float = 0.0
    # Probability that a sample's crop is made, by the crop convention, from the net's own reading
    # of the image (made afresh before each epoch by `train.fit`) instead of from its true points:
    # the crops the runtime cuts from the points it has read, whose errors follow the net's own.
    self_crop: float = 0.0


NO_AUGMENT = AugmentConfig(0, (1.0, 1.0), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def affine_about(centre: tuple[float, float], angle: float, scale: float, shift=(0.0, 0.0)) -> np.ndarray:
    """3x3: rotate by `angle` (radians) and scale about `centre`, then translate by `shift`."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    cx, cy = centre
    return np.array([
        [c, -s, cx - c * cx + s * cy + shift[0]],
        [s, c, cy - s * cx - c * cy + shift[1]],
        [0, 0, 1],
    ])


def flip_matrix(width: int) -> np.ndarray:
    # pixel centres are integers: column j goes to width-1-j
    return np.array([[-1.0, 0, width - 1], [0, 1, 0], [0, 0, 1]])


def to3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0, 0, 1]])


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return (np.asarray(pts, np.float64) @ m[:2, :2].T + m[:2, 2]).astype(np.float32)


def flip_points(pts: np.ndarray, mask: np.ndarray, schema: Schema, width: int, shift: float = 0.0):
    """Mirror points horizontally (pixel-centre convention) and apply the mirror permutation.

    `shift`: the labels' own left-right offset b (fraction of the inter-ocular distance, see
    AugmentConfig.flip_shift); the mirrored points move right by 2b x IOD to keep it."""
    out = pts.copy()
    out[:, 0] = (width - 1) - out[:, 0]
    # the point that lands at slot i is the one whose mirror is i
    perm = schema.mirror_array()
    out, mask = out[perm], mask[perm]
    if shift and schema.ocular is not None and mask[[*schema.ocular[0], *schema.ocular[1]]].all():
        e = schema.ocular_points(out)
        out[:, 0] += 2.0 * shift * float(np.hypot(*(e[1] - e[0])))
    return out, mask


def photometric(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    x = img.astype(np.float32)
    if cfg.equalise and rng.random() < cfg.equalise:
        if img.ndim == 2:
            x = cv2.equalizeHist(img).astype(np.float32)
        else:
            ycc = cv2.cvtColor(img, cv2.COLOR_BGR2YCrCb)
            ycc[:, :, 0] = cv2.equalizeHist(ycc[:, :, 0])
            x = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR).astype(np.float32)
    if cfg.contrast or cfg.brightness:
        a = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
        b = 255.0 * rng.uniform(-cfg.brightness, cfg.brightness)
        mean = x.mean()
        x = (x - mean) * a + mean + b
    if cfg.colour and x.ndim == 3:
        x = x * (1.0 + rng.uniform(-cfg.colour, cfg.colour, size=3)).astype(np.float32)
    if cfg.blur and rng.random() < cfg.blur:
        x = cv2.GaussianBlur(x, (0, 0), sigmaX=rng.uniform(0.5, 1.8))
    if cfg.noise and rng.random() < cfg.noise:
        x = x + rng.normal(0, rng.uniform(2, 10), size=x.shape).astype(np.float32)
    if cfg.occlude and rng.random() < cfg.occlude:
        h, w = x.shape[:2]
        ph, pw = int(h * rng.uniform(0.15, 0.4)), int(w * rng.uniform(0.15, 0.4))
        y0, x0 = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        x[y0 : y0 + ph, x0 : x0 + pw] = rng.uniform(0, 255)
    return np.clip(x, 0, 255).astype(np.uint8)


@dataclass
class Example:
    image: np.ndarray  # uint8 (H, W) or (H, W, 3), the network's input size
    points: np.ndarray  # float32 (N, 2) fractions of the input (0..1), 0 where unlabelled
    mask: np.ndarray  # bool (N,)
    present: float  # 1.0 when a face is in the crop, 0.0 for a negative
    matrix: np.ndarray  # 3x3 frame -> input pixels (for mapping predictions back)


def base_matrix(
    pts: np.ndarray,
    mask: np.ndarray,
    schema: Schema,
    out_size: tuple[int, int],
    mode: str,
    crop_scale: float,
    crop_rotate: bool,
    image_shape: tuple[int, int],
) -> np.ndarray:
    """3x3 frame -> input pixels before any jitter.

    mode 'crop': the runtime's crop convention (square around the points); 'full': the whole
    image resized to the input size (the classic IMM and Kaggle set-ups).
    """
    w, h = out_size
    if mode == "full":
        ih, iw = image_shape
        return np.array([[w / iw, 0, 0], [0, h / ih, 0], [0, 0, 1.0]])
    crop = crop_from_points(pts, schema, crop_scale, crop_rotate, mask=mask)
    return to3(crop.matrix(w))


def make_example(
    image: np.ndarray,
    pts: np.ndarray,
    mask: np.ndarray,
    schema: Schema,
    out_size: tuple[int, int],
    rng: np.random.Generator,
    cfg: AugmentConfig,
    mode: str = "crop",
    crop_scale: float = 1.3,
    crop_rotate: bool = True,
    crop_pts: np.ndarray | None = None,
) -> Example:
    """One training (or evaluation, with NO_AUGMENT) example from a labelled image; the crop is
    made from `crop_pts` (image pixels, the labelled ones used) when given, else from `pts`."""
    w, h = out_size
    mask = np.asarray(mask, bool)
    pts = np.where(mask[:, None], pts, 0).astype(np.float32)
    m = base_matrix(pts if crop_pts is None else np.asarray(crop_pts, np.float32), mask, schema, out_size,
                    mode, crop_scale, crop_rotate, image.shape[:2])
    present = 1.0
    centre = ((w - 1) / 2, (h - 1) / 2)
    angle = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if cfg.rotate_deg else 0.0
    lo, hi = cfg.scale
    scale = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
    shift = rng.normal(0, cfg.shift, size=2) * np.array([w, h]) if cfg.shift else np.zeros(2)
    if cfg.negative and rng.random() < cfg.negative:
        # a crop that holds no face, or only a sliver of one: the presence head learns "lost"
        present = 0.0
        direction = rng.uniform(0, 2 * math.pi)
        dist = rng.uniform(0.55, 1.0)
        shift = np.array([math.cos(direction) * w, math.sin(direction) * h]) * dist
        scale = math.exp(rng.uniform(math.log(0.4), math.log(2.0)))
    # scale > 1 zooms out (the crop covers more), so the image shrinks by 1/scale
    jitter = affine_about(centre, angle, 1.0 / scale, tuple(shift))
    m = jitter @ m
    new_pts = transform_points(m, pts)
    new_mask = mask.copy()
    if cfg.flip and rng.random() < cfg.flip:
        m = flip_matrix(w) @ m
        new_pts, new_mask = flip_points(new_pts, new_mask, schema, w, cfg.flip_shift)
    out = cv2.warpAffine(image, m[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    out = photometric(out, cfg, rng)
    if present == 0.0:
        new_mask = np.zeros_like(new_mask)
    frac = new_pts / np.array([w, h], np.float32)
    frac = np.where(new_mask[:, None], frac, 0).astype(np.float32)
    return Example(out, frac, new_mask, present, m)
