"""Face morphing on the 68 iBUG points: offline morphs, mean faces, caricatures, and a live morph.

One piecewise-affine warp serves every use. A face's 68 points get 6 forehead points (above the
brows, so the forehead moves with the face) and, for whole pictures, 8 boundary points (corners
and edge midpoints). The mesh is triangulated ONCE (Delaunay on the mean shape, with the inner lips
held apart so an opening mouth never folds a triangle) and kept as index triples, so the same
triangles are used for every shape. A warp rasterises the destination triangles' ids into an index
map over the region it fills (`cv2.fillConvexPoly`), turns each pixel's triangle into affine
coefficients (one table look-up), and samples the source with a single `cv2.remap`: no Python loop
over pixels or per-triangle full-frame warps.

    >>> import numpy as np
    >>> img = np.zeros((64, 64, 3), np.uint8)
    >>> shape = np.array([[8., 8.], [56., 8.], [32., 56.], [0., 0.], [63., 0.], [63., 63.], [0., 63.]])
    >>> tris = delaunay(shape)
    >>> warp(img, shape, shape, tris).shape
    (64, 64, 3)

Offline: `Morph(subjects)` (a sequence A -> B -> C ..., or one picture at `warp_frac` /
`dissolve_frac`), `caricature()`, `average()`. Live: `LiveMorph(target, points, schema, alpha)` is
an engine overlay, `overlay(frame, faces) -> Frame`. `benchmark()` / `python -m
fkp_live.render.morph --bench VIDEO TARGET` measures it through `engine.run` with an MP4 written.
"""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..frame import Frame, to_bgr

# iBUG 68 (0-based): jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67
N_POINTS = 68
JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
EYE_CORNERS = (36, 45)  # outer corners, image-left then image-right
INNER_MOUTH = tuple(range(60, 68))
# brow points the forehead points are lifted from, and how high (in units of the forehead height)
FOREHEAD_FROM = (17, 19, 21, 22, 24, 26)
FOREHEAD_LIFT = (0.65, 0.9, 1.0, 1.0, 0.9, 0.65)
FOREHEAD_OUT = (0.12, 0.0, 0.0, 0.0, 0.0, 0.12)  # and how far out (eye distances), over the temples
N_FOREHEAD = len(FOREHEAD_FROM)
FOREHEAD_HEIGHT = 0.6  # forehead height, in outer-eye-corner distances above the brows
N_FACE = N_POINTS + N_FOREHEAD  # a face's mesh points (the live morph's mesh)
N_BOUNDARY = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class MorphError(Exception):
    """Bad input for a morph: the message names the file or option and what to do."""


