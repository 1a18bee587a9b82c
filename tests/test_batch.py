"""Many videos: shards cover every file once, the manifest resumes a killed run, a bad video is
recorded and skipped, worker processes, and the Slurm / Kubernetes examples."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from fkp_live.batch import BatchError, Manifest, find_videos, output_names, parse_shard, run_batch, shard
from fkp_live.settings import RunSettings
from runtime_helpers import write_video


def _videos(folder: Path, lengths: dict[str, int], size=(160, 120)) -> list[Path]:
    from fkp_live.io.sources import DemoSource

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in lengths.items():
        imgs = [f.image for f in DemoSource(frames=n, size=size)]
        out.append(write_video(folder / name, imgs, fps=30))
    return out


def _manifest(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _opts(model_path, **kw) -> RunSettings:
    return RunSettings(model=str(model_path), device="cpu", threads=1, detector="haar", **kw)


# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_files", [0, 1, 7, 23])
def test_shards_cover_every_file_exactly_once(n_files):
    files = [f"v{i:03d}.mp4" for i in range(n_files)]
    for n in range(1, 6):
        parts = [shard(files, k, n) for k in range(n)]
        flat = [f for p in parts for f in p]
        assert sorted(flat) == files and len(flat) == len(set(flat))
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1  # balanced


def test_parse_shard_and_names(tmp_path):
    assert parse_shard("0/1") == (0, 1) and parse_shard(None) is None
    for bad in ("4/4", "-1/3", "1/0", "a/b", "3"):
        with pytest.raises(BatchError):
            parse_shard(bad)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ("a/talk.mp4", "b/talk.mp4", "a/other.MOV", "a/notes.txt"):
        (tmp_path / p).write_bytes(b"x")
    assert [p.name for p in find_videos(tmp_path / "a")] == ["other.MOV", "talk.mp4"]  # by suffix
    found = find_videos(str(tmp_path / "**" / "*.mp4"))
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/talk.mp4", "b/talk.mp4"]
    names = output_names(found + [tmp_path / "a" / "other.MOV"])
    assert sorted(names.values()) == ["a__talk", "b__talk", "other"]  # only colliding names get their folder


def test_manifest_is_rewritten_atomically_and_read_back(tmp_path):
    m = Manifest(tmp_path)
    m.record({"file": "b.mp4", "frames": 3, "faces": 1, "fps": "30.000", "status": "done", "error": "", "seconds": "1"})
    m.record({"file": "a.mp4", "frames": 0, "faces": 0, "fps": "", "status": "failed", "error": "bad, \"x\"\nline"})
    assert [r["file"] for r in _manifest(m.path)] == ["a.mp4", "b.mp4"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    again = Manifest(tmp_path)
    assert again.is_done("b.mp4") and not again.is_done("a.mp4")
    assert again.rows["a.mp4"]["error"] == "bad, \"x\"\nline"
    # a shard's manifest sees what other manifests finished
    assert Manifest(tmp_path, (1, 3)).is_done("b.mp4") and Manifest(tmp_path, (1, 3)).path.name == "manifest-1-of-3.csv"


# ----------------------------------------------------------------------------------------------
def test_a_bad_video_is_recorded_and_the_rest_succeed_and_resume(tmp_path, model_path):
    _videos(tmp_path / "in", {"a.mp4": 6, "c.mp4": 4})
    (tmp_path / "in" / "b.mp4").write_text("not a video\n")
    out = tmp_path / "out"
    lines = []
    res = run_batch(str(tmp_path / "in"), out, _opts(model_path, analysis=("pose", "eyes")), echo=lines.append)
    assert (res.total, res.done, res.failed, res.skipped) == (3, 2, 1, 0)
    rows = {Path(r["file"]).name: r for r in _manifest(out / "manifest.csv")}
    assert rows["b.mp4"]["status"] == "failed" and "not a video" in rows["b.mp4"]["error"]
    assert rows["a.mp4"]["status"] == "done" and rows["a.mp4"]["frames"] == "6" and rows["a.mp4"]["fps"] == "30.000"
    assert rows["c.mp4"]["frames"] == "4"
    a = list(csv.DictReader((out / "a.csv").open()))
    assert len(a) == 6 and "pose_Ry" in a[0] and "ear_l" in a[0]
    assert sorted(p.name for p in out.iterdir()) == ["a.csv", "c.csv", "manifest.csv"]  # no .part left
    assert any("ETA" in s for s in lines)
    # again: the done ones are skipped, the failed one is retried (and fails again)
    stamp = (out / "a.csv").stat().st_mtime_ns
    res = run_batch(str(tmp_path / "in"), out, _opts(model_path, analysis=("pose", "eyes")), echo=lines.append)
    assert (res.done, res.failed, res.skipped) == (0, 1, 2)
    assert (out / "a.csv").stat().st_mtime_ns == stamp
    # a done video whose output went missing is done again
    (out / "c.csv").unlink()
    res = run_batch(str(tmp_path / "in"), out, _opts(model_path), echo=lines.append)
    assert (res.done, res.skipped) == (1, 1) and (out / "c.csv").exists()
    assert len(_manifest(out / "manifest.csv")) == 3


def test_mp4_and_crops_per_video(tmp_path, model_path):
    _videos(tmp_path / "in", {"one.mp4": 5})
    out, crops = tmp_path / "out", tmp_path / "crops"
    res = run_batch(str(tmp_path / "in"), out, _opts(model_path, mp4=True, draw="points", crops=str(crops),
                                                   crops_every=2), echo=lambda s: None)
    assert res.done == 1 and (out / "one.mp4").stat().st_size > 0
    import av

    with av.open(str(out / "one.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5
    assert sorted(p.name for p in (crops / "one").iterdir()) == [f"f{i:06d}_id0.png" for i in (0, 2, 4)]


def test_resume_after_the_run_is_killed(tmp_path, model_path):
    """SIGKILL after the first video: the rerun does the other three, and the first not again."""
    _videos(tmp_path / "in", {"a.mp4": 5, "b.mp4": 600, "c.mp4": 600, "d.mp4": 600})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fkp_live.cli", "--videos", str(tmp_path / "in"), "--out-dir", str(out),
           "--model", str(model_path), "--detector", "haar", "--device", "cpu", "--threads", "1"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = out / "manifest.csv"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and p.poll() is None:
            if manifest.exists() and _manifest(manifest):
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
    finally:
        p.communicate(timeout=30)
    rows = _manifest(manifest)
    assert [Path(r["file"]).name for r in rows] == ["a.mp4"] and rows[0]["status"] == "done", rows
    assert not (out / "d.csv").exists()  # an unfinished video never has its final name
    stamp = (out / "a.csv").stat().st_mtime_ns
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1 of 4 videos already done" in r.stderr and "3 done now, 1 already done, 0 failed" in r.stderr
    rows = _manifest(manifest)
    assert sorted(Path(r["file"]).name for r in rows) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    assert all(r["status"] == "done" for r in rows) and [r["frames"] for r in rows] == ["5", "600", "600", "600"]
    assert (out / "a.csv").stat().st_mtime_ns == stamp  # not done twice
    assert not [x for x in out.iterdir() if x.name.endswith((".part", ".tmp"))]


def test_worker_processes(tmp_path, model_path):
    """--jobs 2: spawned workers, each with its own tracker; a bad video fails alone (exit 1)."""
    _videos(tmp_path / "in", {"a.mp4": 4, "b.mp4": 3, "c.mp4": 5})
    (tmp_path / "in" / "bad.mp4").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fkp_live.cli", "--videos", str(tmp_path / "in" / "*.mp4"), "--out-dir", str(out),
           "--model", str(model_path), "--detector", "haar", "--device", "cpu", "--jobs", "2", "--analysis", "eyes"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "3 done now, 0 already done, 1 failed" in r.stderr and "Traceback" not in r.stderr
    rows = {Path(x["file"]).name: x for x in _manifest(out / "manifest.csv")}
    assert {k: v["status"] for k, v in rows.items()} == {"a.mp4": "done", "b.mp4": "done", "bad.mp4": "failed",
                                                          "c.mp4": "done"}
    assert [rows[k]["frames"] for k in ("a.mp4", "b.mp4", "c.mp4")] == ["4", "3", "5"]
    assert "ear_l" in (out / "b.csv").read_text().splitlines()[0]


def test_examples_run_as_written(tmp_path, model_path):
    """The Slurm script runs shard 0/2 and the Kubernetes Job's command shard 1/2 (their variables
    set as Slurm and Kubernetes set them): together they cover every video exactly once."""
    _videos(tmp_path / "in", {f"v{i}.mp4": 2 for i in range(5)})
    out = tmp_path / "out"
    fkp = f"{sys.executable} -m fkp_live.cli"
    extra = ["--model", str(model_path), "--detector", "haar"]
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="2", VIDEOS=str(tmp_path / "in"),
               OUT=str(out), FKP_LIVE=fkp)
    r = subprocess.run(["bash", str(ROOT / "examples" / "slurm_array.sh"), *extra], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    k8s = (ROOT / "examples" / "k8s_indexed_job.yaml").read_text()
    assert "completionMode: Indexed" in k8s and "completions: 8" in k8s and 'value: "8"' in k8s
    lines = k8s[k8s.index("- >-") + 4:k8s.index("resources:")].split()
    command = " ".join(lines).replace("exec fkp-live", "exec " + fkp)
    command = command.replace("/data/videos", str(tmp_path / "in")).replace("/data/fkp_out", str(out))
    env = dict(os.environ, JOB_COMPLETION_INDEX="1", SHARDS="2")
    r = subprocess.run(["sh", "-c", command + " " + " ".join(extra)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr

    rows = [x for k in (0, 1) for x in _manifest(out / f"manifest-{k}-of-2.csv")]
    assert sorted(Path(x["file"]).name for x in rows) == [f"v{i}.mp4" for i in range(5)]
    assert all(x["status"] == "done" for x in rows)
    assert "pose_Rx" in (out / "v0.csv").read_text().splitlines()[0]  # the examples ask for the analysis
