"""Per-face analysis from the keypoints: head pose, eye openness and blinks, mouth openness, and
eye-aligned face crops. Nothing here runs unless asked for (`fkp-live --analysis ...`, `--crops`).

    >>> from fkp_live.analysis import Analyser, AnalysingTracker, analyse, AnalysisState
    >>> Analyser("pose,eyes").kinds
    ('pose', 'eyes')

See `analyser` (the API: analyse, Analyser, AnalysingTracker, FaceAnalysis), `pose` (the camera,
angle conventions and the 3D face), `eyes` (EAR, blink, mouth) and `align` (crops).
"""
from .align import EYE_TARGETS, align_matrix, aligned_crop, eye_targets
from .analyser import (COLUMNS, KINDS, Analyser, AnalysingTracker, AnalysisState, FaceAnalysis, analyse, columns,
                       parse_kinds, require_ibug68, with_analysis)
from .eyes import Blink, eye_aspect_ratio, mouth_aspect_ratio
from .pose import Face3D, Pose, camera_matrix, face3d, solve_pose

__all__ = ["EYE_TARGETS", "align_matrix", "aligned_crop", "eye_targets", "COLUMNS", "KINDS", "Analyser",
           "AnalysingTracker", "AnalysisState", "FaceAnalysis", "analyse", "columns", "parse_kinds",
           "require_ibug68", "with_analysis", "Blink", "eye_aspect_ratio", "mouth_aspect_ratio", "Face3D", "Pose",
           "camera_matrix", "face3d", "solve_pose"]
