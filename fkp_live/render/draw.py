"""The overlay: keypoints, contours (the schema's lines), face ids, boxes, fps and head pose axes.

The `pose` layer draws each face's head axes from its nose tip, when the face carries a pose
(`face.analysis.pose`, see fkp_live.analysis): red along the head's x (to the person's left, image
right when frontal), green along its y (down), blue out of the face (the way it looks); each 45 mm.

`Overlay(schema, layers)(frame, faces)` returns a new frame with the overlay drawn on a copy, so
the decoded frame other sinks read is never touched; `draw()` draws in place on an image.

    >>> import numpy as np
    >>> from fkp_live.frame import Frame
    >>> from fkp_live.schemas import IBUG68
    >>> f = Frame(0, 0.0, np.zeros((64, 64, 3), np.uint8))
    >>> Overlay(IBUG68)(f, []).image is f.image
    False
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from ..io.planes import packed_planes
from ..schemas import Schema

LAYERS = ("points", "contours", "ids", "box", "fps", "pose")
DEFAULT_LAYERS = frozenset({"points", "contours", "ids"})

_COLOURS = [(80, 220, 80), (60, 180, 255), (255, 160, 60), (200, 90, 255), (60, 230, 230), (240, 240, 90)]


def parse_layers(text: str | None) -> frozenset[str]:
    """'points,contours' -> the set; 'none' or '' -> nothing; unknown names raise ValueError."""
    if text is None:
        return DEFAULT_LAYERS
    names = {t.strip().lower() for t in text.split(",") if t.strip()}
    if names <= {"none"}:
        return frozenset()
    if "all" in names:
        return frozenset(LAYERS)
    bad = names - set(LAYERS)
    if bad:
        raise ValueError(f"unknown overlay {', '.join(sorted(bad))}; choose from {','.join(LAYERS)}, all or none")
    return frozenset(names)


def colour(face_id: int) -> tuple[int, int, int]:
    return _COLOURS[face_id % len(_COLOURS)]


def draw(image: np.ndarray, faces, schema: Schema, layers=DEFAULT_LAYERS, fps: float | None = None) -> np.ndarray:
    """Draw onto `image` (BGR uint8, modified in place, and returned)."""
    h, w = image.shape[:2]
    _draw(_Bgr(image), h, w, faces, schema, layers, fps)
    return image


def draw_i420(i420: np.ndarray, faces, schema: Schema, layers=DEFAULT_LAYERS, fps: float | None = None,
              matrix: str = "bt601") -> np.ndarray:
    """Draw onto a limited-range I420 picture ((H * 3 / 2, W) uint8, modified in place, and
    returned) whose colour matrix is `matrix` ("bt601" or "bt709"): the same overlay as `draw` on
    its BGR conversion, drawn on the Y plane at full resolution and on U and V at half, so a
    video's frames need no conversion to BGR and back."""
    h, w = i420.shape[0] * 2 // 3, i420.shape[1]
    _draw(_I420(i420, h, w, matrix), h, w, faces, schema, layers, fps)
    return i420


def _draw(paint, h: int, w: int, faces, schema: Schema, layers, fps: float | None) -> None:
    if not layers:
        return
    # line widths grow with the frame so the overlay stays visible on 4K and readable on 320px
    th = max(1, round(max(h, w) / 640))
    for f in faces:
        col = colour(f.id)
        pts = f.points
        whole = np.round(pts).astype(np.int32)
        if "contours" in layers and schema.lines:
            paint.polylines([whole[idx] for idx in schema.line_arrays()], col, th)
        if "points" in layers:
            paint.dots(whole, max(1, th), (255, 255, 255) if "contours" in layers else col)
        if "box" in layers:
            x0, y0, x1, y1 = (int(round(v)) for v in f.box)
            paint.rectangle((x0, y0), (x1, y1), col, th)
        if "pose" in layers:
            _draw_pose(paint, getattr(f, "analysis", None), th)
        if "ids" in layers:
            x0, y0 = int(round(f.box[0])), int(round(f.box[1]))
            paint.text(f"{f.id}", (x0, max(y0 - 6 * th, 12 * th)), 0.5 * th, col, th)
    if "fps" in layers and fps:
        paint.text(f"{fps:.0f} fps", (8 * th, 22 * th), 0.6 * th, (255, 255, 255), th)


