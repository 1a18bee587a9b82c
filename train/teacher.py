"""The teacher: several strong readers of a face combined point by point, to label faces for students.

Members, each reading a face from an anchor (a first reading of its 68 points, e.g. the runtime's):
- `net`: an exported fkp-live model (ONNX), the anchor itself when it is that model's reading;
- `dlib`: dlib's 68-point shape predictor (trained on all of 300-W's training images), given the
  box its own HOG detector would draw, predicted from the anchor by a ridge fit (dlib reads poorly
  from boxes of another convention), on an upright copy of the face so that a rolled head reads as
  an upright one;
- `mesh`: MediaPipe Face Mesh's 468 points (trained on far more faces than 300-W holds), each iBUG
  point regressed from the nearest mesh vertices, in the same upright copy.

`fit` learns the dlib box, the mesh regression and per-point weights of the members (summing to
one, by least squares) on the training split; the test split takes no part.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fkp_live import schemas
from fkp_live.crop import Crop, crop_from_points, warp

SCHEMA = schemas.get("ibug68")
VIEW = 384  # side of the upright copy the dlib and mesh members read (dlib's points are whole pixels)
VIEW_SCALE = 1.7  # its side over the anchor's box: room for HOG's box and Face Mesh's detector
MESH_NEIGHBOURS = 12


def view_of(anchor: np.ndarray) -> Crop:
    """The upright square around a face that dlib and Face Mesh read."""
    return crop_from_points(anchor, SCHEMA, VIEW_SCALE, rotate=True)


def _normalised(pts: np.ndarray, crop: Crop) -> np.ndarray:
    return crop.from_frame(np.asarray(pts, np.float64)).astype(np.float64)


def _to_frame(uv: np.ndarray, crop: Crop) -> np.ndarray:
    return crop.to_frame(np.asarray(uv, np.float64)).astype(np.float64)


# --- the members' raw readings ---------------------------------------------------------------

class DlibMember:
    """dlib's predictor on the upright view, from a box that `box_coef` predicts from the anchor."""

    def __init__(self, model_path: str | Path, box_coef: np.ndarray | None = None):
        from .eval_runtime import load_dlib

        self.path = str(model_path)
        self.hog, self.predictor = load_dlib(self.path)  # the clear errors for a missing dlib or a wrong file
        import dlib

        self.dlib = dlib
        self.box_coef = box_coef

    def hog_box(self, view_grey: np.ndarray) -> np.ndarray | None:
        """The box dlib's own detector draws on the view (fractions of it), or None."""
        boxes, score, _ = self.hog.run(view_grey, 0)
        if not len(boxes):
            return None
        b = boxes[int(np.argmax(score))]
        return np.array([b.left(), b.top(), b.right(), b.bottom()], np.float64) / VIEW

    def box_from_anchor(self, anchor_uv: np.ndarray) -> np.ndarray:
        return _features(anchor_uv) @ self.box_coef

    def read(self, view_grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        l, t, r, b = (int(round(v * VIEW)) for v in box)
        shape = self.predictor(view_grey, self.dlib.rectangle(l, t, r, b))
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64) / VIEW


class MeshMember:
    """MediaPipe Face Mesh on the upright view: 468 vertices (fractions of the view) or None."""

    def __init__(self):
        import mediapipe as mp

        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                    refine_landmarks=False, min_detection_confidence=0.2)

    def read(self, view_bgr: np.ndarray) -> np.ndarray | None:
        r = self.mesh.process(cv2.cvtColor(view_bgr, cv2.COLOR_BGR2RGB))
        if not r.multi_face_landmarks:
            return None
        return np.array([(q.x, q.y) for q in r.multi_face_landmarks[0].landmark], np.float64)

    def close(self):
        self.mesh.close()


