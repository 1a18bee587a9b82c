"""Face detection: MediaPipe BlazeFace (bundled model, legacy solutions API) or OpenCV's Haar cascade.

Detectors only seed and re-seed tracks; between detections faces are followed by their keypoints.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger("fkp_live")

DETECTORS = ("auto", "blazeface", "blazeface-full", "haar")


@dataclass
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels
    score: float
    eyes: np.ndarray | None = None  # (2, 2): image-left eye, image-right eye; None if unknown

    @property
    def size(self) -> float:
        return ((self.box[2] - self.box[0]) + (self.box[3] - self.box[1])) / 2


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True):
    """Silence file descriptor 2 (native libraries' logging) for the duration."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class DetectorError(Exception):
    """A detector cannot be created here (missing library or model file)."""


def mediapipe_solution(name: str):
    """`mediapipe.python.solutions.<name>`, imported without running `mediapipe/__init__.py`.

    That file imports every solution and, through their drawing utilities, matplotlib.pyplot: over
    half a second of start-up for nothing we use. The `mediapipe` and `...solutions` packages are
    registered unexecuted; the first access to any other attribute of them (user code doing
    `import mediapipe as mp; mp.solutions.hands`) runs their real `__init__` then, so nothing else
    sees a difference.
    """
    import importlib
    import importlib.util
    import types

    class _LazyPackage(types.ModuleType):
        def __getattr__(self, attr):
            spec = self.__spec__
            self.__class__ = types.ModuleType  # run the real __init__ once, then plain lookups
            spec.loader.exec_module(self)
            return getattr(self, attr)

    for pkg in ("mediapipe", "mediapipe.python.solutions"):
        if pkg in sys.modules:
            continue
        if pkg != "mediapipe":
            importlib.import_module(pkg.rsplit(".", 1)[0])  # mediapipe.python: the bindings (cheap)
        spec = importlib.util.find_spec(pkg)
        if spec is None:
            raise ImportError(f"No module named {pkg!r}")
        mod = importlib.util.module_from_spec(spec)
        mod.__class__ = _LazyPackage
        sys.modules[pkg] = mod
    # The graphs' calculator options are protobuf extensions: a graph config round-trips through
    # Python (SolutionBase sets options on it), and an extension whose module was never imported is
    # dropped on the way, silently (BlazeFace then runs without non-max suppression and returns a
    # handful of boxes per face). mediapipe/__init__ registers them by importing every solution;
    # register the ones the face solutions use.
    for mod in ("core.constant_side_packet_calculator_pb2", "core.gate_calculator_pb2",
                "core.split_vector_calculator_pb2", "tensor.image_to_tensor_calculator_pb2",
                "tensor.inference_calculator_pb2", "tensor.tensors_to_classification_calculator_pb2",
                "tensor.tensors_to_detections_calculator_pb2", "tensor.tensors_to_landmarks_calculator_pb2",
                "tflite.ssd_anchors_calculator_pb2", "util.association_calculator_pb2",
                "util.detections_to_rects_calculator_pb2", "util.landmarks_refinement_calculator_pb2",
                "util.logic_calculator_pb2", "util.non_max_suppression_calculator_pb2",
                "util.rect_transformation_calculator_pb2", "util.thresholding_calculator_pb2"):
        importlib.import_module(f"mediapipe.calculators.{mod}")
    return importlib.import_module(f"mediapipe.python.solutions.{name}")


class BlazeFaceDetector:
    """MediaPipe's BlazeFace. model_selection 0 = short range (faces within ~2 m, fast),
    1 = full range (small faces too, ~2.5x slower). With `fallback_full`, a frame where the short
    range model finds nothing is tried once with the full range one (small faces in wide shots)."""

    def __init__(self, model_selection: int = 0, min_score: float = 0.5, fallback_full: bool = False):
        try:
            fd = mediapipe_solution("face_detection")
        except ImportError as e:  # a broken install; Haar needs nothing extra
            raise DetectorError(f"mediapipe is not importable ({e}); use the haar detector") from None
        self.name = "blazeface" if model_selection == 0 else "blazeface-full"
        selections = [model_selection] + ([1] if fallback_full and model_selection == 0 else [])
        blank = np.zeros((64, 64, 3), np.uint8)
        self._models = []
        # MediaPipe's C++ side logs start-up chatter straight to stderr; run its start-up (which
        # happens on the first frame) here, with that chatter silenced unless debugging
        with quiet_stderr(not log.isEnabledFor(logging.DEBUG)):
            for sel in selections:
                m = fd.FaceDetection(model_selection=sel, min_detection_confidence=min_score)
                m.process(blank)
                self._models.append(m)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        for model in self._models:
            res = model.process(rgb)
            if res.detections:
                break
        out = []
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            x0, y0 = bb.xmin * w, bb.ymin * h
            box = (x0, y0, x0 + bb.width * w, y0 + bb.height * h)
            kp = d.location_data.relative_keypoints
            # keypoints 0 and 1 are the subject's right and left eye: image-left, image-right
            eyes = np.array([[kp[0].x * w, kp[0].y * h], [kp[1].x * w, kp[1].y * h]], np.float32) \
                if len(kp) >= 2 else None
            out.append(Detection(box, float(d.score[0]) if d.score else 0.0, eyes))
        return out

    def close(self) -> None:
        for m in self._models:
            m.close()


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: no eyes, no calibrated score; runs on a frame scaled
    to at most `max_side` pixels because its cost grows with the pixel count."""

    name = "haar"

    def __init__(self, max_side: int = 640, min_face_frac: float = 0.06):
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise DetectorError(f"OpenCV's Haar cascade {path} is missing or unreadable; reinstall opencv")
        self.max_side = max_side
        self.min_face_frac = min_face_frac

    def __call__(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        k = min(1.0, self.max_side / max(h, w))
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        if k < 1.0:
            grey = cv2.resize(grey, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
        m = max(24, int(self.min_face_frac * min(grey.shape)))
        boxes, _, weights = self._cascade.detectMultiScale3(
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(m, m), outputRejectLevels=True)
        out = []
        for (x, y, bw, bh), wt in zip(boxes, np.ravel(weights) if len(boxes) else []):
            # the cascade's last-stage weight is unbounded; squash it to a 0..1 ordering score
            score = float(1.0 / (1.0 + np.exp(-float(wt))))
            out.append(Detection((x / k, y / k, (x + bw) / k, (y + bh) / k), score, None))
        return out

    def close(self) -> None:
        pass


def make_detector(name: str = "auto", min_score: float = 0.5):
    """`blazeface` (short range), `blazeface-full`, `haar`, or `auto`: BlazeFace short range with a
    full-range retry when it finds nothing, else Haar when MediaPipe is unavailable."""
    if name == "blazeface":
        return BlazeFaceDetector(0, min_score)
    if name == "blazeface-full":
        return BlazeFaceDetector(1, min_score)
    if name == "haar":
        return HaarDetector()
    if name == "auto":
        try:
            det = BlazeFaceDetector(0, min_score, fallback_full=True)
            det.name = "blazeface"
            return det
        except DetectorError as e:
            log.warning("%s; falling back to the Haar detector", e)
            return HaarDetector()
    raise DetectorError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
