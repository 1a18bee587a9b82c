"""Tracking: assignment, face ids, detection/re-detection policy, one batch per frame, smoothing."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fkp_live.track.tracker import Face, Tracker
from fkp_live.track.smooth import KeypointSmoother, jitter, lag, smooth_track, synthetic_track
from fkp_live.io.sources import DemoSource, Motion
from fkp_live.track.matching import match, min_cost_assignment


# ---------------------------------------------------------------------------------- assignment
def test_assignment_is_optimal_against_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, m = rng.integers(1, 6, 2)
        cost = np.round(rng.random((n, m)), 1)
        pairs = min_cost_assignment(cost)
        assert len(pairs) == min(n, m)
        assert len({r for r, _ in pairs}) == len(pairs) == len({c for _, c in pairs})
        n, m = int(n), int(m)
        if n <= m:
            best = min(sum(cost[r, c] for r, c in zip(range(n), cols))
                       for cols in itertools.permutations(range(m), n))
        else:
            best = min(sum(cost[r, c] for r, c in zip(rows, range(m)))
                       for rows in itertools.permutations(range(n), m))
        assert sum(cost[r, c] for r, c in pairs) == pytest.approx(best)


def test_assignment_beats_greedy_and_match_pairs_overlaps():
    # greedy would take the cheapest pair (0, 0) and be left with the dearest (1, 1)
    assert min_cost_assignment(np.array([[0.1, 0.2], [0.2, 0.9]])) == [(0, 1), (1, 0)]
    tracks = np.array([[0, 0, 10, 10], [12, 0, 22, 10]], float)
    dets = np.array([[13, 1, 23, 11], [1, 0, 11, 10]], float)
    assert match(tracks, dets) == [(0, 1), (1, 0)]
    assert match(tracks, np.array([[100, 100, 110, 110]], float)) == []


# ---------------------------------------------------------------------------------- smoothing
def test_still_face_jitter_drops_at_least_5x():
    noisy, truth, iod = synthetic_track(300, noise=0.01, moving=False)
    out = smooth_track(noisy, iod, strength=1.0)
    assert jitter(noisy[30:], iod) / jitter(out[30:], iod) >= 5.0
    # and it is closer to the truth than the raw points
    assert np.abs(out[30:] - truth[30:]).mean() < 0.6 * np.abs(noisy[30:] - truth[30:]).mean()


def test_noise_shared_by_all_points_does_not_open_the_gate():
    """A model's errors partly move every point together. Before the smoother measured that
    shared noise, its motion gate read it as movement on about a third of a still face's frames
    and let the raw points through (2.4x less jitter here, against 5.5x now)."""
    noisy, _, iod = synthetic_track(400, noise=0.005, moving=False)
    shaken = noisy + np.random.default_rng(1).normal(0, 0.002 * iod, size=(len(noisy), 1, 2))
    out = smooth_track(shaken, iod, strength=4.0)
    assert jitter(shaken[30:], iod) / jitter(out[30:], iod) >= 4.0


@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_moving_face_lags_at_most_one_frame(speed):
    noisy, truth, iod = synthetic_track(300, noise=0.01, moving=True, speed=speed)
    out = smooth_track(noisy, iod, strength=1.0)
    assert abs(lag(out[30:], truth[30:])) <= 1.0
    assert np.abs(out[30:] - truth[30:]).mean() <= np.abs(noisy[30:] - truth[30:]).mean()


def test_process_noise_is_filterpys():
    from filterpy.common import Q_discrete_white_noise

    from fkp_live.track.smooth import _accel_var, process_noise

    for strength in (0.5, 1.0, 4.0):
        q = Q_discrete_white_noise(dim=2, dt=1.0, var=_accel_var(strength))
        np.testing.assert_allclose(process_noise(strength), (q[0, 0], q[0, 1], q[1, 1]), rtol=1e-12)


def test_smoothing_on_or_off_never_imports_filterpy():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from fkp_live.track.smooth import KeypointSmoother; "
            "s = KeypointSmoother(4.0); [s(np.ones((68, 2)) * i, 30.0) for i in range(3)]; "
            "print('filterpy' in sys.modules, 'scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_detector_loads_without_mediapipe_init_and_mediapipe_still_works():
    import subprocess
    import sys

    code = ("import sys; from fkp_live.track.detect import make_detector; d = make_detector('blazeface'); "
            "from fkp_live.io.sources import DemoSource; boxes = d(next(iter(DemoSource(frames=1))).image); "
            "print('matplotlib.pyplot' in sys.modules, 'mediapipe.python.solutions.hands' in sys.modules, len(boxes)); "
            "import mediapipe as mp; print(mp.__version__, mp.solutions.face_mesh.FaceMesh.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"]  # what the detector needs, nothing more
    # one box for the one face: the graph's options (non-max suppression among them) were kept
    assert out[2] == "1"
    assert out[3].startswith("0.10") and out[4] == "FaceMesh"  # user code importing mediapipe later is unaffected


def test_lag_measure_detects_a_delay():
    _, truth, _ = synthetic_track(200, noise=0.0, moving=True, speed=3.0)
    delayed = np.concatenate([truth[:3], truth[:-3]])
    assert lag(delayed[10:], truth[10:]) == pytest.approx(3.0, abs=0.1)


def test_strength_orders_smoothing_and_zero_is_off():
    noisy, _, iod = synthetic_track(200, noise=0.02, moving=False)
    j = [jitter(smooth_track(noisy, iod, s)[30:], iod) for s in (0.0, 0.5, 1.0, 2.0)]
    assert j[0] == pytest.approx(jitter(noisy[30:], iod))
    assert j[0] > j[1] > j[2] > j[3]


def test_small_and_large_faces_are_smoothed_alike():
    noisy, _, iod = synthetic_track(150, noise=0.01, moving=True)
    small = smooth_track(noisy, iod)
    large = smooth_track(noisy * 8.0, iod * 8.0)
    np.testing.assert_allclose(large / 8.0, small, atol=1e-3)


def test_a_jump_resets_instead_of_sliding():
    sm = KeypointSmoother(1.0)
    pts = np.random.default_rng(0).uniform(0, 100, (68, 2))
    for _ in range(20):
        sm(pts, 50.0)
    moved = sm(pts + 200.0, 50.0)  # another face took the track: no smear across the frame
    np.testing.assert_allclose(moved, pts + 200.0, atol=1e-3)


def test_one_shared_gain_for_every_coordinate():
    sm = KeypointSmoother(1.0)
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, (68, 2))
    for _ in range(10):
        sm(base + rng.normal(0, 0.5, base.shape), 50.0)
    assert sm.gain.shape == (2,) and 0 < sm.gain[0] < 1


# ---------------------------------------------------------------------------------- tracker
def _centres(faces):
    return {f.id: np.asarray(f.points).mean(axis=0) for f in faces}


def test_two_faces_keep_their_ids(model_path):
    src = DemoSource(frames=60, faces=2)
    tr = Tracker(model=str(model_path), device="cpu", detector="blazeface", redetect_every=1, max_faces=4)
    tr.reanchor_iou = 1.01  # the stand-in model cannot follow a face: every detection re-anchors it
    first = None
    for f in src:
        faces = tr(f)
        assert len(faces) == 2, f"frame {f.index}: {len(faces)} faces"
        c = _centres(faces)
        if first is None:
            first = {i: (0 if p[0] < 320 else 1) for i, p in c.items()}  # id -> copy
        assert set(c) == set(first)
        for i, p in c.items():
            # each id stays on its own copy of the portrait: nearer its true position than the other's
            truth = [src.transform(f.index, k) @ np.array([256.0, 250.0, 1.0]) for k in (0, 1)]
            k = first[i]
            assert np.linalg.norm(p - truth[k]) < np.linalg.norm(p - truth[1 - k])


def test_one_inference_batch_per_frame_and_redetect_policy(model_path):
    tr = Tracker(model=str(model_path), device="cpu", detector="blazeface", redetect_every=10, max_faces=3)
    calls = {"run": [], "detect": 0}
    run, det = tr.landmarker.run_all, tr.detector

    def spy_run(batch, wide=None):
        calls["run"].append(len(batch))
        return run(batch, wide)

    def spy_det(img):
        calls["detect"] += 1
        return det(img)

    tr.landmarker.run_all = spy_run
    tr.detector = spy_det
    for f in DemoSource(frames=25, faces=2):
        tr(f)
    # both faces in one call per frame; on the first frame the two new faces are read a second
    # time from the crops their first points give, two views each (one more call of both)
    assert calls["run"] == [2, 4] + [2] * 24
    assert calls["detect"] == 3  # frames 0, 10, 20 (fewer faces than max_faces)
    full = Tracker(model=str(model_path), device="cpu", detector=spy_det, redetect_every=10, max_faces=2)
    calls["detect"] = 0
    for f in DemoSource(frames=25, faces=2):
        full(f)
    assert calls["detect"] == 1  # all slots taken and no face lost: no need to look again


def test_new_faces_are_read_again_from_their_own_points(model_path):
    """Refinement: a new face's points come from the crop its first points give (the mean of that
    crop's two copies moved refine_shift model pixels along the diagonal), not from the
    detector's box; tracked faces are read once; refine=False keeps one read."""
    from fkp_live.crop import Crop, crop_from_points

    src = list(DemoSource(frames=2, faces=1))
    for refine, shift in ((True, 3.0), (True, 0.0), (False, 3.0)):
        tr = Tracker(model=str(model_path), device="cpu", detector="blazeface", smooth=0, refine=refine,
                     refine_shift=shift)
        calls = []
        run = tr.landmarker.run_all
        tr.landmarker.run_all = lambda b, wide=None: calls.append(len(b)) or run(b, wide)
        face = tr(src[0])[0]
        views = 2 if shift else 1
        assert calls == ([1, views] if refine else [1])
        tr(src[1])
        assert calls[-1] == 1 and len(calls) == (3 if refine else 2)
        box_crop = tr._crop_from_detection(tr.detector(src[0].image)[0])
        if not refine:
            assert face.crop == box_crop
            continue
        # read from the crop that the box's points give, and its moved copies
        lm = tr.landmarker
        uv, _ = lm.run(lm.prepare(src[0].image, [box_crop]))
        expect = crop_from_points(box_crop.to_frame(uv[0]), tr.schema, tr.card.crop_scale, tr.card.crop_rotate)
        assert face.crop == expect and face.crop != box_crop
        d = shift * expect.side / lm.size
        crops = [Crop(expect.cx + d * k, expect.cy + d * k, expect.side, expect.angle) for k in (1, -1)]
        crops = crops if shift else [expect]
        assert tr.views(expect) == crops
        uv, _ = lm.run(lm.prepare(src[0].image, crops))
        want = np.mean([c.to_frame(u) for c, u in zip(crops, uv)], axis=0)
        np.testing.assert_allclose(face.raw, want, atol=1e-3)
    with pytest.raises(ValueError, match="refine_shift"):
        Tracker(model=str(model_path), device="cpu", detector="blazeface", refine_shift=-1)


