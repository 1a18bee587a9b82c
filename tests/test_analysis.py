"""Per-face analysis: head pose (synthetic truth, the demo's known roll, IMM's turned views, mirrored
faces), eye and mouth openness against 300-W's labels, blinks, and eye-aligned crops."""
from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA, needs_data, needs_shipped_model
from fkp_live.analysis import (AnalysisState, Analyser, AnalysingTracker, Blink, FaceAnalysis, analyse, align_matrix,
                               camera_matrix, columns, eye_aspect_ratio, eye_targets, face3d, mouth_aspect_ratio,
                               parse_kinds, solve_pose)
from fkp_live.analysis.pose import euler_from_matrix, matrix_from_euler, project, rvec_from_euler
from fkp_live.crop import Crop
from fkp_live.track.tracker import Face


def _face(i, pts):
    pts = np.asarray(pts, np.float32)
    return Face(i, (*pts.min(0), *pts.max(0)), pts, pts, 0.9, Crop(0, 0, 1))


@pytest.fixture(scope="module")
def tracker():
    from fkp_live.track.tracker import Tracker

    with Tracker(device="cpu", threads=1) as t:
        yield t


# ---------------------------------------------------------------------------------------------- pose
def test_the_shipped_3d_face_is_metric_symmetric_and_licensed():
    m = face3d()
    assert m.points.shape == (68, 3)
    assert "Apache-2.0" in m.meta["licence"] and "MediaPipe" in m.meta["comment"]
    iod = np.linalg.norm(m.points[45] - m.points[36])
    assert 80 < iod < 95  # outer eye corners of an adult, mm
    assert m.points[30, 2] < m.points[36, 2] - 20  # the nose tip is nearer the camera than the eyes
    from fkp_live.schemas import IBUG68

    mirrored = m.points[IBUG68.mirror_array()] * [-1, 1, 1]
    np.testing.assert_allclose(mirrored, m.points, atol=1e-3)


@pytest.mark.parametrize("angles", [(0, 0, 0), (10, -35, 5), (-20, 25, -15), (5, 60, 30)])
def test_pose_recovers_a_known_rotation_and_translation(angles):
    k = camera_matrix(640, 480)
    t = np.array([[30.0], [-20.0], [700.0]])
    pts = project(face3d().points, rvec_from_euler(np.radians(angles)), t, k)
    for guess in (None, solve_pose(pts + 0.5, k)):  # cold start, and seeded by a nearby pose
        p = solve_pose(pts, k, guess)
        np.testing.assert_allclose(p.angles, angles, atol=0.01)
        np.testing.assert_allclose(p.translation, t.ravel(), atol=0.1)
    r = matrix_from_euler(np.radians(angles))
    np.testing.assert_allclose(np.degrees(euler_from_matrix(r)), angles, atol=1e-9)


def test_pose_signs_and_camera_model():
    """Yaw > 0 turns the nose to the image's left, pitch > 0 down, roll > 0 clockwise; focal = width."""
    k = camera_matrix(640, 480)
    assert k[0, 0] == 640 and k[0, 2] == 320 and k[1, 2] == 240
    assert camera_matrix(640, 480, focal=1000)[1, 1] == 1000
    m = face3d().points
    t = np.array([[0.0], [0.0], [600.0]])

    def nose_and_eyes(angles):
        p = project(m, rvec_from_euler(np.radians(angles)), t, k)
        return p[30], p[36], p[45]

    n0 = nose_and_eyes((0, 0, 0))[0]
    assert nose_and_eyes((0, 20, 0))[0][0] < n0[0] - 20
    assert nose_and_eyes((20, 0, 0))[0][1] > n0[1] + 20
    _, l, r = nose_and_eyes((0, 0, 20))
    assert r[1] > l[1] + 20  # clockwise: the image-right eye goes down


def test_impossible_points_give_no_pose():
    k = camera_matrix(640, 480)
    assert solve_pose(np.full((68, 2), np.nan), k) is None
    assert solve_pose(np.zeros((5, 2)), k) is None


def test_demo_roll_within_two_degrees(tracker):
    """The demo portrait rolls by a known angle (up to +-10 degrees); the pose's roll follows it.
    Measured over 300 frames: mean |error| 0.63, max 2.07 degrees (scripts/build_face3d.py --check-only)."""
    from fkp_live.io.sources import DemoSource, Motion

    still = DemoSource(frames=1, motion=lambda t: Motion())
    k = camera_matrix(*still.size)
    base = solve_pose(tracker.track(next(iter(still)), still=True).faces[0].points, k).rz
    tracker.reset()
    src = DemoSource(frames=120, size=(640, 480))
    an = Analyser(("pose",))
    err = []
    for f in src:
        faces = tracker.track(f).faces
        a = an(faces, src.size)[0]
        err.append(a.pose.rz - base - math.degrees(src.motion(f.index / src.fps).angle))
    err = np.abs(err)
    assert err.mean() < 1.5 and err.max() < 3.0, (err.mean(), err.max())


