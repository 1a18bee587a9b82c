"""Many videos: one CSV (and MP4) per video, a resumable manifest, N processes, shards across machines.

`fkp-live --videos DIR_OR_GLOB --out-dir OUT [--jobs N] [--shard K/N] [--mp4]` runs every video
through the same tracker settings as a single run and writes, per video, `OUT/NAME.csv` (and
`OUT/NAME.mp4`), NAME being the video's file name without its suffix (its path below the common
folder, `/` as `__`, where two videos share a name). Outputs are written under a `.part` name and
renamed when the video is complete, so a file named NAME.csv is always whole.

The manifest, `OUT/manifest.csv` (`OUT/manifest-K-of-N.csv` for shard K of N, so shards on a
shared disk never write the same file), has one row per video: file, frames, faces (face ids),
fps (the video's frame rate), status (done or failed), error, seconds (processing time). It is
rewritten atomically after every video. A second run skips every video done in any
`OUT/manifest*.csv` whose outputs are there and retries what failed or never finished; a video
that cannot be read is recorded as failed and the run goes on.

`--jobs N` runs N worker processes (multiprocessing, spawn), each with its own Tracker (one ONNX
Runtime thread each unless --threads says otherwise). `--shard K/N` keeps every Nth video of the
sorted list from the Kth (K = 0..N-1), so the same command runs as a Slurm array job or a
Kubernetes indexed Job (examples/).

    >>> shard(["a", "b", "c", "d", "e"], 1, 2)
    ['b', 'd']
    >>> parse_shard("3/4")
    (3, 4)
"""
from __future__ import annotations

import csv
import glob
import io
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


log = logging.getLogger("fkp_live")

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".wmv",
                  ".flv", ".3gp", ".ogv"}
FIELDS = ("file", "frames", "faces", "fps", "status", "error", "seconds")


class BatchError(Exception):
    """Bad batch input (no videos, a bad --shard); the message says what to do."""


# ----------------------------------------------------------------------------------------------
def find_videos(spec: str | os.PathLike) -> list[Path]:
    """A folder (its video files, by suffix, not recursing) or a glob pattern (every file it
    matches; `**` recurses) -> the files, sorted by path."""
    p = Path(spec)
    if p.is_dir():
        files = [q for q in p.iterdir() if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES]
        if not files:
            raise BatchError(f"folder {p} holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})")
    else:
        files = [Path(q) for q in glob.glob(str(spec), recursive=True) if Path(q).is_file()]
        if not files:
            if not glob.has_magic(str(spec)):
                raise BatchError(f"{spec} does not exist; give a folder of videos or a glob such as 'clips/*.mp4'")
            raise BatchError(f"no file matches {spec}")
    return sorted(files, key=lambda q: str(q))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N) with 0 <= K < N."""
    if text is None or text == "":
        return None
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise BatchError(f"--shard {text}: give K/N, e.g. 0/4 (shard K of N, K from 0 to N-1)") from None
    if n < 1 or not 0 <= k < n:
        raise BatchError(f"--shard {text}: K must be 0..N-1 and N >= 1 (e.g. 0/4 .. 3/4)")
    return k, n


def shard(files: list, k: int, n: int) -> list:
    """Every nth item from the kth: shards 0..n-1 together hold every item exactly once."""
    return list(files[k::n])


def output_names(files: list[Path]) -> dict[Path, str]:
    """Each video's output name: its stem; where stems collide, its path below the common folder
    with separators as '__' (and the suffix dropped)."""
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    common = Path(os.path.commonpath([str(f.resolve().parent) for f in files])) if files else Path(".")
    out = {}
    for f in files:
        if stems[f.stem] == 1:
            out[f] = f.stem
        else:
            rel = f.resolve().relative_to(common).with_suffix("")
            out[f] = "__".join(rel.parts)
    return out


# ----------------------------------------------------------------------------------------------
class Manifest:
    """OUT/manifest.csv (or manifest-K-of-N.csv): one row per video, rewritten atomically."""

    def __init__(self, out_dir: Path, shard_kn: tuple[int, int] | None = None):
        self.out_dir = Path(out_dir)
        name = "manifest.csv" if shard_kn is None else f"manifest-{shard_kn[0]}-of-{shard_kn[1]}.csv"
        self.path = self.out_dir / name
        self.rows: dict[str, dict] = {}
        self.done_elsewhere: set[str] = set()
        if self.path.exists():
            self.rows = {r["file"]: r for r in _read_rows(self.path)}
        for other in sorted(self.out_dir.glob("manifest*.csv")):
            if other != self.path:
                self.done_elsewhere |= {r["file"] for r in _read_rows(other) if r.get("status") == "done"}

    def is_done(self, file: str) -> bool:
        r = self.rows.get(file)
        return (r is not None and r.get("status") == "done") or file in self.done_elsewhere

    def record(self, row: dict) -> None:
        self.rows[row["file"]] = {k: row.get(k, "") for k in FIELDS}
        self.write()

    def write(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        for key in sorted(self.rows):
            w.writerow(self.rows[key])
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _read_rows(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("file")]
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        log.warning("could not read %s (%s); treating it as empty", path, e)
        return []


# ----------------------------------------------------------------------------------------------
@dataclass
class Job:
    index: int
    file: str
    name: str
    out_dir: str
    frames_hint: int | None = None

    def outputs(self, settings) -> list[Path]:
        """The files the video's run leaves: NAME.csv, and NAME.mp4 with --mp4."""
        out = [Path(self.out_dir) / f"{self.name}.csv"]
        if settings.mp4:
            out.append(Path(self.out_dir) / f"{self.name}.mp4")
        return out


