"""Accuracy of a shipped or exported model the way the runtime meets a new face: the detector's
box, the card's box calibration, the tracker's reading of a new face (a pass from the box, then
one from the crop its points give: the first frame) and a pass from those points (what tracking
does on the next frame). Images with no face detected count as missed."""
from __future__ import annotations


def evaluate_runtime(model: str, data, split: str = "test", detector: str = "blazeface",
                     per_face: bool = False, refine_shift: float | None = None) -> dict:
    """NME, AUC@0.08, FR@0.08 and mean pixel error on a 300-W split, first frame and tracked, and
    the first frame's mean error per face region (% of the inter-ocular distance). With `per_face`
    the first frame's per-face NMEs come back too (under "nmes", a list, for CED curves).
    `refine_shift`: the tracker's (None: its default, REFINE_SHIFT)."""
    from .datasets import load_split
    from .tasks import get

    samples, _ = load_split(get("ibug68").with_(channels=3), data, split)
    first, second, truth, missed, tr = read_faces(samples, model, detector, refine_shift)
    out = {"model": model, "file": tr.landmarker.onnx_path.name, "split": split, "detector": detector,
           "refine_shift": tr.refine_shift, "faces": len(truth), "missed": missed}
    ff = scores(first, truth, per_face)
    out["first_frame"] = ff.pop("first_frame")
    out["tracked"] = scores(second, truth)["first_frame"]
    out.update(ff)  # the regions (and per-face NMEs) after both, as they have always printed
    return out


def scores(pred, truth, per_face: bool = False) -> dict:
    """A first frame's readings (lists or arrays of (68, 2)) against the truth: {"first_frame":
    NME, AUC@0.08, FR@0.08 and mean pixel error; "first_frame_regions": the mean error per face
    part; with `per_face` "nmes", each face's NME (a fraction, for CED curves)}."""
    import numpy as np

    from fkp_live import schemas

    from . import metrics

    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    m = np.ones(t.shape[:2], bool)
    schema = schemas.get("ibug68")
    r = metrics.summary(p, t, m, schema)
    out = {"first_frame": {k: round(r[k], 4) for k in ("nme_io", "auc@0.08", "fr@0.08", "mean_px")},
           "first_frame_regions": region_errors(p, t, m, schema)}
    if per_face:
        out["nmes"] = metrics.nme_per_sample(p, t, m, schema).tolist()
    return out


class DlibUnavailable(Exception):
    """dlib, or its 68-point model file, is not there; the message says how to get them."""


def load_dlib(model_path):
    """dlib's HOG face detector and the shape predictor in `model_path`; DlibUnavailable (saying how
    to get them) without dlib, the file, or with a file that is not a shape predictor."""
    from pathlib import Path

    try:
        import dlib
    except ImportError:
        raise DlibUnavailable("dlib is not installed: `pip install dlib-bin` (or dlib) adds it; "
                              "`pip install face_recognition_models` ships its 68-point model file") from None
    path = Path(model_path)
    if not path.is_file():
        raise DlibUnavailable(f"--dlib-model {path}: no such file; give dlib's shape_predictor_68_face_landmarks.dat")
    try:
        predictor = dlib.shape_predictor(str(path))
    except RuntimeError as e:
        raise DlibUnavailable(f"--dlib-model {path}: not a dlib shape predictor ({e})") from None
    return dlib.get_frontal_face_detector(), predictor


def dlib_read(loaded, image, path) -> "np.ndarray | None":
    """dlib's 68 points (frame pixels) of the best-scoring face its HOG detector finds on `image`
    (upsampled once), or None; `loaded` is what `load_dlib(path)` gave."""
    import cv2
    import numpy as np

    detector, predictor = loaded
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    boxes, confidence, _ = detector.run(grey, 1)
    if not len(boxes):
        return None
    shape = predictor(grey, boxes[int(np.argmax(confidence))])
    if shape.num_parts != 68:
        raise DlibUnavailable(f"--dlib-model {path}: gives {shape.num_parts} points, not 68")
    return np.array([(q.x, q.y) for q in shape.parts()], np.float64)


def evaluate_dlib(model_path, data, split: str = "test", per_face: bool = False, loaded=None) -> dict:
    """dlib's 68-point shape predictor (`model_path`: shape_predictor_68_face_landmarks.dat) with its
    own HOG face detector (upsampled once, the highest-scoring face) on a 300-W split, scored like
    `evaluate_runtime`'s first frame. `loaded`: what `load_dlib(model_path)` gave, if already called.
    Raises DlibUnavailable without dlib or the file."""
    from pathlib import Path

    from .datasets import load_split
    from .tasks import get

    loaded = loaded or load_dlib(model_path)
    path = Path(model_path)
    samples, _ = load_split(get("ibug68").with_(channels=3), data, split)
    pred, truth, missed = [], [], 0
    for s in samples:
        pts = dlib_read(loaded, s.image, path)
        if pts is None:
            missed += 1
            continue
        pred.append(pts)
        truth.append(s.points)
    out = {"model": "dlib", "file": path.name, "split": split, "detector": "dlib HOG (upsampled once)",
           "faces": len(truth), "missed": missed}
    out.update(scores(pred, truth, per_face))
    return out


def new_face_reader(model: str, detector: str = "blazeface", refine_shift: float | None = None):
    """A tracker that reads one face per image as the runtime meets a new one (call `reset()`
    before each image): one CPU thread, no smoothing, no redetection schedule."""
    from fkp_live.track.tracker import Tracker

    return Tracker(model=model, device="cpu", threads=1, detector=detector, smooth=0, max_faces=1,
                   redetect_every=10**6, refine_shift=refine_shift)


def read_faces(samples, model: str, detector: str = "blazeface", refine_shift: float | None = None,
               tracked: bool = True):
    """Each sample's face read as the runtime meets a new one (first frame), and with `tracked` read
    once more from those points (the next frame): (first, tracked, truth, missed, tracker), the
    lists over the faces found (tracked is [] without `tracked`)."""
    first, second, truth, missed = [], [], [], 0
    tr = new_face_reader(model, detector, refine_shift)
    for s in samples:
        tr.reset()
        faces = tr(s.image)
        if not faces:
            missed += 1
            continue
        first.append(faces[0].raw)
        if tracked:
            again = tr(s.image) if tr.tracks else []  # the tracked pass may drop a face it doubts
            second.append(again[0].raw if again else faces[0].raw)
        truth.append(s.points)
    return first, second, truth, missed, tr


def region_errors(pred, truth, mask, schema) -> dict:
    """Mean point error per face part (jaw, brow, nose, eye, mouth), % of the inter-ocular distance."""
    import numpy as np

    from .plots import point_family

    e = schema.ocular_points(truth)
    iod = np.linalg.norm(e[:, 1] - e[:, 0], axis=-1)
    per_point = np.linalg.norm(pred - truth, axis=-1) / iod[:, None]  # (faces, points)
    fams = np.array([point_family(n) for n in schema.names])
    return {f: round(100 * float(per_point[:, fams == f].mean()), 3) for f in dict.fromkeys(fams)}
