"""The overlay: keypoints, contours (the schema's lines), face ids, boxes and fps, drawn in place."""
from __future__ import annotations

import cv2
import numpy as np

from ..schemas import Schema

LAYERS = ("points", "contours", "ids", "box", "fps")
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
        if "contours" in layers and schema.lines:
            polys = [np.round(pts[list(line)]).astype(np.int32) for line in schema.lines]
            cv2.polylines(image, polys, False, col, th, cv2.LINE_AA)
        if "points" in layers:
            r = max(1, th)
            for x, y in np.round(pts).astype(np.int32):
                cv2.circle(image, (int(x), int(y)), r, (255, 255, 255) if "contours" in layers else col, -1,
                           cv2.LINE_AA)
        if "box" in layers:
            x0, y0, x1, y1 = (int(round(v)) for v in f.box)
            cv2.rectangle(image, (x0, y0), (x1, y1), col, th, cv2.LINE_AA)
        if "ids" in layers:
            x0, y0 = int(round(f.box[0])), int(round(f.box[1]))
            cv2.putText(image, f"{f.id}", (x0, max(y0 - 6 * th, 12 * th)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5 * th, col, th, cv2.LINE_AA)
    if "fps" in layers and fps:
        cv2.putText(image, f"{fps:.0f} fps", (8 * th, 22 * th), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * th,
                    (255, 255, 255), th, cv2.LINE_AA)
    return image
