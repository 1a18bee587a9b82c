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
    if not layers:
        return image
    h, w = image.shape[:2]
    # line widths grow with the frame so the overlay stays visible on 4K and readable on 320px
    th = max(1, round(max(h, w) / 640))
    for f in faces:
        col = colour(f.id)
        pts = f.points
        whole = np.round(pts).astype(np.int32)
        if "contours" in layers and schema.lines:
            cv2.polylines(image, [whole[idx] for idx in schema.line_arrays()], False, col, th, cv2.LINE_AA)
        if "points" in layers:
            r, dot = max(1, th), (255, 255, 255) if "contours" in layers else col
            for x, y in whole.tolist():
                cv2.circle(image, (x, y), r, dot, -1, cv2.LINE_AA)
        if "box" in layers:
            x0, y0, x1, y1 = (int(round(v)) for v in f.box)
            cv2.rectangle(image, (x0, y0), (x1, y1), col, th, cv2.LINE_AA)
        if "pose" in layers:
            _draw_pose(image, getattr(f, "analysis", None), th)
        if "ids" in layers:
            x0, y0 = int(round(f.box[0])), int(round(f.box[1]))
            cv2.putText(image, f"{f.id}", (x0, max(y0 - 6 * th, 12 * th)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5 * th, col, th, cv2.LINE_AA)
    if "fps" in layers and fps:
        cv2.putText(image, f"{fps:.0f} fps", (8 * th, 22 * th), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * th,
                    (255, 255, 255), th, cv2.LINE_AA)
    return image


_AXES = (((0, 0, 255), (45.0, 0.0, 0.0)), ((0, 200, 0), (0.0, 45.0, 0.0)), ((255, 80, 0), (0.0, 0.0, -45.0)))


def _draw_pose(image: np.ndarray, analysis, th: int) -> None:
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
        cv2.line(image, o, (int(round(e[0])), int(round(e[1]))), col, th + 1, cv2.LINE_AA)


class Overlay:
    """Draws `layers` for every frame on a copy of it; keeps its own frame-rate estimate for 'fps'.

    copy=False draws on the frame's own picture, for a caller whose source makes a new picture for
    every frame and whose other outputs do not read the undrawn one (a 1920x1080 copy is 0.5-1 ms)."""

    def __init__(self, schema: Schema, layers=DEFAULT_LAYERS, copy: bool = True):
        self.schema = schema
        self.layers = frozenset(layers)
        self.copy = copy
        self._fps: float | None = None
        self._last: float | None = None

    def __call__(self, frame, faces):
        now = time.perf_counter()
        if self._last is not None:
            dt = max(now - self._last, 1e-6)
            self._fps = 1.0 / dt if self._fps is None else 0.9 * self._fps + 0.1 / dt
        self._last = now
        if not self.copy:
            draw(frame.image, faces, self.schema, self.layers, self._fps)
            return frame
        image = frame.image.copy()
        draw(image, faces, self.schema, self.layers, self._fps)
        return frame.with_image(image)