class _Bgr:
    """The overlay's drawing calls on a BGR picture."""

    def __init__(self, image: np.ndarray):
        self.image = image

    def polylines(self, lines, col, th: int) -> None:
        cv2.polylines(self.image, lines, False, col, th, cv2.LINE_AA)

    def dots(self, pts: np.ndarray, r: int, col) -> None:
        image = self.image
        for x, y in pts.tolist():
            cv2.circle(image, (x, y), r, col, -1, cv2.LINE_AA)

    def rectangle(self, p0, p1, col, th: int) -> None:
        cv2.rectangle(self.image, p0, p1, col, th, cv2.LINE_AA)

    def line(self, p0, p1, col, th: int) -> None:
        cv2.line(self.image, p0, p1, col, th, cv2.LINE_AA)

    def text(self, text: str, org, scale: float, col, th: int) -> None:
        cv2.putText(self.image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, col, th, cv2.LINE_AA)


_YUV: dict[tuple, tuple[int, int, int]] = {}


def yuv_of(col: tuple[int, int, int], matrix: str = "bt601") -> tuple[int, int, int]:
    """A BGR colour's limited-range (Y, U, V): BT.601 as OpenCV's BGR -> I420 gives it, or BT.709."""
    key = (col, matrix)
    if key not in _YUV:
        if matrix == "bt709":
            b, g, r = (float(c) for c in col)
            luma = 0.2126 * r + 0.7152 * g + 0.0722 * b
            yuv = (16 + luma * 219 / 255, 128 + (b - luma) / 1.8556 * 224 / 255,
                   128 + (r - luma) / 1.5748 * 224 / 255)
            _YUV[key] = tuple(int(np.clip(round(c), 0, 255)) for c in yuv)
        elif matrix == "bt601":
            i420 = cv2.cvtColor(np.full((2, 2, 3), col, np.uint8), cv2.COLOR_BGR2YUV_I420).ravel()
            _YUV[key] = (int(i420[0]), int(i420[4]), int(i420[5]))
        else:
            raise ValueError(f"unknown colour matrix {matrix!r}; use 'bt601' or 'bt709'")
    return _YUV[key]