def _imm(view: int) -> list[Path]:
    return sorted((DATA / "imm").glob(f"*-{view}?.jpg"))


@needs_data
@needs_shipped_model
def test_imm_turned_views_yaw(tracker):
    """IMM view 3 is turned ~30 degrees to the person's right (nose to the image's left), view 4 to
    the left. Measured (all 40 people, yaw relative to the same person's frontal view 1): view 3
    +21.5 +- 3.9, view 4 -20.8 +- 3.6 degrees with the default camera (focal = width = 640 px), a mean
    error of 8.5 / 9.2 degrees against the nominal 30; +26.1 / -25.1 (error 4.6 / 5.5) with
    --focal 2560: the IMM camera's focal length is unknown, and a longer lens flattens the perspective
    the default assumes. MediaPipe's own mesh (weak perspective) gives +28.1 / -27.6."""
    yaw: dict[tuple[int, float | None], dict[str, float]] = {}
    for view in (1, 3, 4):
        for p in _imm(view):
            img = cv2.imread(str(p))
            faces = tracker.track(img, still=True).faces
            assert faces, p
            for focal in (None, 4 * img.shape[1]):
                a = analyse(faces[:1], (img.shape[1], img.shape[0]), kinds=("pose",), focal=focal)[0]
                yaw.setdefault((view, focal), {})[p.name[:2]] = a.pose.ry
    for focal, expect, tol in ((None, 21.0, 4.0), (2560, 26.0, 4.0)):
        front = yaw[(1, focal)]
        right = np.array([yaw[(3, focal)][q] - front[q] for q in front])
        left = np.array([yaw[(4, focal)][q] - front[q] for q in front])
        assert (right > 5).mean() >= 0.95 and (left < -5).mean() >= 0.95  # every turned face has the right sign
        assert abs(right.mean() - expect) < tol and abs(left.mean() + expect) < tol, (focal, right.mean(), left.mean())
        assert abs(right.mean() + left.mean()) < 3  # symmetric
        assert abs(np.mean(list(front.values()))) < 3  # frontal is ~0
    # error against the nominal 30 degrees, default camera: ~9 degrees (stated in the docstring)
    assert np.mean([abs(yaw[(3, None)][q] - yaw[(1, None)][q] - 30) for q in yaw[(1, None)]]) < 12


@needs_data
@needs_shipped_model
def test_mirrored_faces_give_opposite_yaw(tracker):
    for p in _imm(3)[:10] + _imm(4)[:10]:
        img = cv2.imread(str(p))
        ry = []
        for im in (img, cv2.flip(img, 1)):
            f = tracker.track(im, still=True).faces[0]
            ry.append(analyse([f], (im.shape[1], im.shape[0]), kinds=("pose",))[0].pose.ry)
        assert abs(ry[0]) > 10 and np.sign(ry[0]) == -np.sign(ry[1]), (p.name, ry)
        assert abs(ry[0] + ry[1]) < 4, (p.name, ry)


def test_pose_seed_follows_the_face_id_and_is_forgotten():
    k_size = (640, 480)
    pts = project(face3d().points, rvec_from_euler(np.radians((0, 20, 0))), np.array([[0.0], [0], [600]]),
                  camera_matrix(*k_size))
    state = AnalysisState()
    analyse([_face(3, pts)], k_size, state, kinds=("pose", "eyes"))
    assert set(state.poses) == {3} and set(state.blinks) == {3}
    analyse([_face(4, pts)], k_size, state, kinds=("pose", "eyes"))
    assert set(state.poses) == {4} and set(state.blinks) == {4}  # face 3 is gone: forgotten


# ---------------------------------------------------------------------------------------------- eyes
def test_eye_and_mouth_ratios_and_blink_hysteresis():
    eye = np.array([(0, 0), (1, -0.3), (2, -0.3), (3, 0), (2, 0.3), (1, 0.3)], float)
    assert eye_aspect_ratio(eye) == pytest.approx(0.2)
    # scale and rotation do not change it
    rot = np.array([[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]])
    assert eye_aspect_ratio(3 * eye @ rot.T + 7) == pytest.approx(0.2)
    pts = np.zeros((68, 2))
    pts[60], pts[64] = (0, 0), (4, 0)
    pts[61:64] = [(1, -1), (2, -1), (3, -1)]
    pts[65:68] = [(3, 1), (2, 1), (1, 1)]
    assert mouth_aspect_ratio(pts) == pytest.approx(0.5)
    b = Blink(0.2, 0.22)
    assert [b.update(e) for e in (0.3, 0.21, 0.19, 0.21, 0.215, 0.23, 0.21, float("nan"))] == \
        [False, False, True, True, True, False, False, False]
    with pytest.raises(ValueError):
        Blink(0.3, 0.2)