def _features(anchor_uv: np.ndarray) -> np.ndarray:
    """A ridge regression's inputs from 68 points (fractions of the view): the points and a 1."""
    return np.concatenate([np.asarray(anchor_uv, np.float64).reshape(-1), [1.0]])


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Least squares with an L2 penalty on all but the last column (the constant)."""
    reg = lam * np.eye(x.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(x.T @ x + reg, x.T @ y)


# --- one face's readings, and many --------------------------------------------------------------

@dataclass
class Readings:
    """Every member's raw reading of a set of faces, in fractions of each face's upright view."""

    views: list[Crop]
    anchor: np.ndarray  # (F, 68, 2) the anchors (the net member's reading)
    hog: np.ndarray  # (F, 4) dlib's own box, NaN where it was not looked for or not found
    dlib: np.ndarray  # (F, 68, 2) dlib from the predicted box (NaN until a box model exists)
    mesh: np.ndarray  # (F, 468, 2), NaN where Face Mesh found no face


def read_members(images, anchors, dlib_member: DlibMember, mesh_member: MeshMember,
                 echo=None, hog: bool = False) -> Readings:
    """Each face's upright view from its anchor (frame pixels), and the dlib and mesh readings of it
    (dlib's once it has a box model); with `hog`, the box dlib's own detector draws too."""
    views, anchor_uv, boxes, dl, mesh = [], [], [], [], []
    for i, (img, a) in enumerate(zip(images, anchors)):
        v = view_of(a)
        views.append(v)
        au = _normalised(a, v)
        anchor_uv.append(au)
        bgr = warp(img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), v, VIEW,
                   border=cv2.BORDER_REPLICATE)
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        hb = dlib_member.hog_box(grey) if hog else None
        boxes.append(hb if hb is not None else np.full(4, np.nan))
        dl.append(dlib_member.read(grey, dlib_member.box_from_anchor(au)) if dlib_member.box_coef is not None
                  else np.full((68, 2), np.nan))
        m = mesh_member.read(bgr)
        mesh.append(m if m is not None else np.full((468, 2), np.nan))
        if echo and (i + 1) % 200 == 0:
            echo(f"read {i + 1} faces")
    return Readings(views, np.array(anchor_uv), np.array(boxes), np.array(dl), np.array(mesh))


# --- the fitted teacher --------------------------------------------------------------------------

@dataclass
class Teacher:
    box_coef: np.ndarray  # (137, 4): anchor -> dlib's box in the view
    mesh_index: np.ndarray  # (68, K) the mesh vertices each point is read from
    mesh_coef: np.ndarray  # (68, 2K+1, 2)
    weights: np.ndarray  # (68, M) per point, per member (net, dlib, mesh); rows sum to 1
    members: tuple = ("net", "dlib", "mesh")
    info: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        np.savez(path, box_coef=self.box_coef, mesh_index=self.mesh_index, mesh_coef=self.mesh_coef,
                 weights=self.weights, members=np.array(self.members), info=json.dumps(self.info))

    @classmethod
    def load(cls, path: str | Path) -> "Teacher":
        z = np.load(path)
        return cls(z["box_coef"], z["mesh_index"], z["mesh_coef"], z["weights"], tuple(z["members"].tolist()),
                   json.loads(str(z["info"])))

    def mesh_points(self, mesh: np.ndarray) -> np.ndarray:
        """(F, 468, 2) -> (F, 68, 2) iBUG points read from the mesh (NaN where the mesh is)."""
        x = mesh[:, self.mesh_index]  # (F, 68, K, 2)
        f = np.concatenate([x.reshape(len(mesh), 68, -1), np.ones((len(mesh), 68, 1))], axis=-1)
        return np.einsum("fpk,pkc->fpc", f, self.mesh_coef)

    def stack(self, r: Readings) -> np.ndarray:
        """(F, M, 68, 2) the members' iBUG readings in view fractions."""
        parts = {"net": r.anchor, "dlib": r.dlib, "mesh": self.mesh_points(r.mesh)}
        return np.stack([parts[m] for m in self.members], axis=1)

    def to_frame(self, r: Readings, uv: np.ndarray) -> np.ndarray:
        return np.array([_to_frame(u, v) for u, v in zip(uv, r.views)])


def combine(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted reading of a `Teacher.stack`, (F, 68, 2) view fractions; a missing member's
    weight goes to the others in proportion."""
    ok = np.isfinite(stack).all(axis=-1)  # (F, M, 68)
    w = weights.T[None] * ok  # (F, M, 68)
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    return np.einsum("fmp,fmpc->fpc", w, np.nan_to_num(stack))


def fit_box(r: Readings, lam: float = 1e-2) -> np.ndarray:
    ok = np.isfinite(r.hog).all(axis=1)
    x = np.array([_features(a) for a in r.anchor[ok]])
    return ridge(x, r.hog[ok], lam)


def fit_mesh(r: Readings, truth_uv: np.ndarray, k: int = MESH_NEIGHBOURS, lam: float = 1e-3):
    ok = np.isfinite(r.mesh).all(axis=(1, 2))
    mesh, t = r.mesh[ok], truth_uv[ok]
    mean_mesh, mean_t = mesh.mean(axis=0), t.mean(axis=0)
    d = np.linalg.norm(mean_t[:, None] - mean_mesh[None], axis=-1)  # (68, 468)
    index = np.argsort(d, axis=1)[:, :k]
    coef = np.zeros((68, 2 * k + 1, 2))
    for p in range(68):
        x = np.concatenate([mesh[:, index[p]].reshape(len(mesh), -1), np.ones((len(mesh), 1))], axis=1)
        coef[p] = ridge(x, t[:, p], lam)
    return index, coef


def fit_weights(stack: np.ndarray, truth_uv: np.ndarray, iod: np.ndarray) -> np.ndarray:
    """Per point, the member weights (summing to 1, kept >= 0) that minimise the squared error,
    each face's error measured in its inter-ocular distance."""
    f, m, n, _ = stack.shape
    w = np.zeros((n, m))
    for p in range(n):
        ok = np.isfinite(stack[:, :, p]).all(axis=(1, 2))
        e = (stack[ok, :, p] - truth_uv[ok, None, p]) / iod[ok, None, None]  # (F', M, 2) member errors
        # minimise |sum_m w_m e_m|^2 s.t. sum w = 1: w = G^-1 1 / (1' G^-1 1), G the Gram matrix
        g = np.einsum("fmc,fkc->mk", e, e) / max(ok.sum(), 1) + 1e-9 * np.eye(m)
        active = list(range(m))
        while True:
            gi = np.linalg.inv(g[np.ix_(active, active)])
            sol = gi.sum(axis=1) / gi.sum()
            if (sol >= 0).all():
                break
            active.pop(int(np.argmin(sol)))
        w[p, active] = sol
    return w


# --- reading faces, fitting, labelling ----------------------------------------------------------

def default_dlib_model() -> Path | None:
    """The 68-point predictor file `pip install face_recognition_models` ships, or None."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    return p if p.is_file() else None


def dlib_member_for(model_path, box_coef=None) -> DlibMember:
    from .eval_runtime import DlibUnavailable

    path = model_path or default_dlib_model()
    if path is None:
        raise DlibUnavailable("no dlib model: `pip install dlib-bin face_recognition_models`, or give --dlib-model")
    return DlibMember(path, box_coef)


class Anchors:
    """First readings of faces as the runtime meets them (detector box, then the crop its points
    give); where the detector finds no face and points are given, the crop those points make."""

    def __init__(self, model: str, detector: str = "blazeface"):
        from .eval_runtime import new_face_reader

        self.tracker = new_face_reader(model, detector)

    def __call__(self, image: np.ndarray, given: np.ndarray | None = None) -> np.ndarray | None:
        self.tracker.reset()
        faces = self.tracker(image)
        if faces:
            return np.asarray(faces[0].raw, np.float64)
        if given is None:
            return None
        from .pseudo_label import read_from_points

        return np.asarray(read_from_points(self.tracker.landmarker, [image], [given])[0], np.float64)


def read_dlib(images, r: Readings, member: DlibMember) -> None:
    """dlib's reading of each face from the box its anchor predicts (fills r.dlib)."""
    for i, (img, v) in enumerate(zip(images, r.views)):
        bgr = warp(img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), v, VIEW,
                   border=cv2.BORDER_REPLICATE)
        r.dlib[i] = member.read(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), member.box_from_anchor(r.anchor[i]))


