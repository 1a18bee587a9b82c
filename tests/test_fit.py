"""The training loop: it learns, it resumes exactly, it runs under torchrun (DDP, gloo)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from train.cli import main as fkp_train
from train.checkpoint import load_model
from train.fit import FitConfig, fit
from train.tasks import get

from conftest import DATA, ROOT
IMM = DATA / "imm"
needs_imm = pytest.mark.skipif(not IMM.is_dir(), reason=f"IMM data not found at {IMM}")


def _log(run):
    with open(Path(run) / "log.csv") as f:
        return list(csv.DictReader(f))


@needs_imm
def test_tiny_run_overfits_a_handful_of_images(tmp_path):
    from dataclasses import asdict

    from train.augment import NO_AUGMENT

    task = get("nose").with_(net="mobile", size=(64, 48), loss="l1", epochs=80, batch=8, lr=3e-3, augment=asdict(NO_AUGMENT), schedule="none")
    cfg = FitConfig(task=task, data=str(IMM), out=str(tmp_path / "run"), limit=8, val_limit=8,
                    progress=False, threads=2)
    fit(cfg)
    rows = _log(tmp_path / "run")
    first, last = float(rows[0]["train_loss"]), float(rows[-1]["train_loss"])
    assert last < first / 2.5, (first, last)
    # and on those very images the nose tip is found within a few pixels (640x480 images)
    from train.datasets import KeypointDataset, load_split
    from train.evaluate import evaluate

    model, t = load_model(tmp_path / "run" / "last.pt")
    samples, _ = load_split(t, str(IMM), "train")
    res = evaluate(model, KeypointDataset(samples[:8], t, None))
    print(res)
    assert res["mean_px"] < 12, res


@needs_imm
def test_resume_continues_exactly(tmp_path):
    task = get("nose").with_(epochs=3, batch=8)
    common = dict(task=task, data=str(IMM), limit=24, val_limit=8, progress=False, threads=1)
    fit(FitConfig(out=str(tmp_path / "a"), **common))
    # the same run, stopped after one epoch and resumed
    fit(FitConfig(out=str(tmp_path / "b"), stop_after=1, **common))
    assert len(_log(tmp_path / "b")) == 1
    fit(FitConfig(out=str(tmp_path / "b"), resume=True, **common))
    from train import checkpoint

    a = checkpoint.load(tmp_path / "a" / "last.pt")["model"]
    b = checkpoint.load(tmp_path / "b" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert [r["epoch"] for r in _log(tmp_path / "b")] == ["1", "2", "3"]
    assert not list((tmp_path / "b").glob("*.tmp")), "no half-written checkpoint left behind"


@needs_imm
def test_fit_cli_and_eval_cli(tmp_path):
    r = CliRunner().invoke(fkp_train, ["fit", "--task", "nose", "--data", str(IMM), "--out",
                                       str(tmp_path / "r"), "--epochs", "1", "--limit", "16", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["epochs_run"] == 1
    r = CliRunner().invoke(fkp_train, ["eval", str(tmp_path / "r" / "best.pt"), "--data", str(IMM)])
    assert r.exit_code == 0, r.output
    assert '"mean_px"' in r.output


@needs_imm
def test_wing_axes_loss_trains_a_heatmap_net_and_refuses_a_regressor(tmp_path):
    # the ambiguity-weighted loss reads the heatmaps the net made for the batch: it runs through
    # the CLI on a heatmap net, and a regression net is refused with the option named
    common = ["--data", str(IMM), "--epochs", "1", "--limit", "16", "--threads", "1", "--loss", "wing-axes"]
    r = CliRunner().invoke(fkp_train, ["fit", "--task", "imm58-hm", "--out", str(tmp_path / "a"), *common])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["epochs_run"] == 1
    assert json.loads((tmp_path / "a" / "task.json").read_text())["task"]["loss"] == "wing-axes"
    r = CliRunner().invoke(fkp_train, ["fit", "--task", "nose", "--out", str(tmp_path / "b"), *common])
    assert r.exit_code != 0 and "--loss wing-axes need a heatmap net" in r.output, r.output
    assert "Traceback" not in r.output


def test_fit_cli_bad_data_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(fkp_train, ["fit", "--task", "ibug68", "--data", str(tmp_path / "empty"),
                                       "--out", str(tmp_path / "r")])
    assert r.exit_code == 2
    assert "no .pts files found" in r.output


@needs_imm
def test_ddp_two_gloo_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "train.ddp", "--task", "nose", "--data", str(IMM), "--out", str(tmp_path / "ddp"),
           "--epochs", "2", "--limit", "32", "--batch", "4", "--threads", "1"]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _log(tmp_path / "ddp")
    assert [r["epoch"] for r in rows] == ["1", "2"], "rank 0 alone writes the log"
    model, _ = load_model(tmp_path / "ddp" / "best.pt")
    assert sum(p.numel() for p in model.parameters()) > 0
    # each of the 2 processes saw half of the 32 images per epoch: 4 batches of 4
    assert "4/4" in p.stderr or "epoch 2/2" in p.stderr


def test_predict_writes_annotated_images_and_points(tmp_path):
    import cv2
    import numpy as np

    from train.data.ibug import write_pts
    from train.nets import build_model

    task = get("ibug68").with_(size=(64, 64), net_args={"width": 0.5, "decoder": 16})
    torch.save({"model": build_model(task).state_dict(), "task": task.to_dict()}, tmp_path / "m.pt")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 100, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "face.png"), img)
    write_pts(tmp_path / "face.pts", rng.uniform(30, 80, (68, 2)))
    r = CliRunner().invoke(fkp_train, ["predict", str(tmp_path / "m.pt"), str(tmp_path / "face.png"),
                                       "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert cv2.imread(str(tmp_path / "out" / "face_pred.png")).shape == (120, 100, 3)
    rows = (tmp_path / "out" / "points.csv").read_text().splitlines()
    assert rows[0].startswith("image,confidence,x_0") and rows[1].startswith("face.png,")
    assert len(rows[1].split(",")) == 2 + 2 * 68
    # a crop-mode model needs a face region: no .pts beside the image is a clear error
    cv2.imwrite(str(tmp_path / "bare.png"), img)
    r = CliRunner().invoke(fkp_train, ["predict", str(tmp_path / "m.pt"), str(tmp_path / "bare.png"),
                                       "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "put a .pts beside the image" in r.output


@needs_imm
def test_early_stopping_stops_after_patience(tmp_path, monkeypatch):
    """The stopping rule alone: a validation metric that never improves after epoch 1."""
    import train.fit as fit_mod

    monkeypatch.setattr(fit_mod, "evaluate", lambda *a, **k: {"mean_px": 5.0, "presence": 1.0, "loss": 0.1})
    task = get("nose").with_(epochs=10, batch=8)
    summary = fit(FitConfig(task=task, data=str(IMM), out=str(tmp_path / "r"), limit=8, val_limit=4,
                            patience=2, progress=False, threads=1))
    assert summary["epochs_run"] == 3 and summary["best_epoch"] == 1
    assert [r["epoch"] for r in _log(tmp_path / "r")] == ["1", "2", "3"]


@needs_imm
@pytest.mark.parametrize("schedule,check", [
    ("step", lambda lrs: lrs[0] == pytest.approx(1e-4) and lrs[1] == pytest.approx(1e-5)),
    ("cosine", lambda lrs: 1e-3 > lrs[0] > lrs[1] > lrs[2] >= 0),
    ("plateau", lambda lrs: lrs == [pytest.approx(1e-3)] * 3),
    ("onecycle", lambda lrs: lrs[-1] < 1e-5),
])
def test_schedules_move_the_learning_rate(tmp_path, schedule, check):
    task = get("nose").with_(epochs=3, batch=8, lr=1e-3, schedule=schedule, optimizer="adam")
    fit(FitConfig(task=task, data=str(IMM), out=str(tmp_path / "r"), limit=8, val_limit=4,
                  progress=False, threads=1))
    lrs = [float(r["lr"]) for r in _log(tmp_path / "r")]
    assert check(lrs), lrs


def test_a_bad_file_suggests_skip_bad_only_where_the_command_has_it(tmp_path):
    import numpy as np

    from train.data.ibug import write_pts

    d = tmp_path / "data" / "set"
    d.mkdir(parents=True)
    write_pts(d / "a.pts", np.random.default_rng(0).uniform(10, 50, (68, 2)))
    (d / "a.png").write_bytes(b"not an image")
    r = CliRunner().invoke(fkp_train, ["fit", "--task", "ibug68", "--data", str(tmp_path / "data"),
                                       "--out", str(tmp_path / "r")])
    assert r.exit_code == 2, r.output
    assert "a.png: unreadable image" in r.output and "(or pass --skip-bad to skip bad files)" in r.output
    # calibrate reads the same data but has no --skip-bad: it does not suggest one
    r = CliRunner().invoke(fkp_train, ["calibrate", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "c.json")])
    assert r.exit_code == 2, r.output
    assert "a.png: unreadable image" in r.output and "--skip-bad" not in r.output


def test_fit_startup_line_counts_parameters(tmp_path, capsys):
    """setup() says what it built: the network and its parameter count, and the sample counts."""
    import numpy as np

    import cv2
    from train.data.ibug import write_pts
    from train.fit import setup
    from train.nets import count_params

    d = tmp_path / "data" / "set"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(40):
        cv2.imwrite(str(d / f"face_{i:03d}.png"), rng.integers(0, 255, (80, 80, 3), dtype=np.uint8))
        write_pts(d / f"face_{i:03d}.pts", rng.uniform(20, 60, (68, 2)))
    task = get("ibug68").with_(size=(64, 64), net_args={"width": 0.5, "decoder": 16}, epochs=1)
    run = setup(FitConfig(task=task, data=str(tmp_path / "data"), out=str(tmp_path / "r"), progress=False, threads=1))
    n = count_params(run.model)
    err = capsys.readouterr().err
    assert f"ibug68: mobile network, {n:,} parameters; {len(run.train_ds)} training and {len(run.val_ds)} validation samples" in err
    assert len(run.train_ds) == 30 and len(run.val_ds) == 2
    assert (tmp_path / "r" / "task.json").exists()


def test_the_library_does_not_import_the_cli():
    """fit, checkpoint, export, ... sit below the CLI: importing them never imports train.cli."""
    code = ("import sys, train.fit, train.checkpoint, train.evaluate, train.export, train.predict, "
            "train.calibrate, train.plots, train.ddp; assert 'train.cli' not in sys.modules, 'cli imported'")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


def test_ddp_entry_point_takes_the_fit_options():
    p = subprocess.run([sys.executable, "-m", "train.ddp", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Usage: train.ddp [OPTIONS]" in p.stdout and "--heatmap-weight" in p.stdout and "--resume" in p.stdout
    # the old module path says where the entry point went instead of training
    p = subprocess.run([sys.executable, "-m", "train.fit", "--task", "nose"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and "train.ddp" in p.stderr


@needs_imm
def test_loader_workers_augment_each_epoch_afresh_and_as_without_workers(tmp_path):
    """The DataLoader's worker processes see each epoch's number: every epoch augments anew, and
    the examples are those a run without workers makes (the dataset seeds by seed, epoch, index)."""
    from train.fit import setup

    task = get("nose").with_(epochs=2, batch=4)

    def epochs(workers):
        run = setup(FitConfig(task=task, data=str(IMM), out=str(tmp_path / f"w{workers}"), limit=8,
                              val_limit=4, progress=False, threads=1, workers=workers))
        seen = []
        for epoch in range(2):
            run.train_ds.set_epoch(epoch)
            seen.append({int(i): x for b in run.loader for i, x in zip(b["index"], b["image"])})
        return seen

    plain, workers = epochs(0), epochs(2)
    assert sorted(plain[0]) == sorted(workers[1]) == list(range(8))
    assert any(not torch.equal(plain[0][i], plain[1][i]) for i in plain[0])
    for e in range(2):
        for i in plain[e]:
            torch.testing.assert_close(workers[e][i], plain[e][i], rtol=0, atol=0)


@needs_imm
def test_self_crop_reads_the_training_set_afresh_before_each_epoch(tmp_path):
    """augment self_crop: before each epoch the net reads every training sample from its true
    points' crop, and those points (image pixels) are what the epoch's own-crops are cut from."""
    from dataclasses import asdict, replace

    import numpy as np

    from train.augment import NO_AUGMENT
    from train.evaluate import predict_dataset
    from train.datasets import KeypointDataset
    from train.fit import setup, train_one_epoch, unwrap

    task = get("imm58-crop").with_(epochs=2, batch=4, augment=asdict(replace(NO_AUGMENT, self_crop=1.0)))
    run = setup(FitConfig(task=task, data=str(IMM), out=str(tmp_path / "run"), limit=8, val_limit=4,
                          progress=False, threads=1))
    model = unwrap(run.model)
    seen = []
    for epoch in range(2):
        want = predict_dataset(model, KeypointDataset(run.train_ds.samples, task, None))[0]
        train_one_epoch(run, epoch)
        got = run.train_ds.crop_points
        assert got.shape == (8, 58, 2)
        np.testing.assert_allclose(got, want, atol=1e-3)
        seen.append(got.copy())
    assert np.abs(seen[1] - seen[0]).max() > 1e-3  # read again with the trained weights
