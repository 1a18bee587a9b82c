"""Outputs: MP4 (frames, rate, timestamps, audio, survives interruption), CSV and JSON Lines."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import av
import numpy as np
import pytest

from fkp_live.track.tracker import Face
from fkp_live.crop import Crop
from fkp_live.io.mp4 import Mp4Sink
from fkp_live.io.outputs import partial_path
from fkp_live.io.sinks import SinkError
from fkp_live.io.text import CsvSink, JsonlSink
from fkp_live.frame import Frame
from fkp_live.io.sources import VideoSource
from conftest import ROOT, VIDEOS, needs_data
from runtime_helpers import write_video


def _decode(path):
    """(frames as (time, BGR)), the video stream's properties, the stream kinds). The properties
    are copied while the file is open: a PyAV stream must not be read after its container closes."""
    from types import SimpleNamespace

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(f.time, f.to_ndarray(format="bgr24")) for f in c.decode(v)]
        props = SimpleNamespace(width=v.width, height=v.height, average_rate=v.average_rate,
                                codec_context=SimpleNamespace(name=v.codec_context.name,
                                                              pix_fmt=v.codec_context.pix_fmt))
        return frames, props, [s.type for s in c.streams]


def test_mp4_frames_rate_timestamps_and_odd_size(tmp_path):
    out = tmp_path / "o.mp4"
    times = [i / 25 for i in range(30)] + [1.2 + 0.1 * i for i in range(15)]  # a gap: kept as is
    with Mp4Sink(out, fps=25) as sink:
        for i, t in enumerate(times):
            sink.write(Frame(i, t, np.full((481, 641, 3), (i * 5) % 256, np.uint8)), [])
    frames, v, kinds = _decode(out)
    assert kinds == ["video"]
    assert len(frames) == 45
    assert (v.width, v.height) == (642, 482) and v.codec_context.name == "h264"
    assert v.codec_context.pix_fmt == "yuv420p"
    np.testing.assert_allclose([t for t, _ in frames], times, atol=1e-3)
    assert float(v.average_rate) == pytest.approx(25, rel=0.35)  # the gap lowers the average
    assert abs(int(frames[10][1].mean()) - 50) <= 2


def test_mp4_letterboxes_frames_of_another_size(tmp_path):
    out = tmp_path / "o.mp4"
    with Mp4Sink(out, fps=10) as sink:
        sink.write(Frame(0, None, np.full((100, 200, 3), 255, np.uint8)), [])
        sink.write(Frame(1, None, np.full((300, 100, 3), 255, np.uint8)), [])
    frames, v, _ = _decode(out)
    assert len(frames) == 2 and frames[1][1].shape == (100, 200, 3)
    assert frames[1][1][50, 100].mean() > 200 and frames[1][1][50, 5].mean() < 30


def test_mp4_copies_the_source_audio(tmp_path):
    imgs = [np.full((64, 64, 3), i * 8, np.uint8) for i in range(30)]
    src_path = write_video(tmp_path / "talk.mp4", imgs, fps=30, audio_seconds=1.0)
    out = tmp_path / "o.mp4"
    with VideoSource(src_path) as src, Mp4Sink(out, fps=src.fps, audio_from=src.path) as sink:
        assert src.has_audio
        for f in src:
            sink.write(f, [])
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac" and a.sample_rate == 44100
        n_audio = sum(1 for p in c.demux(a) if p.size)
    assert n_audio >= 40  # ~43 AAC packets per second of 44.1 kHz audio
    frames, v, _ = _decode(out)
    assert len(frames) == 30 and round(float(v.average_rate)) == 30


@needs_data
def test_mp4_keeps_a_real_clips_audio_and_rate(tmp_path):
    out = tmp_path / "d3.mp4"
    with VideoSource(VIDEOS / "d3.mp4") as src, Mp4Sink(out, fps=src.fps, audio_from=src.path) as sink:
        for f in src:
            if f.index == 60:
                break
            sink.write(f, [])
    with av.open(str(out)) as c:
        assert {s.type for s in c.streams} == {"video", "audio"}
        v = c.streams.video[0]
        assert round(float(v.average_rate)) == 30 and sum(1 for _ in c.decode(v)) == 60


def test_mp4_without_frames_leaves_no_file_and_bad_paths_fail_early(tmp_path):
    with Mp4Sink(tmp_path / "none.mp4", fps=30):
        pass
    assert not (tmp_path / "none.mp4").exists()
    with pytest.raises(SinkError, match=r"folder .*missing.* does not exist"):
        Mp4Sink(tmp_path / "missing" / "o.mp4")
    with pytest.raises(SinkError, match="is a folder"):
        CsvSink(tmp_path, 68)
    with pytest.raises(SinkError, match="cannot write"):
        JsonlSink("/proc/fkp-live-test.jsonl")


@pytest.mark.parametrize("kind", ["mp4", "csv", "jsonl"])
def test_outputs_are_written_beside_the_target_and_replace_it_only_when_finished(tmp_path, kind):
    target = tmp_path / f"o.{kind}"
    target.write_bytes(b"the good file")
    make = {"mp4": lambda: Mp4Sink(target, fps=10), "csv": lambda: CsvSink(target, 5),
            "jsonl": lambda: JsonlSink(target)}[kind]
    with make():  # no frame: the target is left alone, nothing else stays behind
        pass
    assert target.read_bytes() == b"the good file" and os.listdir(tmp_path) == [target.name]
    with pytest.raises(RuntimeError):  # an error after a frame: what was written goes in place
        with make() as sink:
            sink.write(Frame(0, 0.0, np.zeros((16, 16, 3), np.uint8)), [_face(0, n=5)])
            # (the MP4 muxer creates its file at the first packet, after the encoder's look-ahead)
            assert kind == "mp4" or partial_path(target).exists()
            assert target.read_bytes() == b"the good file"
            raise RuntimeError("boom")
    assert target.read_bytes() != b"the good file" and os.listdir(tmp_path) == [target.name]
    assert partial_path(target).name == f"o.partial.{kind}"


def test_unstaged_sinks_write_straight_to_a_path_their_caller_stages(tmp_path):
    """staged=False (a batch writes NAME.csv.part and renames it itself): no second partial name."""
    mp4, table = tmp_path / "a.mp4.part", tmp_path / "a.csv.part"
    with Mp4Sink(mp4, fps=10, staged=False) as m, CsvSink(table, 5, staged=False) as c:
        for i in range(12):
            f = Frame(i, i / 10, np.full((32, 32, 3), i * 10, np.uint8))
            m.write(f, [])
            c.write(f, [])
        assert table.exists()
    assert sorted(os.listdir(tmp_path)) == ["a.csv.part", "a.mp4.part"]
    frames, _, _ = _decode(mp4)
    assert len(frames) == 12 and len(table.read_text().splitlines()) == 13
    with Mp4Sink(mp4, fps=10, staged=False), CsvSink(table, 5, staged=False):
        pass  # no frame: the caller's files are removed
    assert os.listdir(tmp_path) == []


def test_special_files_are_written_straight_and_never_removed():
    for sink in (Mp4Sink("/dev/null", fps=10), CsvSink("/dev/null", 5), JsonlSink("/dev/null")):
        with sink:
            sink.write(Frame(0, 0.0, np.zeros((16, 16, 3), np.uint8)), [])
        with type(sink)("/dev/null", **({"n_points": 5} if isinstance(sink, CsvSink) else {})):
            pass  # no frame: still never unlinked
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_mp4_write_error_stops_muxing_and_says_so():
    sink = Mp4Sink("/dev/full", fps=30)
    rng = np.random.default_rng(0)
    with pytest.raises(SinkError) as e:
        with sink:
            for i in range(100):
                sink.write(Frame(i, i / 30, rng.integers(0, 256, (120, 160, 3), np.uint8)), [])
    assert e.value.exit_code == 1 and "cannot write --output /dev/full: No space left on device" in str(e.value)


def test_unwritable_places_fail_at_open():
    with pytest.raises(SinkError, match="cannot create files in /proc"):
        Mp4Sink("/proc/fkp-live-test.mp4")
    with pytest.raises(SinkError, match="cannot create files in /proc"):
        CsvSink("/proc/fkp-live-test.csv", 5)


def _face(i, n=68, conf=0.9):
    pts = np.stack([np.arange(n) + 0.25, np.arange(n) * 2 + 0.5], axis=1).astype(np.float32) + i
    return Face(i, (0, 0, 1, 1), pts, pts, conf, Crop(1, 1, 1))


def test_csv_layout_and_rows_are_flushed_as_written(tmp_path):
    path = tmp_path / "o.csv"
    sink = CsvSink(path, 68)
    sink.write(Frame(0, 0.0, None), [_face(0), _face(1)])
    sink.write(Frame(1, 1 / 30, None), [])
    # readable before close (under its partial name): flushed frame by frame
    assert not path.exists()
    rows = list(csv.reader(partial_path(path).open()))
    header = rows[0]
    assert header[:5] == ["frame", "face_id", "timestamp", "confidence", "success"]  # OpenFace's order
    assert header[5:7] == ["x_0", "x_1"] and header[72] == "x_67" and header[73] == "y_0" and header[-1] == "y_67"
    assert len(header) == 5 + 136
    assert rows[1][:5] == ["0", "0", "0.000", "0.900", "1"]
    assert float(rows[2][5]) == pytest.approx(1.25) and float(rows[2][73]) == pytest.approx(1.5)
    assert rows[3][:5] == ["1", "-1", "0.033", "0.000", "0"] and rows[3][5:] == [""] * 136
    sink.close()
    assert list(csv.reader(path.open())) == rows and not partial_path(path).exists()


def test_csv_source_column_for_image_folders(tmp_path):
    path = tmp_path / "o.csv"
    with CsvSink(path, 5, with_source=True) as sink:
        sink.write(Frame(0, None, None, source="a, b.jpg"), [_face(0, n=5)])
    rows = list(csv.reader(path.open()))
    assert rows[0][-1] == "source" and rows[1][-1] == "a, b.jpg" and rows[1][2] == ""


def _analysed(i, n=68):
    from fkp_live.analysis import FaceAnalysis, with_analysis
    from fkp_live.analysis.pose import Pose

    z = np.zeros((3, 1))
    pose = Pose(1.234, -20.5, 3.0, 10.04, -5.0, 612.36, z, z, np.eye(3))
    return with_analysis(_face(i, n), FaceAnalysis(i, pose, 0.3123, 0.2899, False, 0.05))


def test_csv_and_jsonl_analysis_columns(tmp_path):
    """Asked-for analysis adds OpenFace's pose columns (mm, degrees) and ours; off, nothing changes."""
    path = tmp_path / "o.csv"
    with CsvSink(path, 68, analysis=("pose", "eyes", "mouth"), with_source=True) as sink:
        sink.write(Frame(0, 0.0, None, source="a.jpg"), [_analysed(0), _face(1)])  # face 1: no analysis
        sink.write(Frame(1, 0.1, None, source="b.jpg"), [])
    rows = list(csv.DictReader(path.open()))
    head = path.read_text().splitlines()[0].split(",")
    assert head[5 + 136:] == ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz", "ear_l", "ear_r",
                              "blink", "mouth_open", "source"]
    r = rows[0]
    assert (r["pose_Tx"], r["pose_Tz"], r["pose_Rx"], r["pose_Ry"]) == ("10.0", "612.4", "1.23", "-20.50")
    assert (r["ear_l"], r["ear_r"], r["blink"], r["mouth_open"], r["source"]) == ("0.312", "0.290", "0", "0.050", "a.jpg")
    assert rows[1]["pose_Tx"] == "" and rows[1]["x_0"] != "" and rows[1]["source"] == "a.jpg"
    assert rows[2]["face_id"] == "-1" and rows[2]["mouth_open"] == "" and rows[2]["source"] == "b.jpg"
    assert all(len(v) == len(head) for v in csv.reader(path.open()))
    with CsvSink(tmp_path / "plain.csv", 68) as sink:  # off: the analysis a face carries is not written
        sink.write(Frame(0, 0.0, None), [_analysed(0)])
    assert "pose_Tx" not in (tmp_path / "plain.csv").read_text()

    jpath = tmp_path / "o.jsonl"
    with JsonlSink(jpath) as sink:
        sink.write(Frame(0, 0.0, None), [_analysed(0), _face(1)])
    faces = json.loads(jpath.read_text())["faces"]
    assert faces[0]["pose"] == {"Tx": 10.0, "Ty": -5.0, "Tz": 612.4, "Rx": 1.23, "Ry": -20.5, "Rz": 3.0}
    assert faces[0]["ear_l"] == 0.3123 and faces[0]["blink"] is False and faces[0]["mouth_open"] == 0.05
    assert "pose" not in faces[1] and "ear_l" not in faces[1]


