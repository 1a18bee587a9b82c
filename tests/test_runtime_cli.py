"""fkp-live's command line: every bad input gets one clear line and the right exit code."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fkp_live.commands.run import run
from fkp_live.io.sources import DemoSource
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
    assert len(rows) == 13 and rows[1][1] == "0" and rows[1][4] == "1"  # face_id, success
    assert len(j.read_text().splitlines()) == 12
    import av

    with av.open(str(o)) as ct:
        assert {s.type for s in ct.streams} == {"video", "audio"}
        assert sum(1 for _ in ct.decode(video=0)) == 12


@pytest.mark.parametrize("preset,crf,marks", [
    ("realtime", 20, (b"crf=20.0", b"cabac=1", b"deblock=1:0:0", b"subme=1", b"bframes=3", b"8x8dct=0")),
    ("superfast", 20, (b"crf=20.0", b"subme=1", b"8x8dct=1")),
    ("veryfast", 27, (b"crf=27.0", b"subme=2"))])
def test_mp4_preset_and_crf_reach_the_encoder(tmp_path, preset, crf, marks):
    """x264 writes its settings into the stream: the preset (its subme, CABAC, B-frames) and the
    CRF asked for. The default is realtime, x264's ultrafast with CABAC, deblocking, 3 B-frames and
    subme 1 (the README's speed figures)."""
    out = tmp_path / "o.mp4"
    args = ["--demo", "--demo-frames", "8", "--no-display", "-o", out]
    if preset != "realtime":
        args += ["--mp4-preset", preset]
    if crf != 20:
        args += ["--mp4-crf", crf]
    code, output = invoke(*args)
    assert code == 0, output
    data = out.read_bytes()
    for m in marks:
        assert m in data, m
    code, output = invoke("--demo", "--no-display", "-o", tmp_path / "x.mp4", "--mp4-preset", "warp")
    assert code == 2 and "--mp4-preset" in output


def test_options_from_environment(tmp_path, model_path):
    c = tmp_path / "o.csv"
    code, out = invoke("--demo", "--csv", c, env={"FKP_LIVE_MODEL": str(model_path), "FKP_LIVE_NO_DISPLAY": "1",
                                                  "FKP_LIVE_DEMO_FRAMES": "4", "FKP_LIVE_DEVICE": "cpu"})
    assert code == 0, out
    assert len(c.read_text().splitlines()) == 5


@pytest.mark.parametrize("args, code, pattern", [
    (["--camera", "57"], 2, "camera 57 could not be opened"),
    (["--camera", "57"], 2, "(--camera N, --demo, --video PATH)"),  # the CLI's own advice, from the hint
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
    (["--demo", "--analysis", "pose,gaze"], 2, "unknown analysis gaze"),
    (["--demo", "--analysis", "pose", "--model", "imm58"], 2, "68-point iBUG model"),
    (["--demo", "--draw", "pose", "--model", "kaggle15"], 2, "68-point iBUG model"),
    (["--demo", "--crop-size", "64"], 2, "--crop-size goes with --crops"),
    (["--demo", "--crops", "{tmp}/text.mp4"], 2, "is a file"),
    (["--demo", "--out-dir", "{tmp}/o"], 2, "--out-dir goes with --videos"),
    (["--demo", "--jobs", "2"], 2, "--jobs goes with --videos"),
    (["--demo", "--mp4"], 2, "--mp4 goes with --videos"),
    (["--videos", "{tmp}/nothing", "--out-dir", "{tmp}/o"], 2, "holds no video files"),
    (["--videos", "{tmp}/*.mkv", "--out-dir", "{tmp}/o"], 2, "no file matches"),
    (["--videos", "{tmp}/missing", "--out-dir", "{tmp}/o"], 2, "missing does not exist"),
    (["--videos", "{tmp}", "--csv", "{tmp}/a.csv", "--out-dir", "{tmp}/o"], 2, "--csv goes with one source"),
    (["--videos", "{tmp}"], 2, "needs --out-dir"),
    (["--videos", "{tmp}", "--out-dir", "{tmp}/o", "--shard", "4/4"], 2, "K must be 0..N-1"),
    (["--videos", "{tmp}", "--out-dir", "{tmp}/o", "--shard", "x"], 2, "give K/N"),
    (["--videos", "{tmp}", "--demo"], 2, "exactly one source"),
    # non-finite numbers on every float option
    (["--demo", "--smooth", "nan"], 2, "'--smooth': 'nan' is not a finite number"),
    (["--demo", "--min-confidence", "nan"], 2, "'--min-confidence': 'nan' is not a finite number"),
    (["--demo", "--focal", "inf"], 2, "'--focal': 'inf' is not a finite number"),
    (["--demo", "--morph-alpha", "nan"], 2, "'--morph-alpha': 'nan' is not a finite number"),
    (["--demo", "--blink-threshold", "-inf"], 2, "'--blink-threshold': '-inf' is not a finite number"),
    (["--demo", "--refine-shift", "nan"], 2, "'--refine-shift': 'nan' is not a finite number"),
    (["--demo", "--refine-shift", "-1"], 2, "'--refine-shift': -1.0 is not in the range x>=0"),
    # outputs that cannot be written: found before any frame
    (["--demo", "-o", "/proc/fkp-x.mp4"], 2, r"cannot write --output /proc/fkp-x.mp4: cannot create files in /proc"),
    (["--demo", "--csv", "/proc/fkp-x.csv"], 2, r"cannot write --csv /proc/fkp-x.csv: cannot create files"),
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


def test_help_documents_analysis_crops_and_batches():
    code, out = invoke("--help")
    assert code == 0
    for s in ("--analysis", "pose,eyes,mouth", "pose_Rx", "--focal", "frame width", "--crops", "--crop-size",
              "--crops-every", "f{frame:06d}_id{face_id}.png", "--videos", "--out-dir", "--jobs", "--shard",
              "manifest.csv", "frame,face_id,timestamp,confidence,success"):
        assert s in out, s


@pytest.mark.parametrize("which", ["fake", "shipped"])
def test_analysis_in_csv_jsonl_and_overlay(tmp_path, model_path, which):
    from conftest import SHIPPED

    if which == "shipped" and not SHIPPED.exists():
        pytest.skip("no shipped model")
    model = model_path if which == "fake" else "fast"
    c, j, o = tmp_path / "o.csv", tmp_path / "o.jsonl", tmp_path / "o.mp4"
    code, out = invoke("--demo", "--demo-frames", 6, "--model", model, "--detector", "haar", "--analysis", "all",
                       "--draw", "all", "--csv", c, "--jsonl", j, "-o", o, "--no-display", "--stats")
    assert code == 0, out
    assert "analyse" in out  # its own stage in the timings
    rows = list(csv.DictReader(c.open()))
    assert len(rows) == 6 and all(r["success"] == "1" for r in rows)
    for r in rows:
        assert 200 < float(r["pose_Tz"]) < 3000 and abs(float(r["pose_Rz"])) < 30
        assert 0.05 < float(r["ear_l"]) < 0.6 and r["blink"] in ("0", "1") and float(r["mouth_open"]) >= 0
    faces = json.loads(j.read_text().splitlines()[-1])["faces"]
    assert set(faces[0]["pose"]) == {"Tx", "Ty", "Tz", "Rx", "Ry", "Rz"} and "ear_r" in faces[0]
    # analysis off (the default): the old columns only
    code, out = invoke("--demo", "--demo-frames", 2, "--model", model, "--detector", "haar", "--csv", c,
                       "--no-display", "--stats")
    assert code == 0 and "analyse" not in out
    assert "pose_Tx" not in c.read_text() and "ear_l" not in c.read_text()
    # pose drawn but not asked for in the CSV: computed for the overlay only
    code, out = invoke("--demo", "--demo-frames", 2, "--model", model, "--detector", "haar", "--csv", c,
                       "-o", o, "--draw", "points,pose", "--no-display")
    assert code == 0 and "pose_Tx" not in c.read_text()


def test_draw_all_with_a_model_without_68_points_skips_pose(tmp_path):
    code, out = invoke("--demo", "--demo-frames", 2, "--model", "imm58", "--draw", "all", "-o", tmp_path / "o.mp4",
                       "--no-display")
    assert code == 0, out


def test_crops_map_to_csv_rows(tmp_path, model_path):
    c, crops = tmp_path / "o.csv", tmp_path / "crops"
    code, out = invoke("--demo", "--demo-frames", 10, "--model", model_path, "--detector", "haar", "--csv", c,
                       "--crops", crops, "--crop-size", 64, "--crops-every", 3, "--no-display")
    assert code == 0, out
    rows = {(int(r["frame"]), int(r["face_id"])) for r in csv.DictReader(c.open()) if r["success"] == "1"}
    files = sorted(p.name for p in crops.iterdir())
    assert files == [f"f{i:06d}_id0.png" for i in (0, 3, 6, 9)]
    for name in files:
        frame, fid = int(name[1:7]), int(name.split("_id")[1][:-4])
        assert (frame, fid) in rows
        assert cv2.imread(str(crops / name)).shape == (64, 64, 3)


def test_crops_stay_undrawn_beside_the_annotated_video(tmp_path, model_path):
    """The overlay draws on the frame's own picture only when no output reads it undrawn: with
    --crops, the crops written beside -o are the same as without it."""
    outs = {}
    for name, extra in (("plain", []), ("drawn", ["-o", tmp_path / "o.mp4", "--draw", "all"])):
        crops = tmp_path / name
        code, out = invoke("--demo", "--demo-frames", 4, "--model", model_path, "--detector", "haar",
                           "--crops", crops, "--crop-size", 96, "--no-display", *extra)
        assert code == 0, out
        outs[name] = {p.name: cv2.imread(str(p)) for p in sorted(crops.iterdir())}
    assert outs["plain"].keys() == outs["drawn"].keys() and len(outs["plain"]) == 4
    for k, img in outs["plain"].items():
        assert np.array_equal(img, outs["drawn"][k]), k


def test_overlay_draws_on_a_copy_or_in_place(model_path):
    from fkp_live.frame import Frame
    from fkp_live.render.draw import Overlay
    from fkp_live.schemas import IBUG68
    from fkp_live.track.tracker import Face

    pts = np.stack([np.linspace(20, 100, 68), np.linspace(30, 90, 68)], 1)
    faces = [Face(0, (20, 30, 100, 90), pts, pts, 1.0, None)]
    for copy in (True, False):
        frame = Frame(0, 0.0, np.zeros((120, 160, 3), np.uint8))
        shown = Overlay(IBUG68, ("points",), copy=copy)(frame, faces)
        assert shown.image.any()  # the points were drawn
        assert (shown.image is frame.image) is (not copy)
        assert bool(frame.image.any()) is (not copy)  # a copy leaves the frame's own picture as it was


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

    code = ("import sys, fkp_live, fkp_live.cli, fkp_live.commands.run, fkp_live.track.tracker, fkp_live.commands.bench, fkp_live.commands.morph, fkp_live.settings, fkp_live.single, fkp_live.io.sinks, fkp_live.io.mp4, fkp_live.io.text, fkp_live.io.crops, fkp_live.io.window, fkp_live.render.draw; "
            "from fkp_live import Tracker; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'train', 'onnx')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_stats_keep_the_reading_thread_s_work_out_of_the_loop_s_total(tmp_path):
    """The demo's grey pictures are made in the reading thread, beside the model: `--stats` shows
    them on their own line, not in "crop" and not in the loop's total."""
    code, out = invoke("--demo", "--demo-frames", 20, "--csv", tmp_path / "o.csv",
                       "--no-display", "--stats")
    assert code == 0, out
    assert "grey " in out and "(reading thread)" in out
    table = out[out.index("stage      ms/frame"):].splitlines()
    rows = {ln.split()[0]: float(ln.split()[1]) for ln in table[1:] if ln.split() and ln.split()[0] in
            ("decode", "grey", "detect", "crop", "infer", "smooth", "post", "write", "total")}
    assert "grey" not in rows and "crop" in rows
    assert abs(rows.pop("total") - sum(rows.values())) < 0.02 * len(rows)
    beside = next(ln for ln in table if ln.startswith("in the reading thread"))
    assert "grey" in beside and "detect" not in beside


def test_the_demo_reads_matplotlib_s_portrait_without_importing_matplotlib(tmp_path):
    """Importing matplotlib to find its data folder cost 0.1 s of the demo's time to its first
    frame; the portrait is found from the package's location instead, the same file."""
    import matplotlib

    from conftest import ROOT

    code = ("import sys, numpy as np; from fkp_live.io.sources import DemoSource, grace_hopper; "
            "f = next(iter(DemoSource(frames=1))); np.save(sys.argv[1], grace_hopper()); "
            "print('matplotlib' in sys.modules, f.image.shape)")
    out = tmp_path / "portrait.npy"
    p = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] == "False", p.stdout
    want = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    assert np.array_equal(np.load(out), want)


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


def test_refine_shift_reaches_the_tracker_for_images_and_batches(tmp_path, monkeypatch):
    """--refine-shift sets how a new face's second read is made: the shipped model's points on a
    still picture move with it, the help names the tracker's default, and --videos passes it on."""
    from fkp_live.track import tracker as tracker_mod

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "a.png"), next(iter(DemoSource(frames=1))).image)
    rows = {}
    for shift in ("0", "3", None):
        c = tmp_path / f"{shift}.csv"
        extra = ["--refine-shift", shift] if shift is not None else []
        code, out = invoke("--images", imgs, "--csv", c, "--no-display", *extra)
        assert code == 0, out
        (row,) = list(csv.DictReader(open(c)))
        rows[shift] = np.array([float(row[f"x_{i}"]) for i in range(68)])
    assert np.abs(rows["0"] - rows["3"]).max() > 0.01
    np.testing.assert_array_equal(rows[None], rows["3"])  # the default is REFINE_SHIFT
    assert tracker_mod.REFINE_SHIFT == 3.0
    assert "[default: 3]" in " ".join(invoke("--help")[1].split())
    seen = []
    init = tracker_mod.Tracker.__init__
    monkeypatch.setattr(tracker_mod.Tracker, "__init__",
                        lambda self, *a, **k: seen.append(k.get("refine_shift")) or init(self, *a, **k))
    (tmp_path / "v").mkdir()
    write_video(tmp_path / "v" / "a.mp4", [f.image for f in DemoSource(frames=3)], fps=30)
    code, out = invoke("--videos", tmp_path / "v", "--out-dir", tmp_path / "o", "--refine-shift", "1.5",
                       "--no-display")
    assert code == 0, out
    assert seen == [1.5]


def test_morph_and_average_are_reachable_from_fkp_live():
    for cmd in ("morph", "average"):
        p = subprocess.run([sys.executable, "-m", "fkp_live.cli", cmd, "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and f"fkp-live {cmd}" in p.stdout


def test_live_morph_changes_the_face_and_nothing_else(tmp_path):
    """--morph-to draws the target's face on the tracked face: the face region changes, the
    background does not; a missing target is a clear error (exit 2)."""
    import av
    import matplotlib

    target = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    outs = {}
    for name, extra in (("plain", []), ("morph", ["--morph-to", target, "--morph-alpha", 1])):
        out = tmp_path / f"{name}.mp4"
        code, text = invoke("--demo", "--demo-frames", 12, "--draw", "none", "-o", out, "--no-display", *extra)
        assert code == 0, text
        with av.open(str(out)) as c:
            outs[name] = [f.to_ndarray(format="bgr24").astype(np.float32) for f in c.decode(video=0)]
    src = DemoSource(frames=12)
    box = np.array([[121, 97], [416, 392]], float)  # the head in the portrait
    m = src.transform(10)
    (x0, y0), (x1, y1) = (box @ m[:, :2].T + m[:, 2]).min(0).astype(int), (box @ m[:, :2].T + m[:, 2]).max(0).astype(int)
    diff = np.abs(outs["plain"][10] - outs["morph"][10]).mean(axis=2)
    inside = diff[y0:y1, x0:x1].mean()
    outside = diff[: max(y0 - 10, 1), :].mean()
    assert inside > 4 * max(outside, 0.25), (inside, outside)
    code, text = invoke("--demo", "--demo-frames", 3, "--no-display", "--morph-to", tmp_path / "missing.jpg")
    assert code == 2 and "missing.jpg" in text


def test_non_finite_smooth_from_the_environment(model_path):
    code, out = invoke("--demo", "--model", model_path, "--no-display", env={"FKP_LIVE_SMOOTH": "nan"})
    assert code == 2 and "'--smooth': 'nan' is not a finite number" in err_line(out)


def test_a_run_without_frames_keeps_the_files_already_there(tmp_path, model_path):
    """Issue 13: a failed run never destroys the good outputs at its paths."""
    good = {tmp_path / "keep.mp4": b"good video", tmp_path / "keep.csv": b"good,csv\n",
            tmp_path / "keep.jsonl": b"{}\n"}
    for p, data in good.items():
        p.write_bytes(data)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())
    code, out = invoke("--images", bad, "--model", model_path, "--no-display", "-o", tmp_path / "keep.mp4",
                       "--csv", tmp_path / "keep.csv", "--jsonl", tmp_path / "keep.jsonl")
    assert code == 2 and "could be read" in err_line(out)
    for p, data in good.items():
        assert p.read_bytes() == data
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bad", "keep.csv", "keep.jsonl", "keep.mp4"]


def test_finished_outputs_replace_old_ones_and_special_files_are_written_straight(tmp_path, model_path):
    import av

    out, table = tmp_path / "o.mp4", tmp_path / "o.csv"
    out.write_bytes(b"old")
    table.write_bytes(b"old")
    code, out_text = invoke("--demo", "--demo-frames", "3", "--model", model_path, "--no-display", "--detector",
                            "haar", "-o", out, "--csv", table, "--jsonl", "/dev/null")
    assert code == 0, out_text
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3
    assert len(table.read_text().splitlines()) == 4
    assert sorted(x.name for x in tmp_path.iterdir()) == ["o.csv", "o.mp4"]
    assert Path("/dev/null").is_char_device()
    code, out_text = invoke("--demo", "--demo-frames", "2", "--model", model_path, "--no-display", "--detector",
                            "haar", "-o", "/dev/null", "--csv", "/dev/null")
    assert code == 0 and Path("/dev/null").is_char_device(), out_text


def test_a_full_disk_ends_the_run_with_a_clear_error_not_a_crash(tmp_path, model_path):
    """-o /dev/full: muxing stops at the write error and the run ends with a message, not a signal."""
    table = tmp_path / "o.csv"
    p = subprocess.run([sys.executable, "-m", "fkp_live.cli", "--demo", "--demo-frames", "40", "--model",
                        str(model_path), "--detector", "haar", "--no-display", "-o", "/dev/full", "--csv", str(table)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "error: cannot write --output /dev/full: No space left on device" in p.stderr
    assert "Traceback" not in p.stderr
    rows = list(csv.reader(table.open()))[1:]
    assert rows and [int(r[0]) for r in rows] == list(range(len(rows)))  # whole rows, every frame done


def test_twenty_faces_default_detector_hint_and_haar_accounts_for_every_face(tmp_path):
    """The default path on a crowd of small faces says what to do (raise --max-faces, and which
    detector finds small faces); following the hint, every face of every frame is in the CSV."""
    frames = [f.image for f in DemoSource(frames=10, faces=20, tight=True)]
    v = write_video(tmp_path / "crowd.mp4", frames)
    code, out = invoke("--video", v, "--csv", tmp_path / "a.csv", "--no-display")
    assert code == 0, out
    assert "raise --max-faces" in out and "--detector haar" in out, out
    code, out = invoke("--video", v, "--csv", tmp_path / "b.csv", "--no-display", "--detector", "haar",
                       "--max-faces", 20)
    assert code == 0, out
    rows = list(csv.DictReader(open(tmp_path / "b.csv")))
    per_frame = {}
    for r in rows:
        per_frame.setdefault(r["frame"], set()).add(r["face_id"])
    assert len(per_frame) == 10 and all(len(ids) == 20 for ids in per_frame.values())
    assert len({r["face_id"] for r in rows}) == 20  # the same 20 ids throughout
