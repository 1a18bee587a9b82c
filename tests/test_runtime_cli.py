"""fkp-live's command line: every bad input gets one clear line and the right exit code."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fkp_live.cli import run
from runtime_helpers import write_video


def invoke(*args, env=None):
    res = CliRunner().invoke(run, [str(a) for a in args], env=env, catch_exceptions=False)
    return res.exit_code, res.output


def err_line(out: str) -> str:
    lines = [line for line in out.splitlines() if "error" in line]
    assert len(lines) == 1, out
    assert "Traceback" not in out
    return lines[0]


@pytest.fixture
def face_video(tmp_path):
    from fkp_live.io.sources import DemoSource

    imgs = [f.image for f in DemoSource(frames=12)]
    return write_video(tmp_path / "face.mp4", imgs, fps=30, audio_seconds=0.4)


def test_help_teaches_with_examples():
    code, out = invoke("--help")
    assert code == 0
    for s in ("Examples:", "--camera", "--video", "--images", "--demo", "--csv", "FKP_LIVE_", "Exit status"):
        assert s in out


def test_video_to_mp4_csv_jsonl(tmp_path, model_path, face_video):
    o, c, j = tmp_path / "o.mp4", tmp_path / "o.csv", tmp_path / "o.jsonl"
    code, out = invoke("--video", face_video, "--model", model_path, "-o", o, "--csv", c, "--jsonl", j,
                       "--no-display", "--stats", "--draw", "all")
    assert code == 0, out
    assert "12 frames" in out and "ms per frame" in out and "infer" in out and "peak RSS" in out
    rows = list(csv.reader(c.open()))
    assert len(rows) == 13 and rows[1][2] == "0" and rows[1][4] == "1"
    assert len(j.read_text().splitlines()) == 12
    import av

    with av.open(str(o)) as ct:
        assert {s.type for s in ct.streams} == {"video", "audio"}
        assert sum(1 for _ in ct.decode(video=0)) == 12


def test_options_from_environment(tmp_path, model_path):
    c = tmp_path / "o.csv"
    code, out = invoke("--demo", "--csv", c, env={"FKP_LIVE_MODEL": str(model_path), "FKP_LIVE_NO_DISPLAY": "1",
                                                  "FKP_LIVE_DEMO_FRAMES": "4", "FKP_LIVE_DEVICE": "cpu"})
    assert code == 0, out
    assert len(c.read_text().splitlines()) == 5


@pytest.mark.parametrize("args, code, pattern", [
    (["--camera", "57"], 2, "camera 57 could not be opened"),
    (["--video", "{tmp}/missing.mp4"], 2, "missing.mp4 does not exist"),
    (["--video", "{tmp}/empty.mp4"], 2, "empty.mp4 is empty"),
    (["--video", "{tmp}/text.mp4"], 2, "text.mp4 is not a video"),
    (["--video", "{tmp}/cut.mp4"], 2, "cut.mp4"),
    (["--images", "{tmp}/nothing"], 2, "holds no images"),
    (["--demo", "--video", "x.mp4"], 2, "exactly one source"),
    ([], 2, "exactly one source"),
    (["--demo", "--device", "gpu"], 2, "'--device'"),
    (["--demo", "--draw", "points,sparkles"], 2, "sparkles"),
    (["--demo", "-o", "{tmp}/no/such/dir/o.mp4"], 2, "does not exist; create it first"),
    (["--demo", "--csv", "{tmp}"], 2, "is a folder"),
    (["--demo", "--csv", "{tmp}/a.csv", "--jsonl", "{tmp}/a.csv"], 2, "different files"),
    (["--demo", "--model", "{tmp}/missing.onnx"], 2, "missing.onnx does not exist"),
    (["--demo", "--model", "nosuchmodel"], 2, "no model named 'nosuchmodel'"),
    (["--demo", "--model", "{tmp}/corrupt.onnx"], 2, "corrupt.onnx is not a valid ONNX model"),
    (["--demo", "--model", "{tmp}/nocard.onnx"], 2, "card .*nocard.json is missing"),
    (["--demo", "--max-faces", "0"], 2, "--max-faces"),
])
def test_bad_input_one_line_and_exit_code(tmp_path, model_path, face_video, args, code, pattern):
    import re
    import shutil

    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello\n" * 100)
    data = face_video.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "nothing").mkdir()
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00not onnx at all" * 10)
    shutil.copy(model_path.with_suffix(".json"), tmp_path / "corrupt.json")
    shutil.copy(model_path, tmp_path / "nocard.onnx")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--model" not in args:
        args += ["--model", str(model_path)]
    got, out = invoke(*args, "--no-display", "--demo-frames", "2")
    assert got == code, out
    assert re.search(pattern, err_line(out)), out


def test_unreadable_image_in_folder_is_skipped_and_reported(tmp_path, model_path):
    from fkp_live.io.sources import DemoSource

    folder = tmp_path / "imgs"
    folder.mkdir()
    img = next(iter(DemoSource(frames=1))).image
    cv2.imwrite(str(folder / "a.jpg"), img)
    (folder / "b.jpg").write_bytes(b"broken")
    cv2.imwrite(str(folder / "c.png"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    c = tmp_path / "o.csv"
    code, out = invoke("--images", folder, "--model", model_path, "--csv", c, "--no-display")
    assert code == 0, out
    assert "b.jpg: not a readable image" in out and "skipped 1 unreadable image: b.jpg" in out
    rows = list(csv.DictReader(c.open()))
    assert [r["source"] for r in rows] == ["a.jpg", "c.png"] and all(r["face_id"] == "0" for r in rows)


def test_no_face_at_all(tmp_path, model_path):
    blank = [np.full((120, 160, 3), 100, np.uint8)] * 5
    v = write_video(tmp_path / "blank.mp4", blank)
    c = tmp_path / "o.csv"
    code, out = invoke("--video", v, "--model", model_path, "--csv", c, "--no-display")
    assert code == 0
    assert "no face found in any of the 5 frames" in out
    rows = list(csv.DictReader(c.open()))
    assert len(rows) == 5 and {r["face_id"] for r in rows} == {"-1"} and {r["success"] for r in rows} == {"0"}


def test_twenty_faces(tmp_path, model_path):
    from fkp_live.io.sources import DemoSource

    imgs = [f.image for f in DemoSource(frames=2, faces=20, tight=True)]
    v = write_video(tmp_path / "crowd.mp4", imgs)
    j = tmp_path / "o.jsonl"
    code, out = invoke("--video", v, "--model", model_path, "--detector", "haar", "--jsonl", j, "--no-display")
    assert code == 0, out
    assert "20 faces found in frame 0; tracking 5 (--max-faces 5)" in out
    assert len(json.loads(j.read_text().splitlines()[0])["faces"]) == 5
    code, out = invoke("--video", v, "--model", model_path, "--detector", "haar", "--jsonl", j, "--no-display",
                       "--max-faces", "20")
    assert code == 0 and "faces found" not in out
    assert len(json.loads(j.read_text().splitlines()[0])["faces"]) == 20


def test_face_leaving_the_frame(tmp_path, model_path):
    from fkp_live.io.sources import DemoSource, Motion

    src = DemoSource(frames=45, motion=lambda t: Motion(tx=0.0 if t < 0.3 else 900.0 * (t - 0.3)))
    v = write_video(tmp_path / "leave.mp4", [f.image for f in src])
    c = tmp_path / "o.csv"
    code, out = invoke("--video", v, "--model", model_path, "--csv", c, "--no-display", "-v",
                       "--redetect-every", "3")
    assert code == 0, out
    assert "face 0 lost in frame" in out
    rows = list(csv.DictReader(c.open()))
    assert rows[0]["face_id"] == "0" and rows[-1]["face_id"] == "-1"
    assert len({r["frame"] for r in rows}) == 45


def test_runtime_never_imports_torch_onnx_or_train():
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import sys, fkp_live, fkp_live.cli, fkp_live.track.tracker, fkp_live.bench, fkp_live.io.sinks, fkp_live.render.draw; "
            "from fkp_live import Tracker; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'train', 'onnx')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_bench_is_reachable_from_the_cli():
    import subprocess
    import sys

    from conftest import ROOT

    p = subprocess.run([sys.executable, "-m", "fkp_live.cli", "bench", "--help"], cwd=ROOT, capture_output=True,
                       text=True)
    assert p.returncode == 0 and "FaceMesh" in p.stdout


@pytest.mark.parametrize("alias", ["fast", "accurate", "imm58", "kaggle15"])
def test_shipped_models_track_the_demo(tmp_path, alias):
    """`--model fast|accurate|imm58|kaggle15` run the shipped models end to end."""
    c = tmp_path / "t.csv"
    code, out = invoke("--demo", "--demo-frames", 8, "--model", alias, "--csv", c, "--no-display")
    assert code == 0, out
    rows = list(csv.DictReader(open(c)))
    assert len({r["frame"] for r in rows}) == 8 and len(rows) == 8
    # the face is found in every frame (a faceless frame still writes a row, with success 0)
    assert all(r["success"] == "1" and r["face_id"] == "0" for r in rows), rows[0]