def test_jsonl(tmp_path):
    path = tmp_path / "o.jsonl"
    with JsonlSink(path) as sink:
        sink.write(Frame(3, 0.1, None), [_face(2, n=5)])
        sink.write(Frame(4, 0.2, None), [])
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert recs[0]["frame"] == 3 and recs[0]["faces"][0]["id"] == 2
    assert recs[0]["faces"][0]["points"][1] == [3.25, 4.5] and recs[1]["faces"] == []


# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_playable_mp4_and_complete_csv(tmp_path, model_path, sig):
    out, table = tmp_path / "o.mp4", tmp_path / "o.csv"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # the demo runs "forever" (10^6 frames); we stop it mid-stream
    cmd = [sys.executable, "-m", "fkp_live.cli", "--demo", "--demo-frames", "1000000", "--model", str(model_path),
           "-o", str(out), "--csv", str(table), "--no-display", "--detector", "haar"]
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.2)
        part = partial_path(table)  # written under NAME.partial.csv until the run ends
        if part.exists() and sum(1 for _ in part.open()) > 30:
            break
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    frames, v, _ = _decode(out)
    rows = list(csv.reader(table.open()))[1:]
    assert not partial_path(out).exists() and not partial_path(table).exists()
    assert len(frames) >= 30
    assert len({r[0] for r in rows}) == len(frames)  # every frame in the video is in the CSV
    assert [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows)
