"""fkp-live: real-time facial keypoint tracking through ONNX Runtime.

    from fkp_live import Tracker, run
    tracker = Tracker()                 # shipped default model, best device
    faces = tracker(frame_bgr)          # list[Face]: id, box, raw and smoothed points, confidence

    from fkp_live import RunSettings, run_single
    done = run_single(RunSettings(video="talk.mp4", csv="talk.csv", display=False))  # as `fkp-live` does

Everything is imported on first use, so `import fkp_live` (and `fkp-live --help`) stays quick.
"""
__all__ = ["ModelCard", "ModelError", "Landmarker", "Tracker", "Face", "run", "RunResult", "Frame", "RunSettings",
           "SettingsError", "run_single"]
__version__ = "0.1.0"

_WHERE = {
    "ModelCard": "card", "ModelError": "card", "Landmarker": "track.landmarker",
    "Tracker": "track.tracker", "Face": "track.tracker", "run": "engine", "RunResult": "engine",
    "Frame": "frame", "RunSettings": "settings", "SettingsError": "settings", "run_single": "single",
}


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
