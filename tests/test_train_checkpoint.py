"""Checkpoints load weights-only: our own (old and new) load, anything carrying a pickled object is
refused with a clear error naming the file, and the object is never built."""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from train import checkpoint
from train.checkpoint import CheckpointError, load, load_model, plain, save_atomic
from train.cli import main as fkp_train
from train.data.ibug import write_pts
from train.nets import build_model
from train.tasks import get


def _tiny_task():
    return get("ibug68").with_(size=(64, 64), net_args={"width": 0.5, "decoder": 16})


class Payload:
    """Unpickling this opens (creates) a marker file: proof that a loader ran the payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(path, marker, raw=False):
    task = _tiny_task()
    state = {"model": build_model(task).state_dict(), "task": task.to_dict(), "epoch": 0, "val": {},
             "extra": Payload(marker)}
    if raw:  # a bare pickle rather than torch.save's zip (without tensors, which pickle their own way)
        path.write_bytes(pickle.dumps({**state, "model": {}}, protocol=2))
    else:
        torch.save(state, path)
    return path


def test_the_payload_is_live(tmp_path):
    """The test's payload really runs under a plain unpickler (so its absence below means something)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.parametrize("raw", [False, True], ids=["torch.save", "bare-pickle"])
def test_a_checkpoint_with_a_pickled_object_is_refused_unrun(tmp_path, raw):
    marker = tmp_path / "ran"
    evil = _evil(tmp_path / "evil.pt", marker, raw)
    with pytest.raises(CheckpointError) as e:
        load(evil)
    assert str(evil) in str(e.value) and "not a plain fkp-train checkpoint" in str(e.value)
    assert re.search(r"holds a pickled (io|builtins)\.open", str(e.value)), "it names what the file would build"
    with pytest.raises(CheckpointError):
        load_model(evil)
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("command", ["eval", "export", "predict", "kaggle-submit", "plot"])
def test_every_command_refuses_it_with_exit_2(tmp_path, command):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    run.mkdir()
    evil = _evil(run / "best.pt", marker)
    (tmp_path / "img.png").write_bytes(b"")
    args = {
        "eval": ["eval", str(evil), "--data", str(tmp_path)],
        "export": ["export", str(evil), "--out", str(tmp_path / "m.onnx")],
        "predict": ["predict", str(evil), str(tmp_path / "img.png"), "--out", str(tmp_path / "o")],
        "kaggle-submit": ["kaggle-submit", str(evil), "--test", str(tmp_path / "img.png"), "--lookup",
                          str(tmp_path / "img.png"), "--out", str(tmp_path / "s.csv")],
        "plot": ["plot", str(run), "--data", str(tmp_path)],
    }[command]
    r = CliRunner().invoke(fkp_train, args)
    assert r.exit_code == 2, r.output
    assert "not a plain fkp-train checkpoint" in r.output and str(evil) in r.output
    assert "Traceback" not in r.output
    assert not marker.exists()
    assert not (tmp_path / "m.onnx").exists()


def _tiny_300w(root, n=40):
    """n small faces with 68 points each (names hash to train, val and test)."""
    d = root / "set"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(d / f"face_{i:03d}.png"), rng.integers(0, 255, (80, 80, 3), dtype=np.uint8))
        write_pts(d / f"face_{i:03d}.pts", rng.uniform(20, 60, (68, 2)))
    return root


