"""Faults (issue 13, "Nothing lost, ever"): what the user sees and what is kept when a run is hurt.

Each fault runs the real command (a subprocess where a signal, a limit or a crash is involved) and
checks the message, the exit code and that every output holds whole, readable frames up to the
last one done; a file already at an output path is replaced only by a finished one.
"""
from __future__ import annotations

import csv
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from fkp_live.commands.run import run as cli_run
from fkp_live.io.outputs import partial_path
from fkp_live.io.sources import DemoSource
from runtime_helpers import write_video


def _cmd(model_path, *args):
    return [sys.executable, "-m", "fkp_live.cli", "--model", str(model_path), "--detector", "haar", "--no-display",
            *map(str, args)]


def _spawn(cmd, **kw):
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_rows(path: Path, n: int, p, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if path.exists() and sum(1 for _ in path.open()) > n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never reached {n} rows (exit {p.poll()})")


def _decodable(path: Path) -> int:
    """Frames that decode from the start, stopping at the first damaged packet."""
    n = 0
    with av.open(str(path)) as c:
        try:
            for _ in c.decode(video=0):
                n += 1
        except av.error.FFmpegError:
            pass
    return n


def _frames(path: Path) -> int:
    """Frames of a file that must decode without any error."""
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _boxes(path: Path) -> list[str]:
    out, data, pos = [], path.read_bytes(), 0
    while pos + 8 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out.append(data[pos + 4:pos + 8].decode("latin-1"))
        if n < 8:
            break
        pos += n
    return out


def _whole_rows(path: Path) -> list[list[str]]:
    text = path.read_text()
    assert text.endswith("\n"), "the last row is cut"
    rows = list(csv.reader(text.splitlines()))
    assert len({len(r) for r in rows}) == 1, "rows of different lengths"
    return rows[1:]


# ----------------------------------------------------------------------------------------------
def test_sigkill_leaves_playable_partial_outputs_beside_the_targets(tmp_path, model_path):
    out, table = tmp_path / "out.mp4", tmp_path / "out.csv"
    out.write_bytes(b"the good old file")
    p = _spawn(_cmd(model_path, "--demo", "--demo-frames", "100000", "-o", out, "--csv", table))
    _wait_rows(partial_path(table), 90, p)  # about 3 s of video done
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert out.read_bytes() == b"the good old file" and not table.exists()  # nothing replaced
    rows = _whole_rows(partial_path(table))
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    # fragmented while recording: playable up to about a second (plus the encoder's delay) before
    assert _decodable(partial_path(out)) >= 30


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_sigterm_mid_run_finish_every_output(tmp_path, model_path, sig):
    out, table = tmp_path / "out.mp4", tmp_path / "out.csv"
    p = _spawn(_cmd(model_path, "--demo", "--demo-frames", "100000", "-o", out, "--csv", table))
    _wait_rows(partial_path(table), 20, p)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted; outputs hold every frame done" in err and "Traceback" not in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.csv", "out.mp4"]
    rows = _whole_rows(table)
    assert _frames(out) == len(rows) >= 20
    boxes = _boxes(out)
    assert "moof" not in boxes and boxes.index("moov") < boxes.index("mdat")  # plain MP4, index in front


def _wait_catching(p, sig, timeout: float = 30) -> None:
    """Until process `p` catches `sig` (Linux: its SigCgt mask). The command installs its handlers
    first thing, before click, OpenCV or ONNX Runtime are imported; a signal that comes while the
    interpreter itself is still starting (on a loaded machine that can take over 0.1 s) meets
    Python's default and is not the command's to handle."""
    status = Path(f"/proc/{p.pid}/status")
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        try:
            caught = int(next(ln for ln in status.read_text().splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
        except (OSError, StopIteration):
            caught = 0
        if caught >> (int(sig) - 1) & 1:
            return
        time.sleep(0.002)
    raise AssertionError(f"the command did not install its {sig!r} handler within {timeout} s")


@pytest.mark.parametrize("sig, delay", [(signal.SIGINT, 0.0), (signal.SIGTERM, 0.0), (signal.SIGINT, 0.3), (signal.SIGTERM, 0.3)])
def test_a_signal_during_start_up_exits_130_and_keeps_the_old_outputs(tmp_path, model_path, sig, delay):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the good old file")
    p = _spawn(_cmd(model_path, "--demo", "--demo-frames", "100000", "-o", out))
    if sys.platform.startswith("linux"):
        _wait_catching(p, signal.SIGTERM)  # installed after SIGINT's: both handlers are the command's
    else:
        time.sleep(0.1)
    time.sleep(delay)  # while click, OpenCV or ONNX Runtime are still importing
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and "ImportError" not in err
    assert os.listdir(tmp_path) == ["out.mp4"]  # no partial file left
    if out.read_bytes() != b"the good old file":  # the run got to its first frames: a finished file
        assert delay > 0.1 and _frames(out) > 0


def test_output_folder_removed_during_the_run(tmp_path, model_path):
    folder = tmp_path / "outs"
    folder.mkdir()
    table = folder / "o.csv"
    p = _spawn(_cmd(model_path, "--demo", "--demo-frames", "100000", "-o", folder / "o.mp4", "--csv", table))
    _wait_rows(partial_path(table), 10, p)
    shutil.rmtree(folder)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert "was removed during the run" in err and str(folder) in err and "Traceback" not in err


def _fsize_limit(n: int):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))
    return limit


