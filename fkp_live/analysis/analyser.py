"""Per-face analysis: head pose, eye openness and blinks, mouth openness; off unless asked for.

`analyse(faces, frame_size, state)` answers one `FaceAnalysis` per face; `state` (an
`AnalysisState`) carries what a face id needs from its last frame (the pose that seeds the next
solve, the blink hysteresis); without it every frame stands alone, as for image folders.
`Analyser` is the same with its options and state kept, and `AnalysingTracker` wraps a Tracker so
every face it returns carries its analysis (`face.analysis`), which the CSV and JSONL sinks and the
overlay read: the run engine needs no change.

    >>> from fkp_live import Tracker, run
    >>> from fkp_live.analysis import Analyser, AnalysingTracker
    >>> from fkp_live.io.sources import DemoSource
    >>> tracker = AnalysingTracker(Tracker(device="cpu"), Analyser(("pose", "eyes", "mouth")))
    >>> faces = []
    >>> for frame in DemoSource(frames=3):
    ...     faces = tracker(frame)
    >>> a = faces[0].analysis
    >>> abs(a.pose.rz) < 30 and a.pose.tz > 0 and 0.1 < a.ear_l < 0.5 and a.blink is False
    True

Or without wrapping anything: `analyse(faces, (width, height), state)` with the faces of any
tracker call, keeping one `state = AnalysisState()` for a video.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .eyes import BLINK_CLOSE, BLINK_REOPEN, EYE_L, EYE_R, Blink, eye_aspect_ratio, mouth_aspect_ratio
from .pose import Face3D, Pose, camera_matrix, face3d, solve_pose

KINDS = ("pose", "eyes", "mouth")
COLUMNS = {
    "pose": ("pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"),
    "eyes": ("ear_l", "ear_r", "blink"),
    "mouth": ("mouth_open",),
}


def parse_kinds(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """'pose,eyes' -> ('pose', 'eyes') in canonical order; 'all' -> all; 'none', '' or None -> ()."""
    if text is None:
        return ()
    names = {t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()}
    if names <= {"none"}:
        return ()
    if "all" in names:
        return KINDS
    bad = names - set(KINDS)
    if bad:
        raise ValueError(f"unknown analysis {', '.join(sorted(bad))}; choose from {','.join(KINDS)}, all or none")
    return tuple(k for k in KINDS if k in names)


def columns(kinds: Iterable[str]) -> list[str]:
    """CSV column names for these kinds (OpenFace's names where OpenFace has them)."""
    ks = set(kinds)
    return [c for k in KINDS if k in ks for c in COLUMNS[k]]


@dataclass
class FaceAnalysis:
    """What was measured on one face (None: not asked for, or no answer)."""

    face_id: int
    pose: Pose | None = None
    ear_l: float | None = None  # eye aspect ratio, image-left eye (iBUG 36-41)
    ear_r: float | None = None  # image-right eye (42-47)
    blink: bool | None = None  # eyes shut (hysteresis per face id)
    mouth_open: float | None = None  # inner-lip aspect ratio

    def values(self, kinds: Iterable[str]) -> list[str]:
        """The CSV fields for `columns(kinds)`, formatted; empty where there is no answer."""
        ks = set(kinds)
        out: list[str] = []
        if "pose" in ks:
            p = self.pose
            out += ([f"{p.tx:.1f}", f"{p.ty:.1f}", f"{p.tz:.1f}", f"{p.rx:.2f}", f"{p.ry:.2f}", f"{p.rz:.2f}"]
                    if p is not None else [""] * 6)
        if "eyes" in ks:
            out += [_f3(self.ear_l), _f3(self.ear_r), "" if self.blink is None else str(int(self.blink))]
        if "mouth" in ks:
            out.append(_f3(self.mouth_open))
        return out

    def to_json(self) -> dict:
        """The answers present, rounded, for JSON Lines."""
        d: dict = {}
        if self.pose is not None:
            p = self.pose
            d["pose"] = {"Tx": round(p.tx, 1), "Ty": round(p.ty, 1), "Tz": round(p.tz, 1),
                         "Rx": round(p.rx, 2), "Ry": round(p.ry, 2), "Rz": round(p.rz, 2)}
        for k in ("ear_l", "ear_r", "mouth_open"):
            v = getattr(self, k)
            if v is not None and v == v:
                d[k] = round(v, 4)
        if self.blink is not None:
            d["blink"] = self.blink
        return d


def _f3(v: float | None) -> str:
    return "" if v is None or v != v else f"{v:.3f}"


class AnalysisState:
    """What each face id carries to its next frame: its last pose and its blink state. Ids not in
    the current frame are forgotten (a face that comes back is a new track)."""

    def __init__(self) -> None:
        self.poses: dict[int, Pose] = {}
        self.blinks: dict[int, Blink] = {}

    def reset(self) -> None:
        self.poses.clear()
        self.blinks.clear()


def analyse(faces, frame_size: tuple[int, int], state: AnalysisState | None = None, *,
            kinds: Iterable[str] = KINDS, focal: float | None = None, blink_close: float = BLINK_CLOSE,
            blink_reopen: float = BLINK_REOPEN, model: Face3D | None = None,
            camera: np.ndarray | None = None) -> list[FaceAnalysis]:
    """One `FaceAnalysis` per face (same order). frame_size: (width, height) in pixels, for the
    camera (focal length `focal` px, default the width; principal point at the centre). The faces
    need the 68 iBUG points (`face.points`)."""
    ks = set(kinds)
    do_pose, do_eyes, do_mouth = "pose" in ks, "eyes" in ks, "mouth" in ks
    if do_pose:
        camera = camera if camera is not None else camera_matrix(frame_size[0], frame_size[1], focal)
        model = model or face3d()
    out = []
    seen = set()
    for f in faces:
        p = f.points
        a = FaceAnalysis(f.id)
        seen.add(f.id)
        if do_pose:
            guess = state.poses.get(f.id) if state is not None else None
            a.pose = solve_pose(p, camera, guess, model)
            if state is not None:
                if a.pose is not None:
                    state.poses[f.id] = a.pose
                else:
                    state.poses.pop(f.id, None)
        if do_eyes:
            a.ear_l, a.ear_r = eye_aspect_ratio(p[EYE_L]), eye_aspect_ratio(p[EYE_R])
            ear = (a.ear_l + a.ear_r) / 2
            if state is not None:
                blink = state.blinks.get(f.id)
                if blink is None:
                    blink = state.blinks[f.id] = Blink(blink_close, blink_reopen)
                a.blink = blink.update(ear)
            else:
                a.blink = bool(ear < blink_close)
        if do_mouth:
            a.mouth_open = mouth_aspect_ratio(p)
        out.append(a)
    if state is not None:
        for d in (state.poses, state.blinks):
            for gone in [i for i in d if i not in seen]:
                del d[gone]
    return out


class Analyser:
    """`analyse` with its options and a state kept between calls.

    kinds: any of 'pose', 'eyes', 'mouth'; focal: the camera's focal length in pixels (default: the
    frame width); blink_threshold: EAR below which the eyes count as shut (open again above
    threshold + 0.02). `analyser(faces, (w, h), still=True)` keeps no state (unrelated pictures)."""

    def __init__(self, kinds: Iterable[str] = KINDS, focal: float | None = None,
                 blink_threshold: float = BLINK_CLOSE, model: Face3D | str | None = None):
        self.kinds = parse_kinds(kinds)
        self.focal = focal
        self.blink_close = float(blink_threshold)
        self.blink_reopen = self.blink_close + (BLINK_REOPEN - BLINK_CLOSE)
        self.model = model if isinstance(model, Face3D) else (face3d(model) if "pose" in self.kinds else None)
        self.state = AnalysisState()
        self._camera: tuple | None = None

    def camera(self, frame_size: tuple[int, int]) -> np.ndarray:
        if self._camera is None or self._camera[0] != frame_size:
            self._camera = (frame_size, camera_matrix(frame_size[0], frame_size[1], self.focal))
        return self._camera[1]

    def __call__(self, faces, frame_size: tuple[int, int], still: bool = False) -> list[FaceAnalysis]:
        if still:
            self.state.reset()
        return analyse(faces, frame_size, None if still else self.state, kinds=self.kinds, focal=self.focal,
                       blink_close=self.blink_close, blink_reopen=self.blink_reopen, model=self.model,
                       camera=self.camera(frame_size) if "pose" in self.kinds else None)

    def reset(self) -> None:
        self.state.reset()


def reads_ibug68(schema) -> bool:
    """Whether a model's points are the iBUG 68, which pose, eyes and mouth read."""
    return getattr(schema, "n", None) == 68


def require_ibug68(schema) -> None:
    """Pose, eyes and mouth read the iBUG 68 points: other schemes cannot be analysed."""
    if not reads_ibug68(schema):
        raise ValueError(f"head pose, eye and mouth analysis need a 68-point iBUG model; "
                         f"this model gives {getattr(schema, 'name', schema)} points")


# ----------------------------------------------------------------------------------------------
def _face_class():
    from ..track.tracker import Face

    @dataclass
    class AnalysedFace(Face):
        """A Face with its `analysis` (a FaceAnalysis) attached."""

        analysis: FaceAnalysis | None = None

    return Face, AnalysedFace, tuple(fl.name for fl in dataclasses.fields(Face))


_FACE = None


def with_analysis(face, analysis: FaceAnalysis):
    """The same face, as an `AnalysedFace` carrying `analysis` (a Face in every other respect)."""
    global _FACE
    if _FACE is None:
        _FACE = _face_class()
    _, cls, names = _FACE
    return cls(*(getattr(face, n) for n in names), analysis=analysis)


class AnalysingTracker:
    """A Tracker whose faces carry their analysis: `track()` returns the tracker's `Tracked` with
    each face an `AnalysedFace` and the seconds spent under 'analyse'. Everything else (schema,
    max_faces, reset, close, ...) is the wrapped tracker's."""

    def __init__(self, tracker, analyser: Analyser):
        require_ibug68(tracker.schema)
        self.tracker = tracker
        self.analyser = analyser

    def track(self, frame, still: bool = False):
        t = self.tracker.track(frame, still=still)
        t0 = time.perf_counter()
        image = getattr(frame, "image", frame)
        size = (image.shape[1], image.shape[0])
        found = self.analyser(t.faces, size, still=still)
        t.faces = [with_analysis(f, a) for f, a in zip(t.faces, found)]
        t.seconds["analyse"] = time.perf_counter() - t0
        return t

    def __call__(self, frame):
        return self.track(frame).faces

    def reset(self, ids: bool = True) -> None:
        self.tracker.reset(ids)
        self.analyser.reset()

    def __getattr__(self, name):
        if name in ("tracker", "analyser"):  # not set yet (copying, unpickling)
            raise AttributeError(name)
        return getattr(self.tracker, name)

    def close(self) -> None:
        self.tracker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
