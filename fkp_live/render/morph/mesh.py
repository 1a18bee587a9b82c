"""The morph's mesh on the 68 iBUG points: forehead and border points, the one triangulation
(Delaunay on a mean shape, inner lips held apart), and the 2D similarity and affine helpers.
"""
from __future__ import annotations

import math

import cv2
import numpy as np



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