def test_file_size_limit_mid_run(tmp_path, model_path):
    out, table = tmp_path / "out.mp4", tmp_path / "out.csv"
    p = _spawn(_cmd(model_path, "--demo", "--demo-frames", "100000", "-o", out, "--csv", table),
               preexec_fn=_fsize_limit(400_000))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    assert f"error: cannot write --output {out}: File too large after" in err and "Traceback" not in err
    assert _frames(out) >= 30  # cut after its last whole fragment: every frame in it decodes
    rows = _whole_rows(table)
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    assert not partial_path(out).exists() and not partial_path(table).exists()


def test_file_size_limit_on_the_csv_keeps_whole_rows(tmp_path, model_path):
    table = tmp_path / "out.csv"
    p = _spawn(_cmd(model_path, "--demo", "--demo-frames", "100000", "--csv", table),
               preexec_fn=_fsize_limit(30_000))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    assert f"error: cannot write --csv {table}: File too large after" in err and "Traceback" not in err
    rows = _whole_rows(table)
    assert rows and [int(r[0]) for r in rows] == list(range(len(rows)))


# ----------------------------------------------------------------------------------------------
def test_source_cut_mid_gop_warns_and_keeps_every_frame_read(tmp_path, model_path):
    frames = [f.image for f in DemoSource(frames=60, size=(160, 120))]
    data = write_video(tmp_path / "full.mp4", frames, faststart=True, gop=250).read_bytes()  # one GOP: any cut is mid-GOP
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out, table = tmp_path / "o.mp4", tmp_path / "o.csv"
    p = subprocess.run(_cmd(model_path, "--video", cut, "-o", out, "--csv", table), cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    n = len({r[0] for r in _whole_rows(table)})  # frames read (a frame may have several faces)
    assert 0 < n < 60
    assert f"ended after {n} of the 60 frames its header promises" in p.stderr
    assert _frames(out) == n


def _invoke(*args):
    res = CliRunner().invoke(cli_run, [str(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in res.output
    return res.exit_code, res.output


def test_model_file_replaced_by_garbage(tmp_path, model_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(os.urandom(3000))
    shutil.copy(model_path.with_suffix(".json"), bad.with_suffix(".json"))
    keep = tmp_path / "o.csv"
    keep.write_text("good\n")
    code, out = _invoke("--demo", "--demo-frames", "2", "--model", bad, "--no-display", "--csv", keep)
    assert code == 2 and f"model file {bad} is not a valid ONNX model" in out, out
    assert keep.read_text() == "good\n"


def test_card_that_does_not_match_its_model(tmp_path, model_path):
    import json

    m = tmp_path / "m.onnx"
    shutil.copy(model_path, m)
    card = json.loads(model_path.with_suffix(".json").read_text())
    card["input_size"] = 64
    m.with_suffix(".json").write_text(json.dumps(card))
    code, out = _invoke("--demo", "--demo-frames", "2", "--model", m, "--no-display")
    assert code == 2 and "the card does not belong to this model" in out, out


def _fixed_batch_model(tmp_path, model_path, b=1):
    import onnx

    model = onnx.load(str(model_path))
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = b  # "batch" -> a fixed b
    path = tmp_path / f"fixed{b}.onnx"
    onnx.save(model, str(path))
    shutil.copy(model_path.with_suffix(".json"), path.with_suffix(".json"))
    return path


def test_model_with_a_fixed_batch_of_one_runs_faces_one_by_one(tmp_path, model_path, caplog):
    from fkp_live.track.landmarker import Landmarker

    with caplog.at_level("WARNING", logger="fkp_live"):
        lm = Landmarker(_fixed_batch_model(tmp_path, model_path), device="cpu")
    assert lm.fixed_batch == 1 and "fixed batch of 1: faces are run one by one" in caplog.text
    dyn = Landmarker(model_path, device="cpu")
    x = np.random.default_rng(0).normal(size=(3, 1, lm.size, lm.size)).astype(np.float32)
    (p1, c1), (p2, c2) = lm.run(x), dyn.run(x)
    np.testing.assert_allclose(p1, p2, atol=1e-6)
    np.testing.assert_allclose(c1, c2, atol=1e-6)
    assert lm.run(x[:0])[0].shape == (0, 68, 2)


def test_fixed_batch_model_tracks_two_faces_through_the_cli(tmp_path, model_path):
    from fkp_live.io.sources import DemoSource
    from runtime_helpers import write_video

    frames = [f.image for f in DemoSource(frames=4, faces=2)]
    video = write_video(tmp_path / "two.mp4", frames)
    table = tmp_path / "o.csv"
    code, out = _invoke("--video", video, "--model", _fixed_batch_model(tmp_path, model_path), "--no-display",
                        "--csv", table)
    assert code == 0, out
    assert "fixed batch of 1" in out and len(_whole_rows(table)) >= 4


def test_file_size_limit_before_the_first_fragment_keeps_the_old_file(tmp_path, model_path):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the good old file")
    p = _spawn(_cmd(model_path, "--demo", "--demo-frames", "100000", "-o", out), preexec_fn=_fsize_limit(20_000))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    assert f"error: cannot write --output {out}: File too large after" in err and "Traceback" not in err
    assert "no whole frame reached the file" in err
    assert out.read_bytes() == b"the good old file" and os.listdir(tmp_path) == ["out.mp4"]
