"""Head pose from the 68 iBUG points: cv2.solvePnP against a generic 3D face, in a stated camera.

The 3D face (`face3d_ibug68.json`, next to this file) is derived from MediaPipe's canonical face
model (Apache-2.0) by `scripts/build_face3d.py`; its coordinates are millimetres in the camera's
axes for a face looking straight into the camera: x to the image's right, y down, z away from the
camera; the origin is MediaPipe's (inside the head, about 74 mm behind the nose tip).

Camera model: a pinhole with focal length `focal` pixels (default: the frame width, about 53 degrees
of horizontal field of view), the principal point at the image centre, square pixels, no lens
distortion. Rotation and translation map model points into the camera: X_cam = R X_model + T.

Angles (degrees), with R = Rx(pitch) @ Ry(yaw) @ Rz(roll), as OpenFace composes them:

- `rx` pitch: > 0 when the face looks down;
- `ry` yaw: > 0 when the face turns towards the image's left (the person's right, with a camera
  that does not mirror);
- `rz` roll: > 0 when the face is rotated clockwise in the image.

    >>> import numpy as np
    >>> model = face3d()
    >>> K = camera_matrix(640, 480)
    >>> truth = np.radians([5.0, -20.0, 10.0])
    >>> pts = project(model.points, rvec_from_euler(truth), np.array([0.0, 0.0, 600.0]), K)
    >>> p = solve_pose(pts, K)
    >>> [round(v, 3) for v in (p.rx, p.ry, p.rz, p.tz)]
    [5.0, -20.0, 10.0, 600.0]
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

FACE3D_PATH = Path(__file__).with_name("face3d_ibug68.json")


@dataclass(frozen=True)
class Face3D:
    """The generic 3D face: (68, 3) millimetres, camera axes for a frontal face (see module doc)."""

    points: np.ndarray
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def nose_tip(self) -> np.ndarray:
        return self.points[30]


@lru_cache(maxsize=4)
def face3d(path: str | Path | None = None) -> Face3D:
    """Read the 3D face (the shipped one by default); read once and cached."""
    p = Path(path) if path is not None else FACE3D_PATH
    data = json.loads(p.read_text(encoding="utf-8"))
    pts = np.asarray(data["points"], dtype=np.float64).reshape(-1, 3)
    if pts.shape != (68, 3):
        raise ValueError(f"{p}: expected 68 points of 3 coordinates, found {pts.shape}")
    pts.setflags(write=False)
    return Face3D(pts, {k: v for k, v in data.items() if k != "points"})


def camera_matrix(width: int, height: int, focal: float | None = None) -> np.ndarray:
    """The pinhole camera: focal length `focal` px (default the frame width), centre of the image."""
    f = float(focal) if focal else float(width)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


@dataclass
class Pose:
    """One face's head pose: angles in degrees, translation in millimetres (see the module doc).

    `rvec`, `tvec` are OpenCV's (3, 1) rotation vector and translation; `camera` the 3x3 matrix they
    hold in, so `project()` can draw anything attached to the head."""

    rx: float
    ry: float
    rz: float
    tx: float
    ty: float
    tz: float
    rvec: np.ndarray
    tvec: np.ndarray
    camera: np.ndarray

    @property
    def angles(self) -> tuple[float, float, float]:
        return self.rx, self.ry, self.rz

    @property
    def translation(self) -> tuple[float, float, float]:
        return self.tx, self.ty, self.tz

    def project(self, points3d: np.ndarray) -> np.ndarray:
        """Model-space millimetres (N, 3) -> image pixels (N, 2)."""
        return project(points3d, self.rvec, self.tvec, self.camera)


def project(points3d, rvec, tvec, camera) -> np.ndarray:
    p, _ = cv2.projectPoints(np.asarray(points3d, np.float64).reshape(-1, 3), np.asarray(rvec, np.float64),
                             np.asarray(tvec, np.float64), camera, None)
    return p.reshape(-1, 2)


def euler_from_matrix(r: np.ndarray) -> tuple[float, float, float]:
    """R = Rx(a) @ Ry(b) @ Rz(c) -> (a, b, c) in radians (b in [-90, 90] degrees)."""
    b = math.asin(max(-1.0, min(1.0, float(r[0, 2]))))
    if abs(float(r[0, 2])) < 0.999999:
        a = math.atan2(-float(r[1, 2]), float(r[2, 2]))
        c = math.atan2(-float(r[0, 1]), float(r[0, 0]))
    else:  # gimbal lock: all roll goes to a
        a = math.atan2(float(r[2, 1]), float(r[1, 1]))
        c = 0.0
    return a, b, c


def matrix_from_euler(angles) -> np.ndarray:
    a, b, c = (float(v) for v in angles)
    ca, sa, cb, sb, cc, sc = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(c), math.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rx @ ry @ rz


def rvec_from_euler(angles) -> np.ndarray:
    """(pitch, yaw, roll) radians -> OpenCV rotation vector (3, 1)."""
    return cv2.Rodrigues(matrix_from_euler(angles))[0]


def initial_guess(points2d: np.ndarray, camera: np.ndarray, model: Face3D | None = None):
    """A frontal, upright face at the distance its eye-corner spacing gives: (rvec, tvec)."""
    model = model or face3d()
    m = model.points
    f = camera[0, 0]
    iod_img = float(np.hypot(*(points2d[45] - points2d[36])))
    iod_3d = float(np.linalg.norm(m[45] - m[36]))
    z = f * iod_3d / max(iod_img, 1e-6)
    c2 = points2d.mean(axis=0)
    c3 = m.mean(axis=0)
    # place the model's centroid on the ray through the points' centroid
    x = (c2[0] - camera[0, 2]) * (z + c3[2]) / f - c3[0]
    y = (c2[1] - camera[1, 2]) * (z + c3[2]) / f - c3[1]
    return np.zeros((3, 1)), np.array([[x], [y], [z]])


def solve_pose(points2d: np.ndarray, camera: np.ndarray, guess: Pose | None = None,
               model: Face3D | None = None) -> Pose | None:
    """68 image points -> the head pose, or None when no sensible pose fits (behind the camera).

    cv2.solvePnP, SOLVEPNP_ITERATIVE (Levenberg-Marquardt on the reprojection error) started from
    `guess` (the same face's pose in the previous frame) or, without one, from a frontal face at
    the distance its eye spacing gives; a start that ends behind the camera is retried frontal."""
    model = model or face3d()
    pts = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] != 68 or not np.isfinite(pts).all():
        return None
    starts = []
    if guess is not None:
        starts.append((guess.rvec, guess.tvec))
    starts.append(None)
    for start in starts:
        r0, t0 = start if start is not None else initial_guess(pts, camera, model)
        ok, rvec, tvec = cv2.solvePnP(model.points, pts, camera, None, r0.copy(), t0.copy(), True,
                                      cv2.SOLVEPNP_ITERATIVE)
        if ok and tvec[2, 0] > 0 and np.isfinite(rvec).all() and np.isfinite(tvec).all():
            a, b, c = euler_from_matrix(cv2.Rodrigues(rvec)[0])
            return Pose(math.degrees(a), math.degrees(b), math.degrees(c),
                        float(tvec[0, 0]), float(tvec[1, 0]), float(tvec[2, 0]), rvec, tvec, camera)
    return None