def test_no_face_detects_every_frame_and_returns_nothing(model_path):
    tr = Tracker(model=str(model_path), device="cpu", detector="blazeface")
    blank = np.full((240, 320, 3), 90, np.uint8)
    for _ in range(3):
        t = tr.track(blank)
        assert t.faces == [] and "detect" in t.seconds  # the detector ran on every faceless frame


def test_face_leaving_the_frame_is_dropped_and_a_new_one_gets_a_new_id(model_path):
    def exit_right(t):
        # still for 1 s, out to the right within 1 s, back at 3 s
        x = 0.0 if t < 1 else (600.0 * min(t - 1, 1.0) if t < 3 else 0.0)
        return Motion(tx=x)

    src = DemoSource(frames=110, motion=exit_right)
    tr = Tracker(model=str(model_path), device="cpu", detector="blazeface", redetect_every=5)
    per_frame, lost = [], []
    for f in src:
        t = tr.track(f)
        per_frame.append([x.id for x in t.faces])
        lost += [e for e in t.events if e.kind == "lost"]
    assert per_frame[0] == [0] and per_frame[25] == [0]
    assert per_frame[65] == []  # gone (frame 65: the portrait is off the canvas)
    assert lost and lost[0][1] == 0
    assert per_frame[-1] and per_frame[-1][0] > 0  # back again: a new id