# ----------------------------------------------------------------------------------------------
# points in and out
def load_image(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read an image as BGR uint8, or raise MorphError naming the file."""
    p = Path(path)
    if not p.exists():
        raise MorphError(f"{what} {p} does not exist")
    if p.is_dir():
        raise MorphError(f"{what} {p} is a folder, not an image")
    data = np.fromfile(str(p), np.uint8) if p.stat().st_size else np.zeros(0, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise MorphError(f"cannot read {what} {p}: not an image OpenCV can decode")
    try:
        return to_bgr(img)
    except ValueError as e:
        raise MorphError(f"cannot read {what} {p}: {e}") from None


def read_pts(path: str | os.PathLike) -> np.ndarray:
    """A 300-W .pts file (1-based pixel coordinates) -> (N, 2) float64, 0-based pixel centres."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise MorphError(f"cannot read points file {p}: {e.strerror or e}") from None
    if "{" not in text or "}" not in text:
        raise MorphError(f"{p} is not a .pts file (expected 'n_points: N', then the points between {{ and }})")
    body = text[text.index("{") + 1:text.rindex("}")]
    try:
        pts = np.array([[float(v) for v in line.split()[:2]] for line in body.splitlines() if line.strip()])
    except ValueError:
        raise MorphError(f"{p}: a point line is not two numbers") from None
    n_decl = None
    for line in text[:text.index("{")].splitlines():
        if line.strip().lower().startswith("n_points"):
            try:
                n_decl = int(line.split(":", 1)[1])
            except (IndexError, ValueError):
                raise MorphError(f"{p}: bad n_points line {line.strip()!r}") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or (n_decl is not None and len(pts) != n_decl):
        raise MorphError(f"{p}: {len(pts)} points between the braces, n_points says {n_decl}")
    return pts - 1.0


def read_csv_points(path: str | os.PathLike, image_name: str | None = None, face: int | None = None) -> np.ndarray:
    """68 points from a CSV written by `fkp-live --csv` (columns frame,timestamp,face_id,confidence,
    success,x_0..x_67,y_0..y_67[,source]).

    The row used: among rows with success 1, those whose `source` names `image_name` (when the
    file has a source column and such rows), else all of them; of those, the first frame's, and
    in that frame face number `face` (in file order; default the first).
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise MorphError(f"cannot read points file {p}: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise MorphError(f"cannot read points file {p} as CSV: {e}") from None
    if not rows or "x_0" not in rows[0] or "y_0" not in rows[0]:
        raise MorphError(f"{p} is not a CSV written by fkp-live --csv (no x_0, y_0 columns)")
    n = sum(1 for k in rows[0] if k and k.startswith("x_"))
    good = [r for r in rows if (r.get("success") or "").strip() == "1"]
    if image_name and "source" in rows[0]:
        mine = [r for r in good if Path(r.get("source") or "").name == Path(image_name).name]
        good = mine or good
    if not good:
        raise MorphError(f"{p} has no row with a face (success 1)")
    first = good[0].get("frame")
    frame_rows = [r for r in good if r.get("frame") == first]
    k = 0 if face is None else face
    if not 0 <= k < len(frame_rows):
        raise MorphError(f"{p}: frame {first} has {len(frame_rows)} face(s); face {k} is not one of them")
    r = frame_rows[k]
    try:
        pts = np.array([[float(r[f"x_{i}"]), float(r[f"y_{i}"])] for i in range(n)])
    except (KeyError, TypeError, ValueError):
        raise MorphError(f"{p}: row of frame {first} has missing or bad coordinates") from None
    return pts


def read_points(path: str | os.PathLike, image_name: str | None = None, face: int | None = None) -> np.ndarray:
    """Points for one image from a 300-W .pts file or an fkp-live CSV: (68, 2), 0-based pixels."""
    p = Path(path)
    if not p.exists():
        raise MorphError(f"points file {p} does not exist")
    if p.suffix.lower() == ".csv":
        pts = read_csv_points(p, image_name, face)
    elif p.suffix.lower() == ".pts":
        pts = read_pts(p)
    else:
        raise MorphError(f"points file {p}: give a 300-W .pts file or a CSV written by fkp-live --csv")
    check_points(pts, str(p))
    return pts


def check_points(pts: np.ndarray, where: str) -> np.ndarray:
    pts = np.asarray(pts, np.float64)
    if pts.shape != (N_POINTS, 2):
        raise MorphError(f"{where}: morphing needs the 68 iBUG points, got {pts.shape[0] if pts.ndim else 0}")
    if not np.isfinite(pts).all():
        raise MorphError(f"{where}: some points are missing (not finite)")
    return pts


def save_mean(path: str | os.PathLike, points: np.ndarray, size: tuple[int, int], files=()) -> None:
    """The mean shape as JSON: 68 points in the pixels of a picture of `size` (w, h)."""
    head = {"format": "fkp-live mean shape", "schema": "ibug68", "size": [int(size[0]), int(size[1])],
            "faces": len(files)}
    pts = ",\n  ".join(json.dumps([round(float(x), 3), round(float(y), 3)]) for x, y in np.asarray(points))
    text = (json.dumps(head)[:-1] + ',\n "points": [\n  ' + pts + "\n ],\n"
            + ' "files": ' + json.dumps([str(f) for f in files]) + "\n}\n")
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as e:
        raise MorphError(f"cannot write mean shape {path}: {e.strerror or e}") from None


def load_mean(path: str | os.PathLike) -> np.ndarray:
    """The 68 points of a mean shape written by `save_mean` (`fkp-live average`)."""
    p = Path(path)
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
        pts = np.asarray(rec["points"], np.float64)
    except OSError as e:
        raise MorphError(f"cannot read mean shape {p}: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError):
        raise MorphError(f"{p} is not a mean shape written by fkp-live average (JSON with 'points')") from None
    return check_points(pts, str(p))


# ----------------------------------------------------------------------------------------------
# geometry
def forehead_points(p68: np.ndarray) -> np.ndarray:
    """(6, 2) points above the brows, the outer two over the temples, from the 68 points.

    "Up" is perpendicular to the line through the outer eye corners, pointing away from the mouth;
    the forehead's height is FOREHEAD_HEIGHT eye-corner distances, so it scales, rolls and nods with
    the face."""
    p = np.asarray(p68, np.float64)
    e = p[EYE_CORNERS[1]] - p[EYE_CORNERS[0]]
    d = max(float(np.hypot(*e)), 1e-6)
    up = np.array([e[1], -e[0]]) / d
    if np.dot(up, p[list(BROWS)].mean(0) - p[48:68].mean(0)) < 0:
        up = -up
    h = FOREHEAD_HEIGHT * d
    side = e / d  # image-left to image-right along the eyes
    sign = np.array([-1, 0, 0, 0, 0, 1])
    lift = np.asarray(FOREHEAD_LIFT)[:, None] * h * up
    out_ = (np.asarray(FOREHEAD_OUT) * sign)[:, None] * d * side
    return p[list(FOREHEAD_FROM)] + lift + out_


def boundary_points(w: int, h: int) -> np.ndarray:
    """Corners and edge midpoints of a w x h picture (pixel centres), clockwise from top-left."""
    x1, y1 = w - 1.0, h - 1.0
    return np.array([[0, 0], [x1 / 2, 0], [x1, 0], [x1, y1 / 2], [x1, y1], [x1 / 2, y1], [0, y1], [0, y1 / 2]])


def face_shape(p68: np.ndarray) -> np.ndarray:
    """68 points + forehead: (N_FACE, 2), the live morph's mesh points."""
    p = np.asarray(p68, np.float64)
    return np.vstack([p, forehead_points(p)])


def picture_shape(p68: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """68 points + forehead + boundary of a picture of `size` (w, h): (N_FACE + 8, 2).
    Forehead points are kept one pixel inside the picture, so the mesh covers it exactly."""
    w, h = size
    f = face_shape(p68)
    f[N_POINTS:, 0] = np.clip(f[N_POINTS:, 0], 1, w - 2)
    f[N_POINTS:, 1] = np.clip(f[N_POINTS:, 1], 1, h - 2)
    return np.vstack([f, boundary_points(w, h)])


def triangulation_shape(shape: np.ndarray) -> np.ndarray:
    """The shape the mesh is chosen on: the inner lips held apart (mouth half open), so the mouth's
    triangles exist and keep their orientation whether a mouth is open or closed."""
    s = np.array(shape, np.float64, copy=True)
    for upper_in, upper_out, lower_in, lower_out in ((61, 50, 67, 58), (62, 51, 66, 57), (63, 52, 65, 56)):
        mid = (s[upper_out] + s[lower_out]) / 2
        s[upper_in] = mid + 0.3 * (s[upper_out] - mid)
        s[lower_in] = mid + 0.3 * (s[lower_out] - mid)
    return s


def signed_areas(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Twice the signed area of each triangle (positive: the mesh's own orientation)."""
    a, b, c = (points[tris[:, k]] for k in range(3))
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def delaunay(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of `points` as (M, 3) int32 index triples, all of positive signed area.

    Points that coincide are merged (the later one is in no triangle); collinear triples are dropped."""
    pts = np.asarray(points, np.float64)
    lo, hi = pts.min(0), pts.max(0)
    span = float(max(hi - lo)) + 1.0
    # Subdiv2D works in float32 and wants every point strictly inside its rectangle
    origin = lo - 1.0
    q = (pts - origin).astype(np.float32)
    sub = cv2.Subdiv2D((0, 0, int(math.ceil(span)) + 3, int(math.ceil(span)) + 3))
    for x, y in q:
        sub.insert((float(x), float(y)))
    tri_xy = sub.getTriangleList().reshape(-1, 3, 2).astype(np.float64)
    out = []
    for t in tri_xy:
        d = np.linalg.norm(q[None, :, :] - t[:, None, :], axis=2)  # (3, N)
        idx = d.argmin(1)
        if (d[np.arange(3), idx] > 1e-2).any() or len(set(idx.tolist())) < 3:
            continue  # a corner of Subdiv2D's outer triangle
        out.append(idx)
    tris = np.array(out, np.int32).reshape(-1, 3)
    area = signed_areas(pts, tris)
    tris[area < 0] = tris[area < 0][:, [0, 2, 1]]
    keep = np.abs(area) > 1e-9 * span * span
    return np.ascontiguousarray(_fill_to_hull(pts, tris[keep]))


def _fill_to_hull(pts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Add the thin triangles Subdiv2D leaves out along the convex hull (its virtual outer vertices
    sit at a finite distance, so a near-flat triangle on the hull loses to them): while the mesh's
    outline turns inwards at a vertex and the triangle across that dent holds no other point,
    fill it. Afterwards the triangles cover the convex hull of the points."""
    tris = [tuple(int(v) for v in t) for t in tris]
    used = sorted({v for t in tris for v in t})
    for _ in range(4 * len(pts)):
        edges = {(t[k], t[(k + 1) % 3]) for t in tris for k in range(3)}
        boundary = [(i, j) for i, j in edges if (j, i) not in edges]
        nxt: dict[int, int] = {}
        for i, j in boundary:
            if i in nxt:  # the outline touches itself: leave it
                return np.array(tris, np.int32)
            nxt[i] = j
        added = False
        for i, j in boundary:
            k = nxt.get(j)
            if k is None or k == i:
                continue
            a, b, c = pts[i], pts[j], pts[k]
            turn = (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0])
            scale = max(float(np.hypot(*(b - a)) * np.hypot(*(c - b))), 1e-12)
            if turn >= -1e-12 * scale:
                continue  # convex or straight: not a dent
            # no other point inside the triangle (i, k, j)
            tri = np.array([a, c, b])
            others = [v for v in used if v not in (i, j, k)]
            if others and _inside(tri, pts[others]).any():
                continue
            tris.append((i, k, j))
            added = True
            break
        if not added:
            break
    return np.array(tris, np.int32)


def _inside(tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Which points lie strictly inside a positively oriented triangle."""
    out = np.ones(len(p), bool)
    for k in range(3):
        a, b = tri[k], tri[(k + 1) % 3]
        out &= (b[0] - a[0]) * (p[:, 1] - a[1]) - (b[1] - a[1]) * (p[:, 0] - a[0]) > 1e-12
    return out


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation) taking src to dst: 2x3.
    With two points it is exact."""
    s = np.asarray(src, np.float64)
    d = np.asarray(dst, np.float64)
    ms, md = s.mean(0), d.mean(0)
    s0, d0 = s - ms, d - md
    den = float((s0 ** 2).sum())
    if den < 1e-12:
        raise ValueError("similarity: the source points coincide")
    a = float((s0 * d0).sum()) / den
    b = float((s0[:, 0] * d0[:, 1] - s0[:, 1] * d0[:, 0]).sum()) / den
    r = np.array([[a, -b], [b, a]])
    return np.hstack([r, (md - r @ ms)[:, None]])


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


# ----------------------------------------------------------------------------------------------
# the warp
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


# ----------------------------------------------------------------------------------------------
# finding faces
def find_faces(image: np.ndarray, tracker) -> list:
    """Every face in a still picture, numbered left to right (by the middle of its box)."""
    faces = tracker.track(Frame(0, None, image), still=True).faces
    return sorted(faces, key=lambda f: (f.box[0] + f.box[2]) / 2)


def face_points(image: np.ndarray, tracker, name: str, face: int | None = None) -> np.ndarray:
    """The 68 points of one face of a still: the largest (default) or number `face` from the left."""
    if getattr(tracker, "schema", None) is not None and tracker.schema.n != N_POINTS:
        raise MorphError(f"morphing needs a 68-point iBUG model; {tracker.schema.name} has {tracker.schema.n} points")
    faces = find_faces(image, tracker)
    if not faces:
        raise MorphError(f"no face found in {name}; give its points with --points FILE.pts, or try a larger, "
                         "frontal face")
    if face is None:
        f = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    elif 0 <= face < len(faces):
        f = faces[face]
    else:
        raise MorphError(f"{name} has {len(faces)} face(s), numbered 0 to {len(faces) - 1} from the left; "
                         f"--face {face} is not one of them")
    return np.asarray(f.points, np.float64)


# ----------------------------------------------------------------------------------------------
# offline: morph sequences, single pictures, caricatures, mean faces
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


# ----------------------------------------------------------------------------------------------
# live
# OpenCV's BGR -> YCrCb (8-bit, chroma offset 128): ycc = _YCC @ bgr + (0, 128, 128)
_YCC = np.array([[0.114, 0.587, 0.299], [-0.081312, -0.418688, 0.5], [0.5, -0.331264, -0.168736]])
_YCC_INV = np.linalg.inv(_YCC)


def colour_matrix(src_stats, dst_stats, limit=(1.5, 1.25, 1.25)) -> np.ndarray:
    """A 3x4 BGR -> BGR matrix that gives pixels with YCrCb mean/std `src_stats` the mean/std
    `dst_stats` (each a pair of 3-vectors, as `cv2.meanStdDev` of a YCrCb image gives them).
    YCrCb (luma and two chroma channels) is linear in BGR, so the whole transfer is one matrix
    applied with `cv2.transform` (Lab's two conversions alone cost ~1.8 ms a face on this machine).
    The gain per channel is kept within 1/limit..limit (luma, Cr, Cb): contrast may follow the live
    face, but chroma is mostly shifted, not stretched (stretching it turns highlights blue)."""
    ms, ss = (np.asarray(v, np.float64).ravel() for v in src_stats)
    md, sd = (np.asarray(v, np.float64).ravel() for v in dst_stats)
    lim = np.broadcast_to(np.asarray(limit, np.float64), (3,))
    g = np.clip((sd + 1.0) / (ss + 1.0), 1.0 / lim, lim)
    # ycc' = g (ycc - ms) + md, the chroma offsets cancel:  bgr' = Y^-1 diag(g) Y bgr + Y^-1 (md - g ms) - ...
    lin = _YCC_INV @ np.diag(g) @ _YCC
    off = _YCC_INV @ ((md - g * ms) - (1 - g) * np.array([0.0, 128.0, 128.0]))
    return np.hstack([lin, off[:, None]]).astype(np.float32)


class LiveMorph:
    """An engine overlay: every tracked face is redrawn as the target face warped to its shape,
    colour-matched to it, and blended in by `alpha` through a feathered mask.

    alpha 1: the target's face moving with yours; alpha 0: the frame unchanged, pixel for pixel.
    The mesh (68 points + forehead) is triangulated once, on the target's shape with the lips held
    apart, so triangles never flip from frame to frame; a face turned so far that its triangles
    fold is faded out (see `fade`). Per face and frame the
    work is limited to the face's box: an id map of the triangles at half resolution, the dense
    map from it (one remap), a colour transfer (mean/std in YCrCb over the face), and one blend.
    `keep_mouth`: the live mouth's inside (teeth, tongue) shows through instead of stretched lips.
    """

    def __init__(self, target_image: np.ndarray, target_points: np.ndarray, schema=None, alpha: float = 0.5,
                 colour: bool = True, keep_mouth: bool = True, feather: float = 0.12, step: int = 2,
                 fold_start: float = 0.006, fold_limit: float = 0.02):
        n = getattr(schema, "n", N_POINTS) if schema is not None and not isinstance(schema, str) else N_POINTS
        name = getattr(schema, "name", schema) or "ibug68"
        if n != N_POINTS or (isinstance(schema, str) and schema != "ibug68"):
            raise MorphError(f"the live morph needs the 68 iBUG points; the model's scheme is {name}")
        self.target = to_bgr(np.asarray(target_image))
        self.target_points = check_points(target_points, "target points")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be within 0..1, not {alpha}")
        self.alpha = float(alpha)
        self.colour = bool(colour)
        self.keep_mouth = bool(keep_mouth)
        self.feather = float(feather)
        self.step = int(step)
        self.fold_start, self.fold_limit = float(fold_start), float(fold_limit)
        self.mask_top = 0.25  # the mask reaches this share of the way from the brows to the forehead points
        self.src = face_shape(self.target_points)
        self.tris = delaunay(triangulation_shape(self.src))
        self.last_fade: list[float] = []  # per face of the last frame: the fold fade applied (1 = none)

    @classmethod
    def from_file(cls, path: str | os.PathLike, tracker, alpha: float = 0.5, face: int | None = None,
                  **kw) -> "LiveMorph":
        """Read the target picture and find its face's points once (the largest face, or number
        `face` from the left), with the tracker the run uses."""
        img = load_image(path, "--morph-to image")
        pts = face_points(img, tracker, str(path), face)
        tracker.reset()
        return cls(img, pts, getattr(tracker, "schema", None), alpha, **kw)

    def __call__(self, frame: Frame, faces) -> Frame:
        return frame.with_image(self.apply(frame.image, [f.points for f in faces]))

    def apply(self, image: np.ndarray, faces_points) -> np.ndarray:
        """A new picture: `image` with each face (68 points each) morphed; `image` is not changed."""
        out = image.copy()
        self.last_fade = []
        if self.alpha == 0:
            return out
        for p in faces_points:
            self.last_fade.append(self._face(out, np.asarray(p, np.float64)))
        return out

    def fade(self, shape: np.ndarray) -> float:
        """1 for a face whose mesh is not folded, falling smoothly to 0 as the folded share of its
        area goes from `fold_start` to `fold_limit` (talking heads stay below 0.7 %; faces turned
        towards profile on 300-W fold 1-2.5 %)."""
        if self.fold_limit <= 0:
            return 1.0
        f = fold_fraction(shape, self.tris)
        t = min(max((f - self.fold_start) / max(self.fold_limit - self.fold_start, 1e-9), 0.0), 1.0)
        return 1.0 - t * t * (3.0 - 2.0 * t)

    def _face(self, out: np.ndarray, p68: np.ndarray) -> float:
        """Morph one face into `out` (in place, within its box); returns the fold fade used."""
        H, W = out.shape[:2]
        dst = face_shape(p68)
        if not np.isfinite(dst).all():
            return 0.0
        fade = self.fade(dst)
        a = self.alpha * fade
        if a <= 0:
            return fade
        st = self.step
        # only the mask's box is touched: jaw and lower forehead (the mesh reaches higher, so every
        # pixel of the box that the mask covers has a triangle)
        top = p68[list(FOREHEAD_FROM)] + self.mask_top * (dst[N_POINTS:N_POINTS + 6] - p68[list(FOREHEAD_FROM)])
        poly = np.vstack([p68[list(JAW)], top[::-1]])
        lo, hi = poly.min(0), poly.max(0)
        x0, x1 = _span(int(lo[0]) - st, int(hi[0]) + st + 2, W, st)
        y0, y1 = _span(int(lo[1]) - st, int(hi[1]) + st + 2, H, st)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return fade
        box = (x0, y0, x1 - x0, y1 - y0)
        mx, my, ids = warp_maps(self.src, dst, self.tris, box, st, fill_gaps=True)
        warped = cv2.remap(self.target, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        roi = out[y0:y1, x0:x1]
        # the mask, on the coarse grid: jaw and lower forehead, minus the live mouth's inside
        gh, gw = ids.shape
        off = np.array([x0 + (st - 1) / 2.0, y0 + (st - 1) / 2.0])
        k = 16.0 / st
        mask = np.zeros((gh, gw), np.uint8)
        cv2.fillPoly(mask, [np.round((poly - off) * k).astype(np.int32)], 255, cv2.LINE_8, 4)
        if self.keep_mouth:
            cv2.fillPoly(mask, [np.round((p68[list(INNER_MOUTH)] - off) * k).astype(np.int32)], 0, cv2.LINE_8, 4)
        # feather: 0 on the mask's edge rising smoothly to 1 at `feather` eye distances inside
        eye = float(np.hypot(*(p68[EYE_CORNERS[1]] - p68[EYE_CORNERS[0]])))
        depth = max(self.feather * eye / st, 1.0)
        dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        ramp = np.clip((dist - 1.0) * (1.0 / depth), 0.0, 1.0)  # the outermost ring of samples is 0
        ramp = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep
        weight = cv2.resize(ramp, (box[2], box[3]), interpolation=cv2.INTER_LINEAR)
        weight *= a
        if self.colour:
            # match the target's face to the live one: YCrCb mean/std over the same (coarse) region
            small_w = cv2.resize(warped, (gw, gh), interpolation=cv2.INTER_NEAREST)
            small_f = cv2.resize(roi, (gw, gh), interpolation=cv2.INTER_NEAREST)
            if cv2.countNonZero(mask) >= 16:
                sw = cv2.meanStdDev(cv2.cvtColor(small_w, cv2.COLOR_BGR2YCrCb), mask=mask)
                sf = cv2.meanStdDev(cv2.cvtColor(small_f, cv2.COLOR_BGR2YCrCb), mask=mask)
                warped = cv2.transform(warped, colour_matrix(sw, sf))
        roi[:] = cv2.blendLinear(warped, roi, weight, 1.0 - weight)
        return fade


def _span(a: int, b: int, n: int, step: int) -> tuple[int, int]:
    """[a, b) clipped to [0, n) with a length that is a multiple of `step` (so the coarse grid
    scales up by exactly `step`), grown where there is room, else shrunk."""
    a, b = max(a, 0), min(b, n)
    r = (-(b - a)) % step
    if r:
        grow = min(r, n - b)
        b += grow
        a -= min(r - grow, a)
        b -= (b - a) % step
    return a, b


# ----------------------------------------------------------------------------------------------
# benchmark
class _Frames:
    """Frames held in memory, replayed as a source."""

    still = False
    live = False
    path = None

    def __init__(self, images, fps=30.0, n=None):
        self.images, self.fps = list(images), fps
        self.length = n or len(self.images)
        self.name = "frames"

    def __iter__(self):
        for i in range(self.length):
            yield Frame(i, i / self.fps, self.images[i % len(self.images)])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def benchmark(source, target_path: str | os.PathLike, frames: int | None = None, rounds: int = 2,
              alpha: float = 0.5, tracker=None) -> dict:
    """Tracker-only fps and tracker + live morph fps on the same frames, through `engine.run`, each
    with an H.264 MP4 written (`Mp4Sink`, to a temporary file). The two runs alternate `rounds`
    times, so a load that changes meanwhile hurts both alike; the best round of each is reported,
    with the morph's ms per frame (the engine's draw stage) and the load average.

    source: a video path (decoded in every run, as `fkp-live --video` does; at most `frames`
    frames) or a list of BGR images (replayed from memory, `frames` of them, default all once)."""
    from ..engine import run
    from ..io.mp4 import Mp4Sink
    from ..io.sources import VideoSource
    from ..track.tracker import Tracker

    if isinstance(source, (str, os.PathLike)):
        def open_source():
            return VideoSource(source)
        with open_source() as probe:
            fps, name = probe.fps or 30.0, Path(source).name
    else:
        images = [to_bgr(np.asarray(x)) for x in source]
        if not images:
            raise MorphError("benchmark: no frames given")
        fps, name = 30.0, "frames"

        def open_source():
            return _Frames(images, fps, frames)
    own = tracker is None
    tracker = tracker or Tracker(device="cpu")
    try:
        morph = LiveMorph.from_file(target_path, tracker, alpha)
        best: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                for kind in ("tracker", "morph"):
                    tracker.reset()
                    with open_source() as src, Mp4Sink(os.path.join(tmp, f"{kind}{r}.mp4"), fps=fps) as sink:
                        res = run(src, tracker, [sink], overlay=morph if kind == "morph" else None,
                                  max_frames=frames)
                    if kind not in best or res.fps > best[kind].fps:
                        best[kind] = res
    finally:
        if own:
            tracker.close()
    m, t = best["morph"], best["tracker"]
    ms = m.ms_per_frame()
    size = getattr(m, "size", None)
    return {"source": name, "frames": m.frames, "faces_per_frame": round(m.faces / max(m.frames, 1), 2),
            "tracker_fps": round(t.fps, 1), "morph_fps": round(m.fps, 1), "morph_ms": round(ms.get("draw", 0.0), 2),
            "tracker_stages_ms": {k: round(v, 2) for k, v in t.ms_per_frame().items()},
            "morph_stages_ms": {k: round(v, 2) for k, v in ms.items()},
            "load_average": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()} | ({"size": size} if size else {})


def _main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fkp_live.render.morph",
                                 description="Benchmark the live morph: tracker-only vs tracker + morph, MP4 written.")
    ap.add_argument("--bench", nargs=2, metavar=("VIDEO", "TARGET"), required=True)
    ap.add_argument("--frames", type=int, default=None, help="at most this many frames (default: all)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.5)
    a = ap.parse_args(argv)
    r = benchmark(a.bench[0], a.bench[1], a.frames, a.rounds, a.alpha)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