def test_blink_state_is_per_face_id():
    open_eye = np.array([(0, 0), (1, -0.5), (2, -0.5), (3, 0), (2, 0.5), (1, 0.5)], float)
    shut = open_eye * [1, 0.1]

    def face(i, eye):
        p = np.tile(np.linspace(0, 50, 68)[:, None], (1, 2))
        p[36:42] = eye * 10 + [100, 100]
        p[42:48] = eye * 10 + [200, 100]
        return _face(i, p)

    half = open_eye * [1, 0.63]  # EAR 0.21: between the thresholds 0.20 and 0.22
    state = AnalysisState()
    got = analyse([face(0, shut), face(1, open_eye)], (640, 480), state, kinds=("eyes",))
    assert [a.blink for a in got] == [True, False]
    got = analyse([face(0, half), face(1, half)], (640, 480), state, kinds=("eyes",))
    assert got[0].ear_l == pytest.approx(0.21)
    assert [a.blink for a in got] == [True, False]  # each keeps its own state
    assert analyse([face(0, half)], (640, 480), None, kinds=("eyes",))[0].blink is False  # no state: threshold


@needs_data
@needs_shipped_model
def test_eye_and_mouth_openness_follow_the_300w_labels(tracker):
    """On 120 HELEN faces the model's EAR correlates with the labels' at r = 0.78, mouth r = 0.86."""
    from fkp_live.schemas import IBUG68

    ours, truth, crop_err = [], [], []
    for p in sorted((DATA / "300w" / "helen_train").glob("*.jpg"))[:120]:
        img = cv2.imread(str(p))
        g = _read_pts(p.with_suffix(".pts"))
        faces = tracker.track(img, still=True).faces
        if not faces:
            continue
        f = min(faces, key=lambda f: np.linalg.norm(f.points.mean(0) - g.mean(0)))
        a = analyse([f], (img.shape[1], img.shape[0]), kinds=("eyes", "mouth"))[0]
        ours.append(((a.ear_l + a.ear_r) / 2, a.mouth_open))
        truth.append(((eye_aspect_ratio(g[36:42]) + eye_aspect_ratio(g[42:48])) / 2, mouth_aspect_ratio(g)))
        # crops from our points put the labelled eye centres on the template's pixels
        m = align_matrix(*IBUG68.eye_centres(f.points), 112)
        ge = IBUG68.eye_centres(g) @ m[:, :2].T + m[:, 2]
        crop_err.append(np.linalg.norm(ge - eye_targets(112), axis=1).mean())
    ours, truth = np.array(ours), np.array(truth)
    assert len(ours) >= 110
    assert np.corrcoef(ours[:, 0], truth[:, 0])[0, 1] > 0.65
    assert np.corrcoef(ours[:, 1], truth[:, 1])[0, 1] > 0.75
    assert np.mean(crop_err) < 1.5 and np.median(crop_err) < 1.2, (np.mean(crop_err), np.median(crop_err))


@needs_data
@needs_shipped_model
def test_one_blink_in_a_real_clip(tracker):
    """d0.mp4 (78 frames, a talking head) has one blink, at frames 66-68 (checked by eye): the flag
    rises once, there; the eyes are open (EAR ~0.3) elsewhere."""
    from fkp_live.io.sources import VideoSource

    tracker.reset()
    an = Analyser(("eyes",))
    flags, ears = [], []
    with VideoSource(DATA / "videos" / "d0.mp4") as src:
        for f in src:
            a = an(tracker.track(f).faces, src.size)[0]
            flags.append(a.blink)
            ears.append((a.ear_l + a.ear_r) / 2)
    rises = [i for i in range(1, len(flags)) if flags[i] and not flags[i - 1]]
    assert len(rises) == 1 and 64 <= rises[0] <= 68, [i for i, b in enumerate(flags) if b]
    assert sum(flags) <= 6 and np.median(ears) > 0.25


def _read_pts(path: Path) -> np.ndarray:
    rows = [ln.split() for ln in path.read_text().splitlines()]
    xy = [(float(r[0]), float(r[1])) for r in rows if len(r) == 2 and r[0][0] in "0123456789.-"]
    return np.array(xy[-68:]) - 1.0