class _I420:
    """The same calls on an I420 picture: each drawn on the Y plane, then on U and V at half
    resolution (coordinates halved through OpenCV's fixed-point `shift`, widths halved, rounding
    up), each plane in the colour's own Y, U or V value under the picture's matrix."""

    def __init__(self, i420: np.ndarray, h: int, w: int, matrix: str = "bt601"):
        self.y, *self.uv = packed_planes(i420, h, w)
        self.matrix = matrix

    def polylines(self, lines, col, th: int) -> None:
        y, u, v = yuv_of(col, self.matrix)
        cv2.polylines(self.y, lines, False, y, th, cv2.LINE_AA)
        for plane, c in zip(self.uv, (u, v)):
            cv2.polylines(plane, lines, False, c, _half(th), cv2.LINE_AA, 1)

    def dots(self, pts: np.ndarray, r: int, col) -> None:
        y, u, v = yuv_of(col, self.matrix)
        pl, (pu, pv) = self.y, self.uv
        for x, yy in pts.tolist():
            cv2.circle(pl, (x, yy), r, y, -1, cv2.LINE_AA)
            if r > 1:
                cv2.circle(pu, (x, yy), r, u, -1, cv2.LINE_AA, 1)
                cv2.circle(pv, (x, yy), r, v, -1, cv2.LINE_AA, 1)
        if r == 1:  # a one-pixel dot covers about one chroma sample: set those samples at once
            half = pts // 2
            h, w = pu.shape
            inside = (half[:, 0] >= 0) & (half[:, 0] < w) & (half[:, 1] >= 0) & (half[:, 1] < h)
            hx, hy = half[inside, 0], half[inside, 1]
            pu[hy, hx], pv[hy, hx] = u, v

    def rectangle(self, p0, p1, col, th: int) -> None:
        y, u, v = yuv_of(col, self.matrix)
        cv2.rectangle(self.y, p0, p1, y, th, cv2.LINE_AA)
        for plane, c in zip(self.uv, (u, v)):
            cv2.rectangle(plane, p0, p1, c, _half(th), cv2.LINE_AA, 1)

    def line(self, p0, p1, col, th: int) -> None:
        y, u, v = yuv_of(col, self.matrix)
        cv2.line(self.y, p0, p1, y, th, cv2.LINE_AA)
        for plane, c in zip(self.uv, (u, v)):
            cv2.line(plane, p0, p1, c, _half(th), cv2.LINE_AA, 1)

    def text(self, text: str, org, scale: float, col, th: int) -> None:
        y, u, v = yuv_of(col, self.matrix)
        cv2.putText(self.y, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, y, th, cv2.LINE_AA)
        half = (org[0] // 2, org[1] // 2)  # putText has no shift: its origin and size are halved
        for plane, c in zip(self.uv, (u, v)):
            cv2.putText(plane, text, half, cv2.FONT_HERSHEY_SIMPLEX, scale / 2, c, _half(th), cv2.LINE_AA)


def _half(th: int) -> int:
    return max(1, (th + 1) // 2)


_AXES = (((0, 0, 255), (45.0, 0.0, 0.0)), ((0, 200, 0), (0.0, 45.0, 0.0)), ((255, 80, 0), (0.0, 0.0, -45.0)))


def _draw_pose(paint, analysis, th: int) -> None:
    pose = getattr(analysis, "pose", None)
    if pose is None:
        return
    from ..analysis.pose import face3d

    nose = face3d().nose_tip
    ends = pose.project(np.vstack([nose] + [nose + np.array(d) for _, d in _AXES]))
    if not np.isfinite(ends).all() or np.abs(ends).max() > 1e6:
        return
    o = tuple(int(round(v)) for v in ends[0])
    for (col, _), e in zip(_AXES, ends[1:]):
        paint.line(o, (int(round(e[0])), int(round(e[1]))), col, th + 1)


class Overlay:
    """Draws `layers` for every frame on a copy of it; keeps its own frame-rate estimate for 'fps'.

    copy=False draws on the frame's own picture, for a caller whose source makes a new picture for
    every frame and whose other outputs do not read the undrawn one (a 1920x1080 copy is 0.5-1 ms);
    on its I420 picture while it has no BGR one (`Frame.picture_i420`), which it then never needs
    where the outputs take I420 too (`yuv`: the run engine then has the source leave BGR unmade)."""

    def __init__(self, schema: Schema, layers=DEFAULT_LAYERS, copy: bool = True):
        self.schema = schema
        self.layers = frozenset(layers)
        self.copy = copy
        self._fps: float | None = None
        self._last: float | None = None

    @property
    def yuv(self) -> bool:
        """Whether it draws on a frame's I420 picture as it is (it draws in place)."""
        return not self.copy

    def __call__(self, frame, faces):
        now = time.perf_counter()
        if self._last is not None:
            dt = max(now - self._last, 1e-6)
            self._fps = 1.0 / dt if self._fps is None else 0.9 * self._fps + 0.1 / dt
        self._last = now
        if not self.copy:
            i420 = getattr(frame, "picture_i420", None)
            if i420 is not None:
                draw_i420(i420, faces, self.schema, self.layers, self._fps, frame.yuv_matrix or "bt601")
            else:
                draw(frame.image, faces, self.schema, self.layers, self._fps)
            return frame
        image = frame.image.copy()
        draw(image, faces, self.schema, self.layers, self._fps)
        return frame.with_image(image)
