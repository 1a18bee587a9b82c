"""Accuracy of a shipped or exported model the way the runtime meets a new face: the detector's
box, the card's box calibration, one pass of the model (first frame) and a second pass from those
points (what tracking does on the next frame). Images with no face detected count as missed."""
from __future__ import annotations


def evaluate_runtime(model: str, data, split: str = "test", detector: str = "blazeface") -> dict:
    """NME, AUC@0.08, FR@0.08 and mean pixel error on a 300-W split, first frame and tracked."""
    import numpy as np

    from fkp_live.track.tracker import Tracker

    from . import metrics
    from .datasets import load_split
    from .tasks import get

    samples, _ = load_split(get("ibug68").with_(channels=3), data, split)
    first, second, truth, missed = [], [], [], 0
    tr = Tracker(model=model, device="cpu", threads=1, detector=detector, smooth=0, max_faces=1,
                 redetect_every=10**6)
    for s in samples:
        tr.reset()
        faces = tr(s.image)
        if not faces:
            missed += 1
            continue
        first.append(faces[0].raw)
        second.append(tr(s.image)[0].raw if tr.tracks else faces[0].raw)
        truth.append(s.points)
    t = np.array(truth)
    m = np.ones(t.shape[:2], bool)
    schema = tr.schema
    out = {"model": model, "file": tr.landmarker.onnx_path.name, "split": split, "detector": detector,
           "faces": len(t), "missed": missed}
    for name, p in (("first_frame", first), ("tracked", second)):
        r = metrics.summary(np.array(p), t, m, schema)
        out[name] = {k: round(r[k], 4) for k in ("nme_io", "auc@0.08", "fr@0.08", "mean_px")}
    return out
