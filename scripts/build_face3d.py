#!/usr/bin/env python3
"""Build fkp_live/analysis/face3d_ibug68.json: a generic 3D face of the 68 iBUG points, in mm.

How it is made (and why it may be shipped):

1. MediaPipe's canonical face model (468 vertices, centimetres; Apache-2.0, from the MediaPipe
   repository at the tag of the pinned wheel, v0.10.21:
   mediapipe/modules/face_geometry/data/canonical_face_model.obj; the 0.10.21 wheel does not carry
   the file itself) is turned into the camera's axes (x right, y down, z away from the camera:
   (x, -y, -z)) and scaled x10 to millimetres (its outer eye corners are then 88.9 mm apart, an adult's
   typical 85-95 mm).
2. On real faces (300-W: AFW, HELEN and LFPW training images; IMM is kept out so the pose checks
   on it are held out), MediaPipe Face Mesh (the legacy solution, static_image_mode=True) gives the
   468 mesh landmarks and fkp-live's own tracker (the shipped default model, still images) gives the
   68 iBUG points. Only near-frontal faces are kept (the mesh's own pose, from a 3D similarity fit
   of its landmarks to the canonical model: |yaw| <= 10, |pitch| <= 15 degrees).
3. Each face is normalised by the 2D similarity that best maps its mesh landmarks onto the canonical
   model's frontal (x, y). For every iBUG point, non-negative weights summing to one over its K
   nearest mesh vertices are fitted by least squares over all faces (how that point sits among the
   mesh vertices around it); its 3D position is the same weighting of the canonical 3D vertices.
4. The 68 points are made left-right symmetric (each point averaged with its mirror partner's
   reflection), as the canonical model is.

Usage (needs the shared data and the canonical OBJ; `--check` then prints the pose errors):

    python scripts/build_face3d.py --obj canonical_face_model.obj --data ../shared/data --check

The data files used are research-only (300-W); what is kept from them is 68 x K mixing weights of
the Apache-2.0 mesh, a property of the two landmark conventions, not of any image.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fkp_live.analysis.pose import (FACE3D_PATH, camera_matrix, euler_from_matrix, face3d,  # noqa: E402
                                    solve_pose)
from fkp_live.schemas import IBUG68  # noqa: E402

OBJ_URL = ("https://raw.githubusercontent.com/google-ai-edge/mediapipe/v0.10.21/"
           "mediapipe/modules/face_geometry/data/canonical_face_model.obj")
SETS_300W = ("afw", "helen_train", "lfpw_train")


# ----------------------------------------------------------------------------------------------
def load_canonical(path: Path) -> np.ndarray:
    """The OBJ's 468 vertices -> camera axes (x right, y down, z away), millimetres."""
    v = np.array([line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")], float)
    if v.shape != (468, 3):
        raise SystemExit(f"{path}: expected 468 vertices, found {v.shape[0]}")
    return v * np.array([10.0, -10.0, -10.0])


def find_obj(given: str | None) -> Path:
    if given:
        return Path(given)
    import mediapipe

    found = sorted(Path(mediapipe.__file__).parent.rglob("canonical_face_model.obj"))
    if found:
        return found[0]
    import urllib.request

    out = ROOT / "runs" / "canonical_face_model.obj"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"downloading {OBJ_URL}", file=sys.stderr)
        urllib.request.urlretrieve(OBJ_URL, out)
    return out


def umeyama(src: np.ndarray, dst: np.ndarray):
    """Similarity (s, R, t) with dst ~ s R src + t (least squares, no reflection); any dimension."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, d, vt = np.linalg.svd(b.T @ a / len(src))
    e = np.eye(src.shape[1])
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[-1, -1] = -1
    r = u @ e @ vt
    s = float(np.trace(np.diag(d) @ e) / (a ** 2).sum(1).mean())
    return s, r, md - s * r @ ms


def read_pts(path: Path) -> np.ndarray:
    rows = [ln.split() for ln in path.read_text().splitlines()]
    xy = [(float(r[0]), float(r[1])) for r in rows if len(r) == 2 and r[0][0] in "0123456789.-"]
    return np.array(xy[-68:]) - 1.0


# ----------------------------------------------------------------------------------------------
class Mesh:
    """MediaPipe Face Mesh (legacy solution) on still images: 468 landmarks in pixels (x, y, z*w)."""

    def __init__(self):
        import mediapipe as mp

        self._fm = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                   refine_landmarks=False, min_detection_confidence=0.5)

    def __call__(self, bgr: np.ndarray) -> np.ndarray | None:
        h, w = bgr.shape[:2]
        res = self._fm.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h, p.z * w) for p in lm[:468]])


def mesh_angles(mesh_px: np.ndarray, canon: np.ndarray) -> tuple[float, float, float]:
    """The mesh's own (pitch, yaw, roll) in degrees: 3D similarity of the canonical model onto it
    (the mesh's pixel x, y and depth z form a right-handed camera frame, as our model does)."""
    _, r, _ = umeyama(canon, mesh_px)
    return tuple(math.degrees(v) for v in euler_from_matrix(r))


def nearest_face(faces, centre: np.ndarray):
    best = None
    for f in faces:
        c = f.points.mean(axis=0)
        size = max(f.box[2] - f.box[0], f.box[3] - f.box[1])
        d = float(np.hypot(*(c - centre)))
        if d < 0.25 * size and (best is None or d < best[0]):
            best = (d, f)
    return None if best is None else best[1]


def collect(data: Path, tracker, mesh: Mesh, canon: np.ndarray, limit: int | None, max_yaw: float,
            max_pitch: float):
    """(mesh 2D normalised, our 68 points normalised, truth normalised) for near-frontal faces."""
    files = [p for s in SETS_300W for p in sorted((data / "300w" / s).glob("*.jpg"))]
    if limit:
        files = files[:limit]
    meshes, ours, truth = [], [], []
    seen = frontal = 0
    t0 = time.time()
    for i, p in enumerate(files):
        img = cv2.imread(str(p))
        if img is None:
            continue
        m = mesh(img)
        if m is None:
            continue
        seen += 1
        pitch, yaw, _ = mesh_angles(m, canon)
        if abs(yaw) > max_yaw or abs(pitch) > max_pitch:
            continue
        face = nearest_face(tracker.track(img, still=True).faces, m[:, :2].mean(axis=0))
        if face is None:
            continue
        frontal += 1
        s, r, t = umeyama(m[:, :2], canon[:, :2])
        norm = lambda q: (s * (r @ np.asarray(q, float).T)).T + t  # noqa: E731
        meshes.append(norm(m[:, :2]))
        ours.append(norm(face.points))
        truth.append(norm(read_pts(p.with_suffix(".pts"))))
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{len(files)} images, {frontal} frontal faces ({time.time() - t0:.0f} s)",
                  file=sys.stderr)
    print(f"{len(files)} images, mesh found on {seen}, {frontal} near-frontal with our face", file=sys.stderr)
    return np.array(meshes), np.array(ours), np.array(truth)


def nnls_sum1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min ||a w - b|| with w >= 0 and sum(w) = 1 (the sum as a heavily weighted extra row)."""
    from scipy.optimize import nnls

    lam = 1e3 * max(1.0, float(np.abs(a).max()))
    w, _ = nnls(np.vstack([a, lam * np.ones((1, a.shape[1]))]), np.concatenate([b, [lam]]), maxiter=5000)
    return w / w.sum()


def fit_weights(meshes: np.ndarray, points: np.ndarray, k: int):
    """Per iBUG point: K candidate vertices, their weights, the fit's RMS residual (mm) and the best
    single vertex's residual, for comparison."""
    mean_mesh = meshes.mean(0)
    out = []
    for i in range(points.shape[1]):
        target = points[:, i]  # (N, 2)
        d = np.linalg.norm(mean_mesh - target.mean(0), axis=1)
        cand = np.argsort(d)[:k]
        a = np.concatenate([meshes[:, cand, 0], meshes[:, cand, 1]], axis=0)  # (2N, K)
        b = np.concatenate([target[:, 0], target[:, 1]])
        w = nnls_sum1(a, b)
        res = math.sqrt(float(((a @ w - b) ** 2).reshape(2, -1).sum(0).mean()))
        single = np.sqrt(((meshes - target[:, None]) ** 2).sum(2).mean(0))
        out.append((cand, w, res, float(single.min()), int(single.argmin())))
    return out


def symmetrise(p: np.ndarray) -> np.ndarray:
    m = IBUG68.mirror_array()
    flipped = p[m] * np.array([-1.0, 1.0, 1.0])
    return (p + flipped) / 2


# ----------------------------------------------------------------------------------------------
def build(args) -> dict:
    from fkp_live.track.tracker import Tracker

    obj = find_obj(args.obj)
    canon = load_canonical(obj)
    tracker = Tracker(device="cpu", threads=args.threads)
    meshes, ours, truth = collect(Path(args.data), tracker, Mesh(), canon, args.limit, args.max_yaw, args.max_pitch)
    if len(meshes) < 20:
        raise SystemExit(f"only {len(meshes)} usable faces; check --data")
    fits = fit_weights(meshes, ours if args.points == "model" else truth, args.k)
    pts = np.array([w @ canon[cand] for cand, w, *_ in fits])
    pts = symmetrise(pts)
    res = [r for _, _, r, _, _ in fits]
    single = [s for _, _, _, s, _ in fits]
    print(f"fit RMS residual: weights over {args.k} vertices {np.mean(res):.2f} mm (max {np.max(res):.2f}, "
          f"point {int(np.argmax(res))}); best single vertex {np.mean(single):.2f} mm", file=sys.stderr)
    gap = np.linalg.norm(ours - truth, axis=2).mean()
    print(f"our points vs the 300-W labels on these faces: {gap:.2f} mm (normalised space)", file=sys.stderr)
    iod = float(np.linalg.norm(pts[45] - pts[36]))
    print(f"outer eye corners 36-45: {iod:.1f} mm apart; nose tip (30) z {pts[30, 2]:.1f} mm", file=sys.stderr)
    return {
        "comment": ("Generic 3D face of the 68 iBUG points for head pose (cv2.solvePnP). Derived from "
                    "MediaPipe's canonical face model (canonical_face_model.obj, MediaPipe v0.10.21, "
                    "Copyright 2020 The MediaPipe Authors, Apache License 2.0): each point is a fixed "
                    "non-negative weighting of canonical mesh vertices, the weights fitted on "
                    f"{len(meshes)} near-frontal 300-W faces by comparing MediaPipe Face Mesh with "
                    "fkp-live's 68 points; made left-right symmetric. Built by scripts/build_face3d.py."),
        "licence": "Apache-2.0 (derived from MediaPipe's canonical face model)",
        "source": {"file": "mediapipe/modules/face_geometry/data/canonical_face_model.obj",
                   "repository": "https://github.com/google-ai-edge/mediapipe", "tag": "v0.10.21"},
        "units": "millimetres (the canonical model's centimetres x 10)",
        "axes": ("camera axes for a face looking into the camera: x to the image's right, y down, z away "
                 "from the camera; origin: the canonical model's (inside the head)"),
        "build": {"faces": int(len(meshes)), "k": args.k, "points": args.points, "max_yaw": args.max_yaw,
                  "max_pitch": args.max_pitch, "fit_rms_mm": round(float(np.mean(res)), 3),
                  "single_vertex_rms_mm": round(float(np.mean(single)), 3),
                  "weights": [{str(int(c)): round(float(x), 4) for c, x in zip(cand, w) if x > 1e-4}
                              for cand, w, *_ in fits]},
        "points": np.round(pts, 3).tolist(),
    }


# ----------------------------------------------------------------------------------------------
def imm_files(data: Path, view: int) -> list[Path]:
    return sorted((data / "imm").glob(f"*-{view}?.jpg"))


def check(data: Path, threads: int | None, obj: str | None = None, model_path: str | None = None) -> None:
    """Pose errors: yaw on IMM's turned views (nominally +-30 degrees; MediaPipe's mesh pose as a second
    reference), yaw sign on mirrored images, and roll on the demo (exact truth)."""
    from fkp_live.io.sources import DemoSource, Motion
    from fkp_live.track.tracker import Tracker

    tracker = Tracker(device="cpu", threads=threads)
    canon = load_canonical(find_obj(obj))
    mesh = Mesh()
    model = face3d(model_path)
    pts: dict[int, dict[str, tuple]] = {1: {}, 2: {}, 3: {}, 4: {}}  # view -> person -> (points, mirrored, size)
    ref: dict[int, dict[str, float]] = {1: {}, 2: {}, 3: {}, 4: {}}  # MediaPipe mesh's own yaw
    for view in (1, 2, 3, 4):
        for p in imm_files(data, view):
            img = cv2.imread(str(p))
            faces = tracker.track(img, still=True).faces
            fl = tracker.track(cv2.flip(img, 1), still=True).faces
            if not faces or not fl:
                continue
            person = p.name.split("-")[0]
            pts[view][person] = (faces[0].points, fl[0].points, img.shape[1::-1])
            m = mesh(img)
            if m is not None:
                ref[view][person] = mesh_angles(m, canon)[1]
    for scale in (None, 2, 4):
        yaw: dict[int, dict[str, float]] = {v: {} for v in pts}
        flip_sum = []
        for view, people in pts.items():
            for person, (q, qf, (w, h)) in people.items():
                k = camera_matrix(w, h, None if scale is None else scale * w)
                pose, pf = solve_pose(q, k, model=model), solve_pose(qf, k, model=model)
                if pose is not None and pf is not None:
                    yaw[view][person] = pose.ry
                    flip_sum.append(pose.ry + pf.ry)
        print(f"== camera focal length {'= width (the default)' if scale is None else f'{scale} x width'}")
        for view in (1, 2, 3, 4):
            v = np.array(list(yaw[view].values()))
            print(f"IMM view {view}: {len(v)} faces, yaw mean {v.mean():+.1f} sd {v.std():.1f} deg "
                  f"(MediaPipe mesh, weak perspective: {np.mean(list(ref[view].values())):+.1f})")
        for view, sign in ((3, 1), (4, -1)):
            both = [q for q in yaw[view] if q in yaw[1] and q in ref[view] and q in ref[1]]
            ro = np.array([yaw[view][q] - yaw[1][q] for q in both])
            rr = np.array([ref[view][q] - ref[1][q] for q in both])
            print(f"IMM view {view} - view 1 (same person, {len(both)}): ours {ro.mean():+.1f} +- {ro.std():.1f} deg, "
                  f"mean |error vs {sign * 30:+d}| {np.abs(ro - sign * 30).mean():.1f}; mesh {rr.mean():+.1f} +- "
                  f"{rr.std():.1f}; mean |ours - mesh| {np.abs(ro - rr).mean():.1f} deg")
        fs = np.array(flip_sum)
        print(f"mirrored images: yaw + mirrored yaw: mean |.| {np.abs(fs).mean():.2f} deg, max {np.abs(fs).max():.2f}")

    # roll on the demo: truth is the path's angle, relative to the unmoved portrait's own roll
    still = DemoSource(frames=1, motion=lambda t: Motion())
    f0 = next(iter(still))
    k = camera_matrix(*still.size)
    base = solve_pose(tracker.track(f0, still=True).faces[0].points, k, model=model).rz
    tracker.reset()
    src = DemoSource(frames=300)
    err = []
    guess = None
    for f in src:
        faces = tracker.track(f).faces
        if not faces:
            continue
        guess = solve_pose(faces[0].points, k, guess, model=model)
        truth = math.degrees(src.motion(f.index / src.fps).angle)
        err.append(guess.rz - base - truth)
    e = np.array(err)
    print(f"demo roll ({len(e)} frames, truth +-10 deg): error mean {e.mean():+.2f}, mean |.| "
          f"{np.abs(e).mean():.2f}, max |.| {np.abs(e).max():.2f} deg")


def dump(model: dict) -> str:
    """JSON with one point (and one point's weights) per line."""
    head = {k: v for k, v in model.items() if k not in ("build", "points")}
    build = {k: v for k, v in model["build"].items() if k != "weights"}
    lines = ["{"] + [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    lines.append(' "build": {' + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in build.items())
                 + ', "weights": [')
    w = model["build"]["weights"]
    lines += [f"  {json.dumps(x)}{',' if i < len(w) - 1 else ''}" for i, x in enumerate(w)]
    lines.append(" ]},")
    lines.append(' "points": [')
    pts = model["points"]
    lines += [f"  {json.dumps(x)}{',' if i < len(pts) - 1 else ''}" for i, x in enumerate(pts)]
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--obj", help="canonical_face_model.obj (default: look in mediapipe, else download it)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder with 300w/ and imm/")
    ap.add_argument("--out", default=str(FACE3D_PATH), help="where to write the JSON")
    ap.add_argument("--k", type=int, default=8, help="mesh vertices per iBUG point")
    ap.add_argument("--points", choices=["model", "truth"], default="model",
                    help="fit to our model's points (what the runtime sees) or to the 300-W labels")
    ap.add_argument("--max-yaw", type=float, default=10.0)
    ap.add_argument("--max-pitch", type=float, default=15.0)
    ap.add_argument("--limit", type=int, help="use only the first N images (a quick try)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check", action="store_true", help="print the pose errors (IMM yaw, demo roll) after")
    ap.add_argument("--check-only", action="store_true", help="only check the current file")
    args = ap.parse_args(argv)
    if not args.check_only:
        model = build(args)
        Path(args.out).write_text(dump(model), encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
        face3d.cache_clear()
    if args.check or args.check_only:
        check(Path(args.data), args.threads, args.obj, args.out)


if __name__ == "__main__":
    main()
