"""The per-frame pipeline: detect when needed, crop, one batched inference, smooth.

    from fkp_live import Tracker
    tracker = Tracker()                  # the shipped default model, best device
    for frame in frames:                 # BGR (or grey/BGRA) uint8 images, or sources.Frame
        for face in tracker(frame):
            face.id, face.points, face.confidence

A face is detected on the first frame, whenever a track was lost in the previous frame, and every
`redetect_every` frames while fewer than `max_faces` are tracked (to pick up newcomers). Between
detections each face's next crop comes from its own (smoothed) keypoints, in the crop convention
of the model card.
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..crop import Crop, crop_from_box, crop_from_points, roll_from_eyes
from ..frame import Frame, to_bgr
from .detect import Detection, box_calibration, make_detector
from .landmarker import Landmarker
from .matching import IdPool, Track, iou, match
from .smooth import DEFAULT_STRENGTH, KeypointSmoother

log = logging.getLogger("fkp_live")

STAGES = ("decode", "detect", "crop", "infer", "smooth", "draw", "write")


@dataclass
class Face:
    id: int
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the (smoothed) keypoints
    raw: np.ndarray  # (N, 2) keypoints as the model gave them, frame pixels
    smoothed: np.ndarray  # (N, 2) after smoothing (the raw ones when smoothing is off)
    confidence: float
    crop: Crop  # the crop the keypoints were read from

    @property
    def points(self) -> np.ndarray:
        return self.smoothed


class Timings:
    """Seconds spent per stage, summed over frames; `ms()` gives milliseconds per frame."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.frames = 0

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] += seconds

    def ms(self) -> dict[str, float]:
        n = max(self.frames, 1)
        return {s: 1000.0 * self.total[s] / n for s in STAGES if s in self.total}


