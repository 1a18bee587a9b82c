"""fkp-live: real-time facial keypoint tracking through ONNX Runtime."""
from .card import ModelCard, ModelError
from .track.landmarker import Landmarker

__all__ = ["ModelCard", "ModelError", "Landmarker", "Tracker", "Face"]
__version__ = "0.1.0"


def __getattr__(name):  # keep `import fkp_live` light: the pipeline pulls in mediapipe lazily
    if name in ("Tracker", "Face"):
        from .track import tracker

        return getattr(tracker, name)
    raise AttributeError(name)