def make_tracker(settings):
    """The tracker every video of the batch runs through (with its analysis; pose too where the
    MP4s draw it)."""
    return settings.with_analysis(settings.build_tracker(), shown=settings.mp4)


def process_video(job: Job, settings, tracker, progress: Callable[[int], None] | None = None,
                  stop=None) -> dict:
    """Track one video into its outputs; never raises for a bad video: the row says what went wrong.
    Returns the manifest row (status 'done', 'failed' or 'interrupted')."""
    import contextlib

    from .engine import run
    from .io.sources import VideoSource

    t0 = time.perf_counter()
    finals = job.outputs(settings)
    parts = [p.with_name(p.name + ".part") for p in finals]
    one = settings.for_video(parts[0], parts[1] if settings.mp4 else None, job.name)
    row = {"file": job.file, "frames": 0, "faces": 0, "fps": "", "status": "failed", "error": ""}
    tracker.reset()
    try:
        with contextlib.ExitStack() as stack:
            src = stack.enter_context(VideoSource(job.file))
            row["fps"] = f"{src.fps:.3f}" if src.fps else ""
            sinks = one.open_sinks(stack, src, tracker.schema, staged=False)

            def every_ten(res, n_faces):
                if res.frames % 10 == 0:
                    progress(10)

            res = run(src, tracker, sinks, overlay=one.overlay(tracker, sinks), max_frames=settings.max_frames,
                      stop=stop, progress=every_ten if progress else None)
        if progress is not None and res.frames % 10:
            progress(res.frames % 10)
        row.update(frames=res.frames, faces=len(res.ids))
        if res.interrupted:
            row["status"], row["error"] = "interrupted", "interrupted"
        else:
            for part, final in zip(parts, finals):
                if part.exists():
                    os.replace(part, final)
            row["status"] = "done"
    except KeyboardInterrupt:
        row["status"], row["error"] = "interrupted", "interrupted"
    except Exception as e:  # one bad video never ends the run
        row["error"] = _one_line(e)
    finally:
        for part in parts:
            if part.exists():
                try:
                    part.unlink()
                except OSError:
                    pass
    row["seconds"] = f"{time.perf_counter() - t0:.2f}"
    return row


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if type(e).__name__ in ("SourceError", "SinkError") else f"{type(e).__name__}: {msg}"