def _iod_uv(truth_uv: np.ndarray) -> np.ndarray:
    e = SCHEMA.ocular_points(truth_uv)
    return np.linalg.norm(e[:, 1] - e[:, 0], axis=-1)


def _score(pred_frame, truth) -> dict:
    from .eval_runtime import scores

    s = scores(pred_frame, truth)
    return {**s["first_frame"], "regions": s["first_frame_regions"]}


def fit_teacher(data, model: str, dlib_model=None, echo=print, limit: int | None = None) -> tuple[Teacher, dict]:
    """Fit the teacher on the training split of a 300-W folder and measure each member and the
    ensemble on the validation split (frame pixels, end to end from the detector). The test split
    is not read."""
    from .datasets import load_split
    from .tasks import get

    task = get("ibug68").with_(channels=3)
    anchors = Anchors(model)
    dlib_m = dlib_member_for(dlib_model)
    mesh_m = MeshMember()
    report = {"model": str(model), "dlib_model": dlib_m.path, "view": VIEW, "view_scale": VIEW_SCALE}
    sets = {}
    for split in ("train", "val"):
        samples, _ = load_split(task, data, split)
        if limit:
            samples = samples[:limit]
        found = [(s, anchors(s.image)) for s in samples]
        kept = [(s, a) for s, a in found if a is not None]
        echo(f"{split}: {len(kept)} of {len(samples)} faces found; reading them with dlib and Face Mesh")
        images = [s.image for s, _ in kept]
        # on train, dlib's own boxes first, to fit the box model, then dlib from the boxes it predicts
        r = read_members(images, [a for _, a in kept], dlib_m, mesh_m, echo=echo, hog=split == "train")
        if split == "train":
            dlib_m.box_coef = fit_box(r)
            read_dlib(images, r, dlib_m)
        truth = np.array([s.points for s, _ in kept], np.float64)
        sets[split] = (images, r, truth)
        report[f"{split}_faces"], report[f"{split}_missed"] = len(kept), len(samples) - len(kept)
    images, r, truth = sets["train"]
    truth_uv = np.array([_normalised(t, v) for t, v in zip(truth, r.views)])
    index, coef = fit_mesh(r, truth_uv)
    teacher = Teacher(dlib_m.box_coef, index, coef, np.full((68, 3), 1 / 3))
    teacher.weights = fit_weights(teacher.stack(r), truth_uv, _iod_uv(truth_uv))
    for split, (images, r, truth) in sets.items():
        stack = teacher.stack(r)
        out = {}
        for j, m in enumerate(teacher.members):
            one = np.where(np.isfinite(stack[:, j]), stack[:, j], stack[:, 0])  # the anchor where it read nothing
            out[m] = {**_score(teacher.to_frame(r, one), truth),
                      "read": int(np.isfinite(stack[:, j]).all(axis=(1, 2)).sum())}
        out["ensemble"] = _score(teacher.to_frame(r, combine(stack, teacher.weights)), truth)
        report[split] = out
    w = teacher.weights
    report["mean_weights"] = {m: round(float(w[:, j].mean()), 3) for j, m in enumerate(teacher.members)}
    teacher.info = report
    mesh_m.close()
    return teacher, report