# ---------------------------------------------------------------------------------------------- crops
def test_crops_put_the_true_eyes_on_the_same_pixels(tmp_path, tracker):
    """The demo face moves, rolls and zooms with a known transform: its true eye centres land on
    the crop template's eye pixels within 2 px (112 px crops), every frame."""
    from fkp_live.frame import Frame
    from fkp_live.io.crops import CropSink
    from fkp_live.io.sources import DemoSource, Motion
    from fkp_live.schemas import IBUG68

    still = DemoSource(frames=1, motion=lambda t: Motion())
    eyes0 = IBUG68.eye_centres(tracker.track(next(iter(still)), still=True).faces[0].points)
    inv = cv2.invertAffineTransform(still.transform(0))
    eyes_portrait = eyes0 @ inv[:, :2].T + inv[:, 2]  # in the portrait's own pixels
    tracker.reset()
    src = DemoSource(frames=45)
    worst = 0.0
    with CropSink(tmp_path / "crops", IBUG68, size=112, every=5) as sink:
        for f in src:
            faces = tracker.track(f).faces
            sink.write(f, faces)
            t = src.transform(f.index)
            truth = eyes_portrait @ t[:, :2].T + t[:, 2]
            m = align_matrix(*IBUG68.eye_centres(faces[0].points), 112)
            got = truth @ m[:, :2].T + m[:, 2]
            worst = max(worst, float(np.linalg.norm(got - eye_targets(112), axis=1).max()))
        sink.write(Frame(45, None, f.image), [])  # a frame without a face writes nothing
    assert worst < 2.0, worst
    names = sorted(p.name for p in (tmp_path / "crops").iterdir())
    assert names == [f"f{i:06d}_id0.png" for i in range(0, 45, 5)]
    crops = [cv2.imread(str(tmp_path / "crops" / n), cv2.IMREAD_GRAYSCALE) for n in names]
    assert crops[0].shape == (112, 112)
    # the same face in the same place, frame after frame (the face's middle; blurred a little, as
    # the zoom resamples the portrait's fine texture differently)
    mid = [cv2.GaussianBlur(c.astype(np.float32), (5, 5), 2)[28:100, 24:88].ravel() for c in crops]
    for c in mid[1:]:
        assert np.corrcoef(c, mid[0])[0, 1] > 0.93


def test_crop_sink_checks_its_folder(tmp_path):
    from fkp_live.io.crops import CropSink
    from fkp_live.io.sinks import SinkError
    from fkp_live.schemas import IBUG68

    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError, match="is a file"):
        CropSink(tmp_path / "file", IBUG68)
    CropSink(tmp_path / "new" / "deeper", IBUG68)
    assert (tmp_path / "new" / "deeper").is_dir()


# ---------------------------------------------------------------------------------------------- API
def test_kinds_and_columns():
    assert parse_kinds("eyes, pose") == ("pose", "eyes") and parse_kinds("all") == ("pose", "eyes", "mouth")
    assert parse_kinds("none") == () and parse_kinds(None) == ()
    with pytest.raises(ValueError, match="gaze"):
        parse_kinds("pose,gaze")
    assert columns(("pose",)) == ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    assert columns(("mouth", "eyes")) == ["ear_l", "ear_r", "blink", "mouth_open"]
    assert FaceAnalysis(0).values(("pose", "eyes", "mouth")) == [""] * 10


def test_analysing_tracker_attaches_analysis_and_times_it(model_path):
    from fkp_live.io.sources import DemoSource
    from fkp_live.track.tracker import Tracker

    with AnalysingTracker(Tracker(model_path, device="cpu", detector="haar"), Analyser("all")) as tr:
        for f in DemoSource(frames=3):
            t = tr.track(f)
        a = t.faces[0].analysis
        assert isinstance(t.faces[0], Face) and a.face_id == t.faces[0].id
        assert a.pose is not None and a.ear_l > 0 and a.mouth_open >= 0 and a.blink in (True, False)
        assert "analyse" in t.seconds and tr.schema.n == 68 and tr.max_faces == 5


def test_analysis_needs_68_points():
    from fkp_live.analysis import require_ibug68
    from fkp_live.schemas import IMM58

    with pytest.raises(ValueError, match="68-point"):
        require_ibug68(IMM58)


def test_pose_and_eyes_cost_per_face():
    """A guard, far above the measured ~0.15 ms (pose) / 0.17 ms (pose + eyes) per face."""
    k_size = (640, 480)
    rng = np.random.default_rng(0)
    faces = []
    for i in range(200):
        ang = np.radians(rng.uniform(-20, 20, 3))
        p = project(face3d().points, rvec_from_euler(ang), np.array([[0.0], [0], [600]]), camera_matrix(*k_size))
        faces.append([_face(0, p + rng.normal(0, 0.5, p.shape))])
    an = Analyser(("pose", "eyes"))
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        for fs in faces:
            an(fs, k_size)
        best = min(best, (time.perf_counter() - t0) / len(faces))
    assert best < 1e-3, f"{1000 * best:.3f} ms per face"