# ----------------------------------------------------------------------------------------------
def _set_parent_death_signal() -> None:
    """Linux: the kernel kills this worker when its parent dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _worker(wid: int, settings, tasks, results, parent: int) -> None:
    from .engine import one_opencv_thread

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _set_parent_death_signal()
    if os.getppid() != parent:
        return
    one_opencv_thread()  # a spawned process: the parent's setting does not carry over
    try:
        tracker = make_tracker(settings)
    except Exception as e:
        results.put(("fatal", wid, _one_line(e)))
        return
    while True:
        job = tasks.get()
        if job is None:
            break
        results.put(("start", wid, job.index))
        row = process_video(job, settings, tracker, progress=lambda n: results.put(("frames", wid, n)))
        results.put(("done", wid, job.index, row))
    tracker.close()


@dataclass
class BatchResult:
    total: int = 0  # videos in this run's list (after sharding)
    skipped: int = 0  # already done
    done: int = 0
    failed: int = 0
    interrupted: bool = False
    manifest: Path | None = None
    failures: list = field(default_factory=list)  # (file, error)


class _Progress:
    """Frames over the whole set: a tqdm bar where there is a terminal, and a line per video with
    the ETA (also in logs, e.g. Slurm's)."""

    def __init__(self, jobs: list[Job], echo: Callable[[str], None]):
        from tqdm import tqdm

        known = [j.frames_hint for j in jobs if j.frames_hint]
        mean = sum(known) / len(known) if known else 300
        self.total = int(sum(j.frames_hint or mean for j in jobs))
        self.n_jobs = len(jobs)
        self.frames = 0
        self.finished = 0
        self.t0 = time.perf_counter()
        self.echo = echo
        self.bar = tqdm(total=self.total, unit="frame", dynamic_ncols=True, disable=None, leave=False,
                        desc="videos")

    def add(self, n: int) -> None:
        self.frames += n
        self.bar.update(n)

    def eta(self) -> str:
        dt = time.perf_counter() - self.t0
        if self.frames <= 0 or dt <= 0:
            return "?"
        left = max(self.total - self.frames, 0) / (self.frames / dt)
        return time.strftime("%H:%M:%S", time.gmtime(left))

    def video(self, job: Job, row: dict) -> None:
        self.finished += 1
        if job.frames_hint and row.get("status") == "done":
            # the estimate used the container's count; settle on the real one
            self.total += int(row["frames"]) - job.frames_hint
            self.bar.total = self.total
        what = (f"{row['frames']} frames, {row['faces']} face id{'s' * (int(row['faces']) != 1)}, "
                f"{row['seconds']} s" if row["status"] == "done" else f"FAILED: {row['error']}")
        self.echo(f"[{self.finished}/{self.n_jobs}] {job.name}: {what}; ETA {self.eta()}")

    def close(self) -> None:
        self.bar.close()


def _probe_length(path: str) -> int | None:
    try:
        import av

        with av.open(path) as c:
            v = c.streams.video[0]
            if v.frames:
                return int(v.frames)
            if v.duration and v.time_base and v.average_rate:
                return int(float(v.duration * v.time_base) * float(v.average_rate))
    except Exception:
        return None
    return None


def run_batch(videos: str | list, out_dir: str | os.PathLike, settings, jobs: int = 1,
              shard_kn: tuple[int, int] | None = None, echo: Callable[[str], None] | None = None,
              tracker=None) -> BatchResult:
    """Process every video of `videos` (a folder, a glob or a list of paths) into `out_dir`.

    Videos already done (in any manifest of out_dir, outputs present) are skipped; the rest run in
    this process (jobs=1; `tracker` may be given) or in `jobs` spawned worker processes, each
    given `settings` (a RunSettings: it is pickled) with one thread of its own."""
    from .engine import StopFlag

    echo = echo or (lambda s: log.info("%s", s))
    if jobs > 1:
        settings = settings.one_thread_each()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BatchError(f"--out-dir {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(videos, (str, os.PathLike)):
        files = find_videos(videos)
    else:
        files = sorted((Path(v) for v in videos), key=str)  # as find_videos sorts: every shard alike
    names = output_names(files)  # from the whole list, so every shard names alike
    if shard_kn is not None:
        files = shard(files, *shard_kn)
    manifest = Manifest(out, shard_kn)
    result = BatchResult(total=len(files), manifest=manifest.path)
    todo = _to_do(files, names, out, manifest, settings, result)
    if result.skipped:
        echo(f"{result.skipped} of {len(files)} videos already done (see {manifest.path.name}); "
             f"{len(todo)} to do")
    if not todo:
        return result
    for j in todo:
        j.frames_hint = _probe_length(j.file)
        if settings.max_frames and j.frames_hint:
            j.frames_hint = min(j.frames_hint, settings.max_frames)
    bar = _Progress(todo, echo=lambda s: _echo_over_bar(echo, s))

    def finish(job: Job, row: dict) -> None:
        manifest.record(row)
        if row["status"] == "done":
            result.done += 1
        else:
            result.failed += 1
            result.failures.append((job.file, row["error"]))
        bar.video(job, row)

    try:
        with StopFlag() as stop:
            if jobs <= 1:
                result.interrupted = _run_here(todo, settings, tracker, stop, bar, finish)
            else:
                result.interrupted = _run_pool(todo, settings, jobs, stop, bar, finish)
    finally:
        bar.close()
    return result


def _to_do(files: list[Path], names: dict, out: Path, manifest: Manifest, settings, result: BatchResult) -> list[Job]:
    """The jobs of the videos not yet done (counted in `result.skipped` when they are)."""
    todo: list[Job] = []
    for f in files:
        job = Job(len(todo), str(f), names[f], str(out))
        if manifest.is_done(job.file) and all(p.exists() for p in job.outputs(settings)):
            result.skipped += 1
            continue
        todo.append(job)
    return todo


def _run_here(todo: list[Job], settings, tracker, stop, bar: _Progress, finish) -> bool:
    """Every video in this process, one after the other, through `tracker` (made here, and
    closed, when None). Returns True when interrupted."""
    own = tracker is None
    tracker = tracker or make_tracker(settings)
    try:
        for job in todo:
            if stop.stop:
                return True
            row = process_video(job, settings, tracker, progress=bar.add, stop=stop)
            if row["status"] == "interrupted":
                return True
            finish(job, row)
        return False
    finally:
        if own:
            tracker.close()


def _echo_over_bar(echo, s: str) -> None:
    from tqdm import tqdm

    with tqdm.external_write_mode():
        echo(s)


def _fail_job(job: Job, settings, finish, error: str) -> None:
    finish(job, {"file": job.file, "frames": 0, "faces": 0, "fps": "", "status": "failed", "error": error,
                 "seconds": ""})
    for out in job.outputs(settings):
        out.with_name(out.name + ".part").unlink(missing_ok=True)


def _run_pool(todo: list[Job], settings, jobs: int, stop, bar: _Progress, finish) -> bool:
    """Workers pull jobs from a queue; a worker that dies fails its video and is replaced.
    Returns True when interrupted."""
    pool = _Pool(todo, settings, min(jobs, len(todo)), bar, finish)
    try:
        while pool.left:
            if stop.stop:
                return True
            pool.step()
        return False
    finally:
        pool.close()


class _Pool:
    """The worker processes of a batch and what each holds: started with the jobs queued and one
    end-of-work marker per worker, fed by `step` until no job is left, ended by `close`."""

    def __init__(self, todo: list[Job], settings, n: int, bar: _Progress, finish):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.tasks, self.results = self.ctx.Queue(), self.ctx.Queue()
        for j in todo:
            self.tasks.put(j)
        for _ in range(n):
            self.tasks.put(None)
        self.settings, self.bar, self.finish = settings, bar, finish
        self.parent = os.getpid()
        self.workers: dict[int, object] = {}
        self.holding: dict[int, int | None] = {}
        self.next_id = 0
        self.left = {j.index for j in todo}
        self.by_index = {j.index: j for j in todo}
        for _ in range(n):
            self.spawn()

    def spawn(self) -> None:
        p = self.ctx.Process(target=_worker, args=(self.next_id, self.settings, self.tasks, self.results, self.parent),
                             daemon=True, name=f"fkp-batch-{self.next_id}")
        p.start()
        self.workers[self.next_id], self.holding[self.next_id] = p, None
        self.next_id += 1

    def step(self) -> None:
        """Handle one message from the workers, or, when none came within half a second, see to
        the workers that ended."""
        import queue as queue_mod

        try:
            msg = self.results.get(timeout=0.5)
        except queue_mod.Empty:
            self._reap()
            return
        kind, wid = msg[0], msg[1]
        if kind == "frames":
            self.bar.add(msg[2])
        elif kind == "start":
            self.holding[wid] = msg[2]
        elif kind == "done":
            self.holding[wid] = None
            if msg[2] in self.left:
                self.left.discard(msg[2])
                self.finish(self.by_index[msg[2]], msg[3])
        elif kind == "fatal":
            raise BatchError(f"a worker could not start: {msg[2]}")

    def _reap(self) -> None:
        """A worker that died fails the video it held, and one that did not take its end-of-work
        marker is replaced."""
        for wid, p in list(self.workers.items()):
            if p.exitcode is None:
                continue
            held = self.holding.pop(wid, None)
            del self.workers[wid]
            if held is not None and held in self.left:
                self.left.discard(held)
                _fail_job(self.by_index[held], self.settings, self.finish,
                          f"worker process died (exit code {p.exitcode})")
            if p.exitcode != 0 and self.left:
                self.spawn()  # it did not take its end-of-work marker: a replacement will
        if self.left and not self.workers:  # a worker died between taking a video and reporting it
            for idx in sorted(self.left):
                _fail_job(self.by_index[idx], self.settings, self.finish, "worker process died before reporting")
            self.left.clear()

    def close(self) -> None:
        for p in self.workers.values():
            if p.is_alive():
                if self.left:
                    p.terminate()
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
        for idx in self.left:  # interrupted: nothing half-written stays behind
            for part in self.by_index[idx].outputs(self.settings):
                part.with_name(part.name + ".part").unlink(missing_ok=True)
        self.tasks.cancel_join_thread()
        self.results.cancel_join_thread()