def test_twenty_faces_batch_and_max_faces(model_path):
    src = DemoSource(frames=2, faces=20, tight=True)
    tr = Tracker(model=str(model_path), device="cpu", detector="haar", max_faces=20)
    faces = tr(next(iter(src)))
    assert len(faces) == 20 and len({f.id for f in faces}) == 20
    few = Tracker(model=str(model_path), device="cpu", detector="haar", max_faces=5)
    t = few.track(next(iter(src)))
    assert len(t.faces) == 5
    assert ("crowd", None, 20) in t.events


def test_tracker_accepts_any_image_layout(model_path):
    tr = Tracker(model=str(model_path), device="cpu", detector="blazeface")
    img = next(iter(DemoSource(frames=1))).image
    import cv2

    for x in (cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA),
              np.ascontiguousarray(cv2.copyMakeBorder(img, 0, 1, 0, 1, cv2.BORDER_REPLICATE))):
        tr.reset()
        faces = tr(x)
        assert len(faces) == 1 and isinstance(faces[0], Face)
        assert faces[0].raw.shape == (68, 2) and faces[0].smoothed.shape == (68, 2)


def test_demo_tracking_follows_the_known_motion(any_model):
    """With the stand-in model re-detecting every frame this checks the box -> crop -> points
    mapping; with the shipped model it checks real tracking between detections."""
    fake = "fake68" in any_model
    src = DemoSource(frames=150)
    tr = Tracker(model=any_model, device="cpu", detector="blazeface", redetect_every=1 if fake else 30,
                 smooth=None)
    if fake:
        tr.reanchor_iou = 1.01  # the stand-in model cannot follow a face: every detection re-anchors it
    first_pts = None
    errs = []
    for f in src:
        faces = tr(f)
        assert len(faces) == 1
        p = faces[0].raw
        if first_pts is None:
            # the face's points carried into the portrait's own pixels, then moved by the known motion
            inv = np.linalg.inv(np.vstack([src.transform(0), [0, 0, 1]]))
            first_pts = (np.c_[p, np.ones(len(p))] @ inv.T)[:, :2]
            iod = np.linalg.norm(p[45] - p[36])
            continue
        want = np.c_[first_pts, np.ones(len(p))] @ src.transform(f.index).T
        errs.append(np.linalg.norm(p - want, axis=1).mean() / iod)
    assert float(np.median(errs)) < (0.15 if fake else 0.05), np.median(errs)


