"""The tracker: detect when needed, crop, one batched inference, smooth; faces keep their ids.

    >>> from fkp_live import Tracker
    >>> from fkp_live.io.sources import DemoSource
    >>> tracker = Tracker(device="cpu")                  # the shipped default model
    >>> for frame in DemoSource(frames=3):               # or BGR/grey/BGRA uint8 arrays
    ...     faces = tracker(frame)
    >>> [(f.id, f.points.shape) for f in faces]
    [(0, (68, 2))]

A face is detected on the first frame, whenever a track was lost in the previous frame, and every
`redetect_every` frames while fewer than `max_faces` are tracked (to pick up newcomers). Between
detections each face's next crop comes from its own (smoothed) keypoints, in the crop convention
of the model card. `track()` also returns what happened (faces found and lost) and the seconds
each stage took, as values: nothing is kept for others to read or reset.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from ..crop import Crop, box_calibration, box_from_crop, crop_from_box, crop_from_points, roll_from_eyes
from ..frame import Frame, to_bgr
from .detect import Detection, make_detector
from .landmarker import WIDE_BATCH, Landmarker
from .matching import IdPool, Track, iou, match
from .smooth import DEFAULT_STRENGTH, KeypointSmoother

TRACK_STAGES = ("detect", "crop", "infer", "smooth", "post")

# A new face's second read (see Tracker.refine) is the mean of two reads of the crop its first points
# give, moved this many model-input pixels one way and the other along the diagonal. On 300-W's
# validation split, end to end, that took the first frame from 3.452 to 3.393 % NME with `fast`
# and from 3.242 to 3.224 % with `accurate`, for one more read per new face. The crop itself read
# as well (three reads) gave 3.373 and 3.214 %, four moved copies and the crop (five) 3.361 and
# 3.205 %, but each read more slows image folders, where every face is new, by about a sixth:
# with `fast`, 164-185 images per second with two reads, 117-143 with three, 90-122 with five
# (199-241 with one). 4 px instead of 3 gave less. Tracked faces are still read once.
REFINE_SHIFT = 3.0


@dataclass
class Face:
    """One face in one frame, in frame pixels.

    `points` are the keypoints to use (smoothed when smoothing is on), `raw` what the model gave,
    `box` (x0, y0, x1, y1) the extent of `points`, `crop` the square the model looked at.

        >>> import numpy as np
        >>> from fkp_live.crop import Crop
        >>> f = Face(0, (0, 0, 1, 1), np.zeros((68, 2)), np.ones((68, 2)), 0.9, Crop(0, 0, 10))
        >>> float(f.points[0, 0])
        1.0
    """

    id: int
    box: tuple[float, float, float, float]
    raw: np.ndarray  # (N, 2) keypoints as the model gave them
    smoothed: np.ndarray  # (N, 2) after smoothing (the raw ones when smoothing is off)
    confidence: float
    crop: Crop
    # (N,) each point's confidence in 0..1 from its heatmap (Tracker(point_confidence=True)), else None
    point_confidence: np.ndarray | None = None

    @property
    def points(self) -> np.ndarray:
        return self.smoothed


class Event(NamedTuple):
    """Something that happened in a frame: kind 'new', 'lost' or 'crowd'."""

    kind: str
    face_id: int | None
    detail: object = None


@dataclass
class Tracked:
    """What `Tracker.track` found in one frame."""

    faces: list[Face]
    events: list[Event] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage of TRACK_STAGES


class Tracker:
    """Faces and keypoints in a stream of frames.

    model: an alias (`fast`, `accurate`), a shipped model's name or an .onnx path with its card;
    device: auto, cpu, cuda or tensorrt; detector: auto, blazeface, blazeface-full, haar or any
    callable image -> list[Detection]; smooth: Kalman strength (0 or None: off);
    point_confidence: each face also carries its points' confidence (a model with that output).
    `tracker(frame)` returns the faces; `tracker.track(frame)` also the events and stage timings.
    """

    def __init__(self, model=None, device: str = "auto", threads: int | None = None,
                 detector="auto", redetect_every: int = 30, max_faces: int = 5,
                 smooth: float | None = DEFAULT_STRENGTH, min_confidence: float = 0.5,
                 min_detection_score: float = 0.5, landmarker: Landmarker | None = None,
                 refine: bool = True, refine_shift: float | None = None, quiet: bool = True,
                 point_confidence: bool = False):
        if redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, not {redetect_every}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, not {max_faces}")
        self.landmarker = landmarker or Landmarker(model, device, threads, quiet=quiet,
                                                   point_confidence=point_confidence)
        self.card = self.landmarker.card
        self.schema = self.landmarker.schema
        self.detector = make_detector(detector, min_detection_score) if isinstance(detector, str) else detector
        self.detector_name = getattr(self.detector, "name", str(detector))
        self.calibration = box_calibration(self.card, self.detector_name)
        self.redetect_every = int(redetect_every)
        self.max_faces = int(max_faces)
        self.smooth = float(smooth or 0.0)
        self.min_confidence = float(min_confidence)
        # a new face is read twice: from the detector's box, then from the crop its points give
        # (the crop tracking uses; moved by refine_shift both ways, see REFINE_SHIFT), so its first
        # frame is as accurate as the ones that follow
        self.refine = bool(refine)
        refine_shift = REFINE_SHIFT if refine_shift is None else refine_shift
        if not refine_shift >= 0:
            raise ValueError(f"refine_shift must be >= 0 model pixels, not {refine_shift}")
        self.refine_shift = float(refine_shift)  # 0: the second read is one crop
        # a tracked face whose expected detector box overlaps its matched detection less than this is
        # re-anchored on the detection (same id); above 1, every detection re-anchors
        self.reanchor_iou = 0.5
        self.tracks: list[Track] = []
        self.ids = IdPool()
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

    def __call__(self, frame: Frame | np.ndarray) -> list[Face]:
        return self.track(frame).faces

    # ------------------------------------------------------------------------------------------
    def track(self, frame: Frame | np.ndarray, still: bool = False) -> Tracked:
        """One frame -> its faces, events and stage seconds.

        `still`: the frame is a picture unrelated to the last one (an image folder): every face is
        detected afresh, nothing is smoothed and no tracking state is kept.
        """
        if not isinstance(frame, Frame):
            frame = Frame(0, None, to_bgr(frame))
        h, w = frame.shape
        events: list[Event] = []
        secs: dict[str, float] = {}
        if still:
            self.reset()
        fresh: list[Detection] = []

        n = len(self.tracks)
        detect = (self._need_detect or not n
                  or (self._since_detect >= self.redetect_every and n < self.max_faces))
        if detect:
            t0 = time.perf_counter()
            fresh = self._detect(frame, events)
            secs["detect"] = time.perf_counter() - t0
            self._since_detect = 0
            self._need_detect = False
        self._since_detect += 1

        t0 = time.perf_counter()
        tracks = self.tracks
        crops = [tr.crop for tr in tracks] + [self._crop_from_detection(d) for d in fresh]
        batch = self.landmarker.prepare_frame(frame, crops) if crops else None
        t1 = time.perf_counter()
        if crops:
            uv, conf, pc = self.landmarker.run_all(batch)
            pts = [c.to_frame(p) for c, p in zip(crops, uv)]
            if fresh and self.refine:
                crops, pts, conf, pc = self._refine(frame, crops, pts, conf, len(tracks), pc)
        else:
            pts, conf, pc = [], np.zeros(0), None
        t2 = time.perf_counter()
        secs["crop"], secs["infer"] = t1 - t0, t2 - t1

        kept = self._deduplicate(self._kept(tracks, crops, pts, conf, w, h, still, events, pc), events)
        faces, smoothing = self._faces(kept, still, events)
        self.tracks = [] if still else kept
        # post: checks, ids, the next frame's crops and the boxes (everything after the model
        # but the smoothing filters themselves)
        secs["smooth"] = smoothing
        secs["post"] = time.perf_counter() - t2 - smoothing
        self._index += 1
        return Tracked(faces, events, secs)

    def _kept(self, tracks, crops, pts, conf, w: int, h: int, still: bool, events, pc) -> list[Track]:
        """The tracks whose points pass the checks (`_reject`), given this frame's crop and points
        (and the points' confidence `pc`, where read):
        the tracked faces first (one that fails is lost: an event, and a detection next frame),
        then new ones (id -1 until `_faces` gives them one)."""
        kept: list[Track] = []
        for k, (crop, p, c) in enumerate(zip(crops, pts, conf)):
            c = float(c)
            why = self._reject(p, c, w, h)
            if k < len(tracks):
                tr = tracks[k]
                if why:
                    events.append(Event("lost", tr.id, why))
                    self._need_detect = True
                    continue
            else:
                if why:
                    continue
                smoother = KeypointSmoother(self.smooth) if self.smooth and not still else None
                tr = Track(id=-1, crop=crop, smoother=smoother, born=self._index)
            tr.crop, tr.points, tr.confidence = crop, p, c
            tr.point_confidence = None if pc is None else pc[k]
            kept.append(tr)
        return kept

    def _faces(self, kept: list[Track], still: bool, events) -> tuple[list[Face], float]:
        """The kept tracks as Faces: new ones get an id, points are smoothed, and each track's next
        crop is set from them. -> (faces, seconds spent in the smoothing filters)."""
        faces = []
        smoothing = 0.0
        for tr in kept:
            if tr.id < 0:
                tr.id = self.ids.take()
                events.append(Event("new", tr.id, None))
            seen_in = tr.crop
            if tr.smoother is not None:
                scale = self._scale(tr.points, tr.crop)
                t3 = time.perf_counter()
                tr.smoothed = tr.smoother(tr.points, scale)
                smoothing += time.perf_counter() - t3
            else:
                tr.smoothed = tr.points
            # the next crop comes from the smoothed points, not the filter's prediction: a model
            # that leans towards its crop's centre would otherwise keep a stale velocity forever
            if not still:
                tr.crop = crop_from_points(tr.smoothed, self.schema, self.card.crop_scale, self.card.crop_rotate)
            s = tr.smoothed
            (x0, y0), (x1, y1) = s.min(axis=0).tolist(), s.max(axis=0).tolist()
            faces.append(Face(tr.id, (x0, y0, x1, y1), tr.points, s, tr.confidence, seen_in,
                              tr.point_confidence))
        return faces, smoothing

    # ------------------------------------------------------------------------------------------
    def read_ahead(self, frame: Frame, still: bool = False) -> dict[str, float]:
        """The work on a frame that does not depend on what is tracked, done before `track`: the
        run engine calls it in its reading thread, so it overlaps the model on the frame before.

        - A 1-channel model on a frame without a Y plane (camera, still pictures, the demo): the
          grey picture (`frame.grey`), from which every face's crop is then cut.
        - Still pictures (`still`), which are detected whatever came before: the detector's faces
          (`frame.detections`). Not for video, whose detection depends on what is tracked.

        Returns the seconds spent, by stage ("grey", "detect")."""
        secs: dict[str, float] = {}
        if not isinstance(frame, Frame):  # a bare picture: `track` makes its Frame
            return secs
        if self.landmarker.card.channels == 1 and frame.luma is None and frame.grey is None:
            t0 = time.perf_counter()
            frame.grey = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
            secs["grey"] = time.perf_counter() - t0
        if still:
            t0 = time.perf_counter()
            frame.detections = self.detector(frame.image)
            secs["detect"] = time.perf_counter() - t0
        return secs

    def _detect(self, frame: Frame, events: list[Event]) -> list[Detection]:
        """New faces: detections not matching a tracked face, best first, up to the free slots."""
        dets = frame.detections if frame.detections is not None else self.detector(frame.image)
        dets = sorted(dets, key=lambda d: -d.score)
        if not dets:
            return []
        if self.tracks:
            tboxes = np.array([box_from_crop(tr.crop, self.calibration) for tr in self.tracks])
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
            events.append(Event("crowd", None, len(dets) + len(self.tracks)))
        return dets[:max(free, 0)]

    def _refine(self, frame: Frame, crops, pts, conf, first: int, pc):
        """Read the faces from `first` on (new detections) again, from the crops their points give,
        each the mean of its `views` (the points' confidence, `pc`, too where read)."""
        again = [crop_from_points(p, self.schema, self.card.crop_scale, self.card.crop_rotate) for p in pts[first:]]
        views = [v for c in again for v in self.views(c)]
        k = len(views) // len(again)
        lm = self.landmarker
        uv, conf2, pc2 = lm.run_all(lm.prepare_frame(frame, views), wide=len(again) >= WIDE_BATCH)
        read = np.stack([v.to_frame(p) for v, p in zip(views, uv)])
        crops = crops[:first] + again
        pts = pts[:first] + list(read.reshape(len(again), k, *read.shape[1:]).mean(axis=1))
        conf = np.concatenate([conf[:first], conf2.reshape(len(again), k).mean(axis=1)])
        if pc is not None:
            pc = np.concatenate([pc[:first], pc2.reshape(len(again), k, -1).mean(axis=1)])
        return crops, pts, conf, pc

    def views(self, crop: Crop) -> list[Crop]:
        """The crops a new face's second read averages: `crop` moved `refine_shift` model pixels
        right and down, and as far left and up (frame axes); `crop` alone when that is 0."""
        if not self.refine_shift:
            return [crop]
        d = self.refine_shift * crop.side / self.landmarker.size
        return [Crop(crop.cx + d, crop.cy + d, crop.side, crop.angle),
                Crop(crop.cx - d, crop.cy - d, crop.side, crop.angle)]

    def _crop_from_detection(self, d: Detection) -> Crop:
        angle = 0.0
        if self.card.crop_rotate and d.eyes is not None:
            angle = roll_from_eyes(d.eyes[0], d.eyes[1])
        return crop_from_box(d.box, self.calibration, angle)

    def _reject(self, pts: np.ndarray, conf: float, w: int, h: int) -> str | None:
        if not conf >= self.min_confidence:  # also catches NaN
            return f"confidence {conf:.2f} < {self.min_confidence:g}"
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        if inside.mean() < 0.5:
            return "left the frame"
        return None

    def _deduplicate(self, tracks: list[Track], events: list[Event]) -> list[Track]:
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
                events.append(Event("lost", tracks[i].id, "merged with another face"))
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
