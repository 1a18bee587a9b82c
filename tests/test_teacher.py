"""The teacher (net + dlib + Face Mesh, weighted per point), the rare-face oversampling that
training can ask for, and reading an exported model back into a training checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import fake_model
from conftest import DATA, dlib_model_file, needs_data
from train.cli import main as fkp_train
from train.oversample import oversampled, pose_and_mouth, rare
from train.teacher import combine, fit_weights


def _face(scale=100.0):
    return fake_model.MEAN_SHAPE * scale + 200.0


def test_an_opened_mouth_and_a_turned_head_measure_as_such():
    face = _face()
    opened, turned = face.copy(), face.copy()
    opened[[65, 66, 67]] += (0, 30)  # the lower inner lip 0.3 face heights down
    turned[27:36] += (25, 0)  # the nose to one side
    mouth, yaw = pose_and_mouth(np.stack([face, opened, turned]))
    assert mouth[0] < 0.1 < mouth[1] and mouth[2] < 0.1
    assert yaw[0] < 0.02 and yaw[2] > 0.3 and yaw[1] < 0.02


def test_oversampling_repeats_the_rare_faces_only():
    from train.data import Sample

    rng = np.random.default_rng(1)
    faces = [_face(100 + i) + rng.normal(scale=0.5, size=(68, 2)) for i in range(20)]
    faces[3][[65, 66, 67]] += (0, 40)
    faces[7][27:36] -= (30, 0)
    samples = [Sample(np.zeros((4, 4), np.uint8), f.astype(np.float32), np.ones(68, bool), f"f{i}")
               for i, f in enumerate(faces)]
    assert rare(np.stack(faces), 0.95).nonzero()[0].tolist() == [3, 7]
    more, n = oversampled(samples, 3, 0.95)
    assert n == 2 and len(more) == 24
    assert sorted(s.source for s in more[20:]) == ["f3", "f3", "f7", "f7"]
    assert oversampled(samples, 1) == (samples, 0)


def test_the_weights_go_to_the_member_that_reads_each_point_best():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(300, 68, 2))
    noise = rng.normal(size=(300, 3, 68, 2)) * np.array([0.05, 0.05, 0.5])[None, :, None, None]
    noise[:, 0, :34] *= 10  # the first member is poor on the first half of the points
    stack = truth[:, None] + noise
    w = fit_weights(stack, truth, np.ones(300))
    assert np.allclose(w.sum(axis=1), 1) and (w >= 0).all()
    assert w[:34, 1].mean() > 0.8 and abs(w[34:, 0].mean() - 0.5) < 0.15 and w[:, 2].mean() < 0.05
    fused = combine(stack, w)
    err = np.linalg.norm(fused - truth, axis=-1).mean()
    assert err < min(np.linalg.norm(stack[:, j] - truth, axis=-1).mean() for j in range(3))
    # a member that read nothing: its weight goes to the others
    stack[:5, 1] = np.nan
    fused = combine(stack, w)
    assert np.isfinite(fused).all() and np.linalg.norm(fused[:5] - truth[:5], axis=-1).mean() < 0.4


@needs_data
def test_the_teacher_fits_on_train_reads_val_and_labels_a_folder(tmp_path):
    dlib_model_file()
    pytest.importorskip("mediapipe")
    out = tmp_path / "teacher.npz"
    r = CliRunner().invoke(fkp_train, ["teacher-fit", "--data", str(DATA / "300w"), "--model", "fast",
                                       "--out", str(out), "--limit", "40"])
    assert r.exit_code == 0, r.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["train_faces"] >= 38 and report["val_faces"] >= 38
    for m in ("net", "dlib", "mesh", "ensemble"):
        assert 1.0 < report["val"][m]["nme_io"] < 8.0, (m, report["val"][m])
    assert abs(sum(report["mean_weights"].values()) - 1) < 0.003  # three rounded shares
    # label a few unlabelled faces
    src = tmp_path / "faces"
    src.mkdir()
    for p in sorted((DATA / "youtube_faces_68").glob("*.jpg"))[:6]:
        shutil.copy(p, src / p.name)
    lab = tmp_path / "labelled"
    r = CliRunner().invoke(fkp_train, ["teacher-label", str(out), "--images", str(src), "--out", str(lab),
                                       "--model", "fast"])
    assert r.exit_code == 0, r.output
    made = json.loads((lab / "pseudo_labels.json").read_text())
    assert made["labelled"] >= 5 and made["command"].startswith("fkp-train teacher-fit")
    from train.data.ibug import load_dir

    samples, _ = load_dir(lab)
    assert len(samples) == made["labelled"]
    h, w = samples[0].image.shape[:2]
    assert (samples[0].points.min(axis=0) > -0.2 * w).all() and samples[0].points[:, 0].max() < 1.2 * w


@needs_data
def test_an_exported_model_reads_back_into_a_checkpoint_that_predicts_the_same(tmp_path):
    import torch

    from train import checkpoint
    from train.from_onnx import checkpoint_from_onnx
    from train.nets import build_model

    src = tmp_path / "m"
    src.mkdir()
    root = Path(__file__).resolve().parents[1] / "models"
    for f in ("ibug68.onnx", "ibug68.json"):
        shutil.copy(root / f, src / f)
    out = tmp_path / "ck" / "fast.pt"
    rep = checkpoint_from_onnx(src / "ibug68.onnx", out, data=DATA / "300w", limit=64,
                               command="fkp-train import-onnx x --out y")
    assert rep["max_diff_px_vs_graph"] < 0.01 and rep["bn_images"] == 64
    chain = json.loads((out.parent / "task.json").read_text())
    assert chain["before"].startswith("fkp-train fit") and chain["argv"][1] == "import-onnx"
    from train.export import read_training_command

    cmd, _ = read_training_command(out.parent)
    assert cmd.endswith("&& fkp-train import-onnx x --out y")
    # in training mode (batch statistics) the net starts from the same function
    state = checkpoint.load(out)
    net_task = checkpoint.task_of(state, out)
    net = build_model(net_task)
    net.load_state_dict(state["model"])
    from train.datasets import KeypointDataset, load_split

    samples, _ = load_split(net_task, DATA / "300w", "train")
    ds = KeypointDataset(samples[:64], net_task, None)
    x = torch.stack([ds[i]["image"] for i in range(64)])
    with torch.no_grad():
        a = net.eval()(x)[0]
        b = net.train()(x)[0]
    assert float((a - b).abs().max()) * 128 < 0.5