@pytest.mark.parametrize("how", ["init", "resume"])
def test_fit_refuses_it_for_init_and_resume(tmp_path, how):
    marker = tmp_path / "ran"
    data = _tiny_300w(tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    if how == "init":
        evil = _evil(tmp_path / "evil.pt", marker)
        extra = ["--init", str(evil)]
    else:
        evil = _evil(out / "last.pt", marker)
        extra = ["--resume"]
    r = CliRunner().invoke(fkp_train, ["fit", "--task", "ibug68", "--data", str(data), "--out", str(out),
                                       "--epochs", "1", "--size", "64", "--net-args", '{"width": 0.5, "decoder": 16}',
                                       "--threads", "1", *extra])
    assert r.exit_code == 2, r.output
    assert "not a plain fkp-train checkpoint" in r.output and str(evil) in r.output
    assert not marker.exists()


def test_unreadable_files_name_the_file(tmp_path):
    for name, body in (("empty.pt", b""), ("garbage.pt", b"\x00garbage" * 50), ("text.pt", b"hello")):
        (tmp_path / name).write_bytes(body)
        with pytest.raises(CheckpointError, match=str(tmp_path / name)):
            load(tmp_path / name)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="no model state"):
        load(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "missing.pt")
    torch.save({"model": {}, "task": {"name": "x"}}, tmp_path / "notask.pt")
    with pytest.raises(CheckpointError, match="no usable task"):
        load_model(tmp_path / "notask.pt")


def test_old_checkpoints_with_numpy_scalars_still_load(tmp_path):
    """Runs before `save_atomic` made them plain wrote numpy scalars into "val" (and "best")."""
    task = _tiny_task()
    model = build_model(task)
    torch.save({"model": model.state_dict(), "task": task.to_dict(), "epoch": 3, "best": np.float64(4.5),
                "val": {"nme_io": np.float64(4.5), "n": np.int64(12), "presence": np.float32(0.9),
                        "ok": np.bool_(True)}}, tmp_path / "old.pt")
    state = load(tmp_path / "old.pt")
    assert state["val"]["nme_io"] == 4.5 and state["val"]["n"] == 12
    m, t = load_model(tmp_path / "old.pt")
    assert t == task
    for k, v in model.state_dict().items():
        torch.testing.assert_close(m.state_dict()[k], v)
    # written again, it holds plain Python numbers: loadable without any allow-list
    save_atomic(state, tmp_path / "new.pt")
    again = torch.load(tmp_path / "new.pt", weights_only=True)
    assert type(again["val"]["nme_io"]) is float and type(again["val"]["n"]) is int
    assert type(again["best"]) is float and type(again["val"]["ok"]) is bool
    assert not list(tmp_path.glob("*.tmp"))


def test_a_full_resume_state_round_trips(tmp_path):
    """Everything last.pt holds: optimiser and scheduler states, RNG tensors, tuples in the task."""
    task = _tiny_task()
    model = build_model(task)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(2, 1, 64, 64))[0].sum().backward()
    opt.step()
    scheds = [torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=10),
              torch.optim.lr_scheduler.ReduceLROnPlateau(opt)]
    for sched in scheds:
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "epoch": 0, "best": float("inf"), "best_epoch": -1, "stale": 0, "task": task.to_dict(),
                 "torch_rng": torch.get_rng_state(), "loader_rng": torch.Generator().get_state(),
                 "val": {"nme_io": float("nan")}}
        save_atomic(state, tmp_path / "last.pt")
        back = load(tmp_path / "last.pt")
        assert back["task"]["size"] == (64, 64) and back["scheduler"].keys() == state["scheduler"].keys()
        assert torch.equal(back["torch_rng"], state["torch_rng"])
        opt.load_state_dict(back["optimizer"])
        sched.load_state_dict(back["scheduler"])


def test_plain_keeps_state_dicts_as_they_are():
    sd = build_model(_tiny_task()).state_dict()
    assert plain(sd) is sd, "no numpy inside: the very same OrderedDict, _metadata and all"
    od = OrderedDict(a=np.float64(1.0))
    od._metadata = {"": {"version": 2}}
    out = plain(od)
    assert type(out) is OrderedDict and out["a"] == 1.0 and type(out["a"]) is float
    assert out._metadata == {"": {"version": 2}}
    assert plain((np.int64(1), [np.float32(2.0)])) == (1, [2.0])


def test_the_allow_list_is_only_numpy_scalars():
    names = {f"{g.__module__}.{g.__name__}" for g in checkpoint.SAFE_GLOBALS}
    assert all(n.startswith("numpy") for n in names), names
