"""The piecewise-affine warp: destination triangles rasterised into an index map, one affine
coefficient look-up per pixel, one cv2.remap; no Python loop over pixels.
"""
from __future__ import annotations


import cv2
import numpy as np

from .mesh import signed_areas


_FAR = -1.0e5  # where pixels in no triangle look (outside every picture)


def _coefficients(src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """(M, 6) affine maps destination -> source per triangle: sx = c0 x + c1 y + c2, sy = c3 x + c4 y + c5.
    A triangle with no area in the destination covers no pixel: it maps to its source centroid."""
    d0, d1, d2 = (dst[tris[:, k]] for k in range(3))
    s0, s1, s2 = (src[tris[:, k]] for k in range(3))
    e1, e2 = d1 - d0, d2 - d0
    f1, f2 = s1 - s0, s2 - s0
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    ok = np.abs(det) > 1e-9
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    # inverse of E = [e1 e2] (columns): [[e2y, -e2x], [-e1y, e1x]] / det
    i00, i01 = e2[:, 1] * inv, -e2[:, 0] * inv
    i10, i11 = -e1[:, 1] * inv, e1[:, 0] * inv
    a00 = f1[:, 0] * i00 + f2[:, 0] * i10
    a01 = f1[:, 0] * i01 + f2[:, 0] * i11
    a10 = f1[:, 1] * i00 + f2[:, 1] * i10
    a11 = f1[:, 1] * i01 + f2[:, 1] * i11
    cen = (s0 + s1 + s2) / 3
    t0 = np.where(ok, s0[:, 0] - a00 * d0[:, 0] - a01 * d0[:, 1], cen[:, 0])
    t1 = np.where(ok, s0[:, 1] - a10 * d0[:, 0] - a11 * d0[:, 1], cen[:, 1])
    return np.stack([a00, a01, t0, a10, a11, t1], 1)


def triangle_ids(dst: np.ndarray, tris: np.ndarray, box: tuple[int, int, int, int], step: int = 1,
                 fill_gaps: bool = False) -> np.ndarray:
    """Rasterise the destination triangles over `box` (x0, y0, w, h), sampled every `step` pixels
    (sample (i, j) at pixel (x0 + step*j + (step-1)/2, y0 + step*i + (step-1)/2)): each sample holds
    1 + the index of its triangle, 0 where none. uint8 when the mesh has < 255 triangles, else int32.
    `fill_gaps`: samples in no triangle take a neighbour's id (its affine map extrapolates smoothly)."""
    x0, y0, w, h = box
    gw, gh = -(-w // step), -(-h // step)
    ids = np.zeros((gh, gw), np.uint8 if len(tris) < 255 else np.int32)
    off = np.array([x0 + (step - 1) / 2.0, y0 + (step - 1) / 2.0])
    polys = np.round((dst[tris] - off) * (16.0 / step)).astype(np.int32)  # 4 fractional bits
    for t in range(len(tris)):
        cv2.fillConvexPoly(ids, polys[t], t + 1, cv2.LINE_8, 4)
    if fill_gaps and ids.dtype == np.uint8:
        grown = cv2.dilate(ids, np.ones((3, 3), np.uint8))
        np.copyto(ids, grown, where=ids == 0)
    return ids


def warp_maps(src: np.ndarray, dst: np.ndarray, tris: np.ndarray, box: tuple[int, int, int, int],
              step: int = 1, fill_gaps: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense maps for `cv2.remap` over `box`: the destination pixel (x, y) takes the source pixel
    (map_x, map_y), piecewise affine on `tris`. Also returns the triangle id map (at `step`).
    With step > 1 the maps are computed on the coarse grid and interpolated up (the warp is
    continuous, so the error is a fraction of a pixel next to triangle edges)."""
    x0, y0, w, h = box
    ids = triangle_ids(dst, tris, box, step, fill_gaps)
    c = _coefficients(np.asarray(src, np.float64), np.asarray(dst, np.float64), tris)
    ox, oy = x0 + (step - 1) / 2.0, y0 + (step - 1) / 2.0
    # coefficients per grid step, with the box origin folded into the constant
    tab = np.empty((len(tris) + 1, 6), np.float32)
    tab[0] = (0, 0, _FAR, 0, 0, _FAR)
    tab[1:, 0], tab[1:, 1] = c[:, 0] * step, c[:, 1] * step
    tab[1:, 2] = c[:, 0] * ox + c[:, 1] * oy + c[:, 2]
    tab[1:, 3], tab[1:, 4] = c[:, 3] * step, c[:, 4] * step
    tab[1:, 5] = c[:, 3] * ox + c[:, 4] * oy + c[:, 5]
    gh, gw = ids.shape
    gx = np.arange(gw, dtype=np.float32)[None, :]
    gy = np.arange(gh, dtype=np.float32)[:, None]
    if ids.dtype == np.uint8:
        lut_x = np.zeros((256, 1, 3), np.float32)
        lut_y = np.zeros((256, 1, 3), np.float32)
        lut_x[:len(tab), 0] = tab[:, 0:3]
        lut_y[:len(tab), 0] = tab[:, 3:6]
        ids3 = cv2.merge([ids, ids, ids])
        cx, cy = cv2.LUT(ids3, lut_x), cv2.LUT(ids3, lut_y)
        map_x = cx[..., 0] * gx + cx[..., 1] * gy + cx[..., 2]
        map_y = cy[..., 0] * gx + cy[..., 1] * gy + cy[..., 2]
    else:
        map_x = tab[ids, 0] * gx + tab[ids, 1] * gy + tab[ids, 2]
        map_y = tab[ids, 3] * gx + tab[ids, 4] * gy + tab[ids, 5]
    if step > 1:
        map_x = cv2.resize(map_x, (w, h), interpolation=cv2.INTER_LINEAR)
        map_y = cv2.resize(map_y, (w, h), interpolation=cv2.INTER_LINEAR)
    return map_x, map_y, ids


def warp(image: np.ndarray, src: np.ndarray, dst: np.ndarray, tris: np.ndarray,
         size: tuple[int, int] | None = None, border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """`image` (whose points are `src`) warped so its points land on `dst`, in a picture of `size`
    (w, h; default the image's). Pixels in no triangle are filled by `border`."""
    h, w = image.shape[:2]
    size = size or (w, h)
    mx, my, _ = warp_maps(src, dst, tris, (0, 0, size[0], size[1]))
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=border)


def fold_fraction(points: np.ndarray, tris: np.ndarray) -> float:
    """The share of the mesh's area in triangles turned over (negative orientation) in `points`."""
    a = signed_areas(points, tris)
    total = float(np.abs(a).sum())
    return float(-a[a < 0].sum()) / total if total > 0 else 1.0