def label_folder(teacher: Teacher, model: str, source, out, dlib_model=None, echo=print,
                 max_disagreement: float = 0.15, command: str = "") -> dict:
    """Label every image under `source` with the teacher into `out` (NAME.pts + a link to the
    image), for `fkp-train fit --extra OUT`. A .pts beside an image serves only to place the crop
    where the detector finds no face. Faces where the net and the ensemble differ by more than
    `max_disagreement` of the inter-ocular distance (a wrong face, a failed reading) are left out."""
    from .data import DataError
    from .data.ibug import IMAGE_SUFFIXES, read_image, read_pts
    from .pseudo_label import write_label

    source, out = Path(source), Path(out)
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) to label")
    anchors = Anchors(model)
    dlib_m = dlib_member_for(dlib_model, teacher.box_coef)
    mesh_m = MeshMember()
    out.mkdir(parents=True, exist_ok=True)
    counts = {"images": len(files), "labelled": 0, "no_face": 0, "disagree": 0, "dlib_read": 0, "mesh_read": 0}
    agreement = []
    for i in range(0, len(files), 256):
        chunk = files[i:i + 256]
        imgs, anch, names, given = [], [], [], []
        for f in chunk:
            img = read_image(f)
            pts_file = f.with_suffix(".pts")
            g = read_pts(pts_file) if pts_file.exists() else None
            a = anchors(img, g)
            if a is None:
                counts["no_face"] += 1
                continue
            imgs.append(img), anch.append(a), names.append(f), given.append(g)
        if not imgs:
            continue
        r = read_members(imgs, anch, dlib_m, mesh_m)
        stack = teacher.stack(r)
        uv = combine(stack, teacher.weights)
        iod = _iod_uv(uv)
        for k, f in enumerate(names):
            counts["dlib_read"] += int(np.isfinite(stack[k, teacher.members.index("dlib")]).all())
            counts["mesh_read"] += int(np.isfinite(stack[k, teacher.members.index("mesh")]).all())
            gap = float(np.linalg.norm(uv[k] - r.anchor[k], axis=-1).mean() / iod[k])
            if not np.isfinite(gap) or gap > max_disagreement:
                counts["disagree"] += 1
                continue
            write_label(out / f.relative_to(source), f, _to_frame(uv[k], r.views[k]))
            counts["labelled"] += 1
            agreement.append(gap)
        echo(f"labelled {counts['labelled']} of {min(i + 256, len(files))} images")
    mesh_m.close()
    report = {"teacher": teacher.info.get("file", ""), "model": str(model), "source": str(source.resolve()),
              "command": command, **counts,
              "net_vs_teacher_nme": round(100 * float(np.mean(agreement)), 3) if agreement else None}
    (out / "pseudo_labels.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