def _copy_of(src, index, point):
    """Which copy of the demo portrait a point (frame pixels) belongs to: the nearest true centre."""
    centre = np.array([(121 + 416) / 2, (97 + 392) / 2, 1.0])  # the head in the portrait
    if getattr(src, "_portrait", None) is not None and src._portrait.shape[0] < 400:  # tight crops
        centre = np.array([(416 - 121) / 2, (392 - 97) / 2, 1.0])
    d = [np.linalg.norm(point - src.transform(index, k) @ centre) for k in range(src.faces)]
    return int(np.argmin(d))


def test_twenty_faces_keep_their_ids_through_a_clip():
    """20 small faces (Haar finds them all): every face in every frame, 20 ids, no id changes copy."""
    src = DemoSource(frames=40, faces=20, tight=True)
    tr = Tracker(device="cpu", detector="haar", max_faces=20)
    owner, switches = {}, 0
    for f in src:
        faces = tr(f)
        assert len(faces) == 20, f"frame {f.index}: {len(faces)} faces"
        for face in faces:
            k = _copy_of(src, f.index, face.points.mean(axis=0))
            switches += owner.setdefault(face.id, k) != k
    assert len(owner) == 20 and switches == 0, (len(owner), switches)


def test_two_faces_that_cross_and_part_keep_their_ids():
    """Two heads swap sides, one passing over the other: an id never moves to the other person,
    and while both are fully in the picture and apart, a face the tracker drops (its presence
    confidence dips below 0.5 for a frame on these synthetic heads) is found again within the
    re-detection period, so both are tracked in most of those frames."""
    w = math.pi / 1.7  # copy 1 runs the path 1.7 s later: opposite phase, so they cross

    def cross(t):
        return Motion(tx=680 * math.sin(w * t))

    W = 960
    src = DemoSource(frames=150, faces=2, motion=cross, size=(W, 480), tight=True, face_px=200)
    tr = Tracker(device="cpu", detector="auto", max_faces=2, redetect_every=5)
    half = 0.5 * 200 * (416 - 121) / (392 - 97)
    owner, switches, apart, tracked, gap, longest = {}, 0, 0, 0, 0, 0
    for f in src:
        faces = tr(f)
        cx = [src.transform(f.index, k)[0] @ np.array([147.5, 147.5, 1.0]) for k in (0, 1)]
        if abs(cx[0] - cx[1]) > 2.5 * half:  # who is who is only clear while the heads are apart
            for face in faces:
                k = _copy_of(src, f.index, face.points.mean(axis=0))
                switches += owner.setdefault(face.id, k) != k
        if all(half < x < W - half for x in cx) and abs(cx[0] - cx[1]) > 2.5 * half:
            apart += 1
            tracked += len(faces) == 2
            gap = 0 if len(faces) == 2 else gap + 1
            longest = max(longest, gap)
    xs = [src.transform(i, 0)[0, 2] - src.transform(i, 1)[0, 2] for i in range(150)]
    assert min(xs) < 0 < max(xs)  # they really changed sides
    assert switches == 0, f"{switches} id switches; ids {owner}"
    assert apart > 30 and tracked >= 0.75 * apart, (tracked, apart)
    assert longest <= tr.redetect_every, longest  # a dropped face comes back at the next detection


def test_stage_times_name_the_smoothing_filters_apart_from_the_rest(model_path):
    """"smooth" is the filters' own time; checks, next crops and boxes are "post"."""
    frames = list(DemoSource(frames=6, faces=1))
    for strength, smoothed in ((0.0, False), (1.0, True)):
        tr = Tracker(model=str(model_path), device="cpu", detector="blazeface", smooth=strength)
        secs = [tr.track(f).seconds for f in frames]
        tr.close()
        later = secs[1:]  # tracked frames
        assert all(s["post"] > 0 for s in later)
        assert all((s["smooth"] > 0) == smoothed for s in later)