class Tracker:
    def __init__(self, model=None, device: str = "auto", threads: int | None = None,
                 detector="auto", redetect_every: int = 30, max_faces: int = 5,
                 smooth: float | None = DEFAULT_STRENGTH, min_confidence: float = 0.5,
                 min_detection_score: float = 0.5, landmarker: Landmarker | None = None):
        if redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, not {redetect_every}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, not {max_faces}")
        self.landmarker = landmarker or Landmarker(model, device, threads)
        self.card = self.landmarker.card
        self.schema = self.landmarker.schema
        self.detector = make_detector(detector, min_detection_score) if isinstance(detector, str) else detector
        self.detector_name = getattr(self.detector, "name", str(detector))
        self.calibration = box_calibration(self.card, self.detector_name)
        self.redetect_every = int(redetect_every)
        self.max_faces = int(max_faces)
        self.smooth = float(smooth or 0.0)
        self.min_confidence = float(min_confidence)
        # a tracked face whose expected detector box overlaps its matched detection less than this is
        # re-anchored on the detection (same id); above 1, every detection re-anchors
        self.reanchor_iou = 0.5
        self.timings = Timings()
        self.tracks: list[Track] = []
        self.ids = IdPool()
        self.events: list[tuple] = []  # what happened in the last frame: (kind, face id, detail)
        self.most_faces_seen = 0  # the largest number of faces one detection found
        self._index = 0
        self._since_detect = 0
        self._need_detect = True
        self._has_eyes = self.schema.ocular is not None

    @property
    def device(self) -> str:
        return self.landmarker.device

    def reset(self, ids: bool = True) -> None:
        """Forget every face (the next frame is detected afresh); `ids` restarts the numbering."""
        self.tracks = []
        self._need_detect = True
        if ids:
            self.ids.reset()

    # ------------------------------------------------------------------------------------------
    def __call__(self, frame: Frame | np.ndarray) -> list[Face]:
        image = frame.image if isinstance(frame, Frame) else to_bgr(frame)
        h, w = image.shape[:2]
        t = self.timings
        self.events = []
        fresh: list[Detection] = []

        n = len(self.tracks)
        detect = (self._need_detect or not n
                  or (self._since_detect >= self.redetect_every and n < self.max_faces))
        if detect:
            t0 = time.perf_counter()
            fresh = self._detect(image)
            t.add("detect", time.perf_counter() - t0)
            self._since_detect = 0
            self._need_detect = False
        self._since_detect += 1

        t0 = time.perf_counter()
        tracks = self.tracks
        crops = [tr.crop for tr in tracks] + [self._crop_from_detection(d) for d in fresh]
        batch = self.landmarker.prepare(image, crops) if crops else None
        t1 = time.perf_counter()
        t.add("crop", t1 - t0)
        if crops:
            uv, conf = self.landmarker.run(batch)
            pts = [c.to_frame(p) for c, p in zip(crops, uv)]
        else:
            pts, conf = [], np.zeros(0)
        t2 = time.perf_counter()
        t.add("infer", t2 - t1)

        kept: list[Track] = []
        for k, (crop, p, c) in enumerate(zip(crops, pts, conf)):
            c = float(c)
            why = self._reject(p, c, w, h)
            if k < len(tracks):
                tr = tracks[k]
                if why:
                    self.events.append(("lost", tr.id, why))
                    self._need_detect = True
                    continue
            else:
                if why:
                    continue
                tr = Track(id=-1, crop=crop, smoother=KeypointSmoother(self.smooth), born=self._index)
            tr.crop, tr.points, tr.confidence = crop, p, c
            kept.append(tr)
        kept = self._deduplicate(kept)
        faces = []
        for tr in kept:
            if tr.id < 0:
                tr.id = self.ids.take()
                self.events.append(("new", tr.id, None))
            tr.age += 1
            seen_in = tr.crop
            scale = self._scale(tr.points, tr.crop)
            tr.smoothed = tr.smoother(tr.points, scale) if self.smooth else tr.points
            # the next crop comes from the smoothed points, not the filter's prediction: a model
            # that leans towards its crop's centre would otherwise keep a stale velocity forever
            tr.crop = crop_from_points(tr.smoothed, self.schema, self.card.crop_scale, self.card.crop_rotate)
            s = tr.smoothed
            faces.append(Face(tr.id, (float(s[:, 0].min()), float(s[:, 1].min()), float(s[:, 0].max()),
                                      float(s[:, 1].max())), tr.points, s, tr.confidence, seen_in))
        self.tracks = kept
        t.add("smooth", time.perf_counter() - t2)
        t.frames += 1
        self._index += 1
        return faces

    # ------------------------------------------------------------------------------------------
    def _detect(self, image: np.ndarray) -> list[Detection]:
        """New faces: detections not matching a tracked face, best first, up to the free slots."""
        dets = sorted(self.detector(image), key=lambda d: -d.score)
        self.most_faces_seen = max(self.most_faces_seen, len(dets))
        if not dets:
            return []
        if self.tracks:
            tboxes = np.array([self._expected_box(tr.crop) for tr in self.tracks])
            dboxes = np.array([d.box for d in dets])
            pairs = match(tboxes, dboxes)
            overlap = iou(tboxes, dboxes)
            for ti, di in pairs:
                # a tracked face that has drifted off its detection is re-anchored on it (same id)
                if overlap[ti, di] < self.reanchor_iou:
                    self.tracks[ti].crop = self._crop_from_detection(dets[di])
            taken = {d for _, d in pairs}
            # a detection overlapping a tracked face, even loosely, is that face seen again
            loose = overlap.max(axis=0) > 0.15
            dets = [d for i, d in enumerate(dets) if i not in taken and not loose[i]]
        free = self.max_faces - len(self.tracks)
        if len(dets) > free:
            self.events.append(("crowd", None, len(dets) + len(self.tracks)))
        return dets[:max(free, 0)]

    def _crop_from_detection(self, d: Detection) -> Crop:
        angle = 0.0
        if self.card.crop_rotate and d.eyes is not None:
            angle = roll_from_eyes(d.eyes[0], d.eyes[1])
        return crop_from_box(d.box, self.calibration, angle)

    def _expected_box(self, crop: Crop) -> tuple[float, float, float, float]:
        """The box the detector would give for the face in this crop (crop_from_box inverted)."""
        dx, dy, k = self.calibration
        size = crop.side / k
        c, s = math.cos(crop.angle), math.sin(crop.angle)
        ox, oy = dx * size, dy * size
        bx = crop.cx - (c * ox - s * oy)
        by = crop.cy - (s * ox + c * oy)
        return (bx - size / 2, by - size / 2, bx + size / 2, by + size / 2)

    def _reject(self, pts: np.ndarray, conf: float, w: int, h: int) -> str | None:
        if not conf >= self.min_confidence:  # also catches NaN
            return f"confidence {conf:.2f} < {self.min_confidence:g}"
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        if inside.mean() < 0.5:
            return "left the frame"
        return None

    def _deduplicate(self, tracks: list[Track]) -> list[Track]:
        """Two tracks on one face (a detection a tracked face drifted away from): the older stays."""
        if len(tracks) < 2:
            return tracks
        order = sorted(range(len(tracks)), key=lambda i: (tracks[i].id < 0, tracks[i].born, tracks[i].id))
        boxes = np.array([[*tr.points.min(axis=0), *tr.points.max(axis=0)] for tr in tracks])
        o = iou(boxes, boxes)
        keep: list[int] = []
        for i in order:
            if all(o[i, j] < 0.5 for j in keep):
                keep.append(i)
            elif tracks[i].id >= 0:
                self.events.append(("lost", tracks[i].id, "merged with another face"))
        return [tracks[i] for i in sorted(keep, key=lambda i: order.index(i))]

    def _scale(self, pts: np.ndarray, crop: Crop) -> float:
        if self._has_eyes:
            e = self.schema.ocular_points(pts)
            d = float(np.hypot(*(e[1] - e[0])))
            if d > 1.0:
                return d
        return crop.side / 3.0

    def close(self) -> None:
        close = getattr(self.detector, "close", None)
        if close:
            close()


Pipeline = Tracker
