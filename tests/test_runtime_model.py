"""The shipped default model through the runtime: accuracy and tracking on real faces.

These wait (skip) until models/ibug68.int8.onnx (the default on a CPU) and its card exist, and need ../shared/data.
"""
from __future__ import annotations

import numpy as np

from conftest import DATA, SHIPPED, VIDEOS, needs_data, needs_shipped_model

pytestmark = [needs_shipped_model]


def test_default_model_resolves_and_runs_through_the_tracker():
    from fkp_live import Tracker

    tr = Tracker(device="cpu")  # model=None: the shipped default
    assert tr.landmarker.onnx_path.resolve() == SHIPPED.resolve()
    from fkp_live.io.sources import DemoSource

    faces = tr(next(iter(DemoSource(frames=1))))
    assert len(faces) == 1 and faces[0].points.shape == (tr.schema.n, 2)


@needs_data
def test_300w_accuracy_from_detector_crops():
    """Inter-ocular NME of the first detection-seeded prediction on 300-W faces (AFW)."""
    import cv2

    from fkp_live import Tracker
    from train.data.ibug import read_pts

    tr = Tracker(device="cpu", smooth=None)
    files = sorted((DATA / "300w" / "afw").glob("*.pts"))[:120]
    nmes = []
    for p in files:
        img = cv2.imread(str(p.with_suffix(".jpg")))
        if img is None:
            continue
        gt = read_pts(p)
        tr.reset()
        faces = tr(img)
        if not faces:
            continue
        c = gt.mean(axis=0)
        f = min(faces, key=lambda x: np.linalg.norm(x.raw.mean(axis=0) - c))
        iod = np.linalg.norm(gt[45] - gt[36])
        nmes.append(np.linalg.norm(f.raw - gt, axis=1).mean() / iod)
    assert len(nmes) > 0.8 * len(files), "the detector found too few 300-W faces"
    assert float(np.mean(nmes)) < 0.10, f"mean NME {np.mean(nmes):.3f}"


@needs_data
def test_a_new_face_read_from_two_moved_crops_is_closer_to_300w_val_labels():
    """The second read of a new face as the mean of two moved copies of its crop (the default,
    refine_shift 3) against that crop alone, end to end from BlazeFace on 300-W's validation split
    with the default model."""
    from train.eval_runtime import evaluate_runtime

    two = evaluate_runtime("fast", DATA / "300w", "val")
    one = evaluate_runtime("fast", DATA / "300w", "val", refine_shift=0)
    assert two["refine_shift"] == 3 and one["refine_shift"] == 0
    assert two["faces"] == one["faces"] > 100 and two["missed"] == 0
    assert two["first_frame"]["nme_io"] < one["first_frame"]["nme_io"] - 0.03, (two, one)


@needs_data
def test_tracking_a_real_clip_keeps_one_face_and_is_steady():
    from fkp_live import Tracker
    from fkp_live.track.smooth import jitter
    from fkp_live.io.sources import VideoSource

    tr = Tracker(device="cpu")
    raw, sm, ids = [], [], set()
    with VideoSource(VIDEOS / "d3.mp4") as src:
        for f in src:
            faces = tr(f)
            assert len(faces) == 1, f"frame {f.index}: {len(faces)} faces"
            ids.add(faces[0].id)
            raw.append(faces[0].raw)
            sm.append(faces[0].smoothed)
    assert ids == {0}
    raw, sm = np.array(raw), np.array(sm)
    e = tr.schema.ocular_points(raw)
    iod = np.linalg.norm(e[:, 1] - e[:, 0], axis=-1)
    assert jitter(sm, iod) < jitter(raw, iod)


def test_smoothing_with_the_real_model_still_and_moving():
    """The shipped model on the demo face: with camera-like pixel noise, the default smoothing cuts
    jitter on a still face at least 6x over 600 frames, and lags a moving face by at most one frame.

    The smoother measures the noise all points share, so its motion gate stays shut on a still
    face."""
    from fkp_live.commands.bench import _demo_smoothing

    r = _demo_smoothing(None, "cpu", 1, "auto", frames=600)
    raw, smoothed = r["still_jitter"]
    assert raw / smoothed >= 6.0, r
    assert abs(r["moving_lag"][1]) <= 1.0, r


def test_several_faces_run_on_the_all_core_session_with_the_same_answer(monkeypatch):
    """One or two crops go through the one-thread session; from WIDE_BATCH crops on, through a
    second session over every core, built on first use. Both give the same points."""
    import os

    from fkp_live.track import landmarker as lmod

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    lm = lmod.Landmarker(device="cpu")
    x = np.random.default_rng(0).random((lmod.WIDE_BATCH, lm.card.channels, lm.size, lm.size)).astype(np.float32)
    one, _ = lm.run(x[:1])
    assert lm._wide is None  # a single face never builds it
    many, _ = lm.run(x)
    assert lm._wide is not None
    assert np.abs(many[:1] - one).max() < 1e-4
    assert lm._wide.get_session_options().intra_op_num_threads != 1
    assert lm.session.get_session_options().intra_op_num_threads == 1
    fixed = lmod.Landmarker(device="cpu", threads=2)  # a count given: one session, that count
    fixed.run(x)
    assert fixed._wide is None and fixed.session.get_session_options().intra_op_num_threads == 2
