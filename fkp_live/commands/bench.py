"""`fkp-live bench` / `python -m fkp_live.commands.bench`: speed, memory and smoothing figures.

Prints, in one run on one machine: our fps on a clip (no window, no MP4) next to MediaPipe's legacy
FaceMesh on the same frames; fps with MP4 + CSV written; ms per stage; resident memory after 100
frames and at the end of a long stream; the smoothing's jitter and lag. Nothing here is a test:
the numbers are for reading.
"""
from __future__ import annotations

import contextlib
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

import click
import numpy as np

log = logging.getLogger("fkp_live")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Loop:
    """A source that replays frames (a clip held in memory) for `n` frames."""

    still = False
    live = False
    path = None

    def __init__(self, frames, n, fps=30.0):
        self.frames, self.length, self.fps, self.name = frames, n, fps, "loop"

    def __iter__(self):
        from ..frame import Frame

        for i in range(self.length):
            f = self.frames[i % len(self.frames)]
            yield Frame(i, i / self.fps, f.image.copy())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _settings(model, device, threads, detector, smooth=None, **more):
    """The bench's runs as RunSettings (smooth None: the default strength)."""
    from ..settings import RunSettings

    if smooth is not None:
        more["smooth"] = smooth
    return RunSettings(model=model, device=device, threads=threads, detector=detector, **more)


def _tracker(model, device, threads, detector, smooth=None):
    return _settings(model, device, threads, detector, smooth).build_tracker()


def _facemesh_fps(frames) -> float:
    import cv2

    from ..track.detect import mediapipe_solution, quiet_stderr

    with quiet_stderr():
        mesh = mediapipe_solution("face_mesh").FaceMesh(static_image_mode=False, max_num_faces=1)
        mesh.process(cv2.cvtColor(frames[0].image, cv2.COLOR_BGR2RGB))
    t0 = time.perf_counter()
    for f in frames:
        mesh.process(cv2.cvtColor(f.image, cv2.COLOR_BGR2RGB))
    dt = time.perf_counter() - t0
    mesh.close()
    return len(frames) / dt


def _ours_fps(tracker, frames):
    """Frames in memory through the tracker: (fps, ms per stage)."""
    from ..engine import run

    tracker(frames[0])  # warm-up (first detection, ORT allocations)
    tracker.reset()
    res = run(frames, tracker)
    return res.fps, res.ms_per_frame()


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.argument("clip", required=False, metavar="[VIDEO]")
@click.option("--video", metavar="PATH", help="The clip to measure on (the same as VIDEO) [default: the built-in demo].")
@click.option("--model", metavar="NAME|PATH", default=None, help="Model [default: fast, the default model of fkp-live].")
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--detector", default="auto", show_default=True)
@click.option("--long", "long_frames", type=int, default=3000, show_default=True,
              help="Frames in the long stream for the memory check.")
@click.option("--repeat", type=int, default=2, show_default=True, help="Alternate ours/FaceMesh runs; best of.")
@click.option("--pairs", type=int, default=5, show_default=True,
              help="Whole-process pairs (fkp-live vs FaceMesh, alternating) on VIDEO; 0 skips them.")
@click.option("--processes-only", is_flag=True, help="Only the whole-process side-by-side.")
@click.option("--json", "json_out", metavar="PATH", help="Also write the whole-process table as JSON.")
@click.option("--dlib-model", metavar="PATH", type=click.Path(exists=True, dir_okay=False),
              help="dlib's shape_predictor_68_face_landmarks.dat, to add dlib to the side-by-side (needs the "
              "dlib package).")
@click.option("--faces", "face_counts", metavar="N,N,...", default=None,
              help="Only the many-faces figures: per-frame cost at 1280x720 with this many faces (e.g. 1,5,20), "
              "and how many each detector finds.")
def bench(clip, video, model, device, threads, detector, long_frames, repeat, pairs, processes_only, json_out,
          dlib_model, face_counts):
    """Measure fkp-live on VIDEO (or the built-in demo): fps vs MediaPipe FaceMesh, fps with
    outputs, stage times, memory, smoothing."""
    if clip and video and clip != video:
        raise click.UsageError("give the clip once: VIDEO or --video")
    if face_counts is not None:
        _many_faces(_face_counts(face_counts), model, device, threads)
        return
    clip = Path(clip or video) if (clip or video) else None
    if clip is not None and not clip.exists():
        raise click.BadParameter(f"{clip} does not exist", param_hint="VIDEO")
    if clip is not None and pairs > 0:
        _processes(clip, pairs, model, json_out, dlib_model)
    elif processes_only:
        raise click.UsageError("the whole-process side-by-side needs a VIDEO")
    if processes_only:
        return
    frames, fps_src, name = _clip_frames(clip)
    h, w = frames[0].image.shape[:2]
    click.echo(f"clip: {name}, {len(frames)} frames, {w}x{h}; CPU cores: {os.cpu_count()}")

    tracker = _tracker(model, device, threads, detector)
    click.echo(f"model: {tracker.landmarker.onnx_path} on {tracker.device} "
               f"({tracker.landmarker.session.get_providers()[0]}), detector {tracker.detector_name}")
    _in_memory(tracker, frames, repeat)
    _from_the_file(clip, model, device, threads, detector)
    _memory(frames, long_frames, fps_src, model, device, threads, detector)
    _smoothing(tracker, frames, name, model, device, threads, detector)


def _face_counts(text: str) -> list[int]:
    """--faces 1,5,20 -> [1, 5, 20]."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"{text!r}: give face counts as whole numbers >= 1, e.g. 1,5,20",
                                 param_hint="--faces")
    return counts


def _clip_frames(clip: Path | None):
    """The clip's frames in memory (the demo's 300 without one), its frame rate and its name."""
    from ..io.sources import DemoSource, VideoSource

    if clip is not None:
        with VideoSource(clip) as src:
            frames = list(src)
            fps_src = src.fps or 30.0
        return frames, fps_src, clip.name
    return list(DemoSource(frames=300)), 30.0, "demo (300 frames)"


def _in_memory(tracker, frames, repeat: int) -> None:
    """fps on frames in memory, ours and FaceMesh's, alternating; best of `repeat`."""
    ours, mesh = [], []
    for _ in range(max(1, repeat)):  # alternate, so a busy neighbour process hurts both alike
        fps, stages = _ours_fps(tracker, frames)
        ours.append(fps)
        mesh.append(_facemesh_fps(frames))
    click.echo("\n== fps on frames in memory (no decode, no window, no MP4), best of %d" % len(ours))
    click.echo(f"fkp-live                    {max(ours):8.1f} fps   (runs: {', '.join(f'{x:.0f}' for x in ours)})")
    click.echo(f"MediaPipe FaceMesh legacy   {max(mesh):8.1f} fps   (runs: {', '.join(f'{x:.0f}' for x in mesh)})")
    click.echo("ms per frame: " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))


def _from_the_file(clip: Path | None, model, device, threads, detector) -> None:
    """End to end from the file: decode + track, then decode + track + draw + MP4 + CSV."""
    from ..engine import run
    from ..io.sources import DemoSource, VideoSource

    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for label, outputs in (("decode + track, no outputs", False), ("decode + track + MP4 + CSV", True)):
            files = dict(output=str(Path(tmp) / "o.mp4"), csv=str(Path(tmp) / "o.csv")) if outputs else {}
            settings = _settings(model, device, threads, detector, display=False, **files)
            tr = settings.build_tracker()
            src = VideoSource(clip) if clip is not None else DemoSource(frames=300)
            with contextlib.ExitStack() as st:
                st.enter_context(src)
                sinks = settings.open_sinks(st, src, tr.schema)
                # drawn as the command line draws: on the frame's own picture (its I420 where the
                # video has it)
                res = run(src, tr, sinks, overlay=settings.overlay(tr, sinks))
            runs[label] = (res.fps, res.ms_per_frame())
        click.echo("\n== fps from the file")
        for label, (fps, ms) in runs.items():
            click.echo(f"{label:<28}{fps:8.1f} fps;  ms/frame: " + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()))


def _memory(frames, long_frames: int, fps_src: float, model, device, threads, detector) -> None:
    """Resident memory after 100 frames and after `long_frames` of the clip looped."""
    from ..engine import run

    tr = _tracker(model, device, threads, detector)
    marks = {}

    def progress(res, _n):
        if res.frames in (100, long_frames):
            marks[res.frames] = (_rss_mib(), _peak_mib())

    run(_Loop(frames, long_frames, fps_src), tr, progress=progress)
    a, b = marks.get(100), marks.get(long_frames)
    click.echo(f"\n== memory over {long_frames} frames (clip looped)")
    if a and b:
        click.echo(f"RSS after 100 frames {a[0]:.1f} MiB (peak {a[1]:.1f}); after {long_frames}: {b[0]:.1f} MiB "
                   f"(peak {b[1]:.1f}); growth {b[0] - a[0]:+.1f} MiB")


def _smoothing(tracker, frames, name: str, model, device, threads, detector) -> None:
    """Smoothing: synthetic tracks with known truth, then the model on the clip and on the demo."""
    from ..track.smooth import DEFAULT_STRENGTH, jitter, lag, smooth_track, synthetic_track

    click.echo(f"\n== smoothing (strength {DEFAULT_STRENGTH:g}, the default; jitter = mean frame-to-frame "
               "movement / inter-ocular distance)")
    for noise in (0.01, 0.03):
        noisy, truth, iod = synthetic_track(300, noise=noise, moving=False)
        out = smooth_track(noisy, iod, DEFAULT_STRENGTH)
        r = jitter(noisy[30:], iod) / jitter(out[30:], iod)
        lags = []
        for speed in (1.0, 4.0):
            n2, t2, _ = synthetic_track(300, noise=noise, moving=True, speed=speed)
            lags.append(lag(smooth_track(n2, iod, DEFAULT_STRENGTH)[30:], t2[30:]))
        click.echo(f"synthetic, noise {noise:.0%} IOD: still jitter {jitter(noisy[30:], iod):.4f} -> "
                   f"{jitter(out[30:], iod):.4f} ({r:.1f}x lower); lag on moving face "
                   f"{lags[0]:.2f} frames (demo speed), {lags[1]:.2f} (4x speed)")
    if tracker.schema.ocular is None:
        return
    if not _model_jitter(tracker, frames, name, model, device, threads, detector):
        return
    _demo_smoothing(model, device, threads, detector)


def _model_jitter(tracker, frames, name: str, model, device, threads, detector) -> bool:
    """The model's jitter on the clip, raw and smoothed; False for a model whose points never move."""
    from ..track.smooth import jitter, lag

    raw_tr = _tracker(model, device, threads, detector, smooth=0.0)
    raw, sm = [], []
    tracker.reset()
    for f in frames:
        a_ = raw_tr(f)
        b_ = tracker(f)
        if len(a_) != 1 or len(b_) != 1:
            continue
        raw.append(a_[0].raw)
        sm.append(b_[0].smoothed)
    if len(raw) > 30:
        raw, sm = np.array(raw), np.array(sm)
        e = tracker.schema.ocular_points(raw)
        iod = np.linalg.norm(e[:, 1] - e[:, 0], axis=-1)
        if jitter(raw, iod) < 1e-6:
            click.echo(f"model on {name}: its points do not move at all (a stand-in model?); no figures")
            return False
        click.echo(f"model on {name}: jitter raw {jitter(raw, iod):.4f}, smoothed {jitter(sm, iod):.4f} "
                   f"({jitter(raw, iod) / max(jitter(sm, iod), 1e-9):.1f}x lower); smoothed lags the raw "
                   f"points by {lag(sm, raw):.2f} frames")
    return True


# ------------------------------------------------------------------------ many faces
def _many_faces(counts: list[int], model, device, threads, frames: int = 90, size=(1280, 720)) -> None:
    """Per-frame cost once the faces are tracked, on the built-in demo's crowd (copies of the
    portrait's head on a 1280x720 grid, each moving), and the faces each detector finds."""
    from ..crop import crop_from_points
    from ..io.sources import DemoSource
    from ..track.detect import make_detector
    from ..track.smooth import DEFAULT_STRENGTH, KeypointSmoother

    click.echo(f"== many faces at {size[0]}x{size[1]} (demo crowd, {frames} frames; Haar detector, "
               f"re-detection every 30 frames only while a face is missing); CPU cores: {os.cpu_count()}")
    for k in counts:
        clip = list(DemoSource(frames=frames, faces=k, tight=True, size=size))
        found = {}
        for name in ("blazeface", "blazeface-full", "haar"):
            det = make_detector(name)
            found[name] = len(det(clip[0].image))
            getattr(det, "close", lambda: None)()
        tr = _settings(model, device, threads, "haar", max_faces=k).build_tracker()
        tr(clip[0])  # detection, allocations
        per, parts = [], {"crop": [], "back-projection": [], "smoother": []}
        grey = []
        smoothers: dict[int, KeypointSmoother] = {}
        for f in clip[1:]:
            # what the run engine's reading thread does beside the model: the grey picture
            grey.append(tr.read_ahead(f).get("grey", 0.0))
            t = tr.track(f)
            per.append((len(t.faces), sum(t.seconds.values()), t.seconds))
            if not t.faces:
                continue
            # the per-face parts, timed apart on this frame's faces: cutting (from the grey
            # picture) and normalising the crops; crop fractions -> frame pixels and the next crop
            # from them; one Kalman update
            crops = [face.crop for face in t.faces]
            uv = [face.crop.from_frame(face.raw) for face in t.faces]
            t0 = time.perf_counter()
            tr.landmarker.prepare_frame(f, crops)
            t1 = time.perf_counter()
            for c, u in zip(crops, uv):
                crop_from_points(c.to_frame(u), tr.schema, tr.card.crop_scale, tr.card.crop_rotate)
            t2 = time.perf_counter()
            for face in t.faces:
                sm = smoothers.setdefault(face.id, KeypointSmoother(DEFAULT_STRENGTH))
                sm(face.raw, 50.0)
            t3 = time.perf_counter()
            n = len(t.faces)
            for key, dt in (("crop", t1 - t0), ("back-projection", t2 - t1), ("smoother", t3 - t2)):
                parts[key].append(dt / n)
        steady = [p for p in per if "detect" not in p[2]]
        ms = 1e3 * float(np.median([p[1] for p in steady])) if steady else float("nan")
        stages = {s: 1e3 * float(np.median([p[2].get(s, 0.0) for p in steady])) for s in ("crop", "infer", "smooth", "post")}
        tracked = int(np.median([p[0] for p in per]))
        click.echo(f"{k:>3} faces: {ms:6.2f} ms per tracked frame ({ms / max(tracked, 1):.2f} ms per face; "
                   + ", ".join(f"{s} {v:.2f}" for s, v in stages.items())
                   + f"), {tracked} tracked; found in frame 0 by "
                   + ", ".join(f"{n} {c}" for n, c in found.items()))
        click.echo("           per face: " + ", ".join(f"{key} {1e3 * float(np.median(v)):.3f} ms"
                                                    for key, v in parts.items() if v)
                   + f"; per frame, in the reading thread: grey picture {1e3 * float(np.median(grey)):.3f} ms")
        tr.close()


# ------------------------------------------------------------------------ whole processes
def facemesh_process(path: str) -> int:
    """What a MediaPipe user runs: legacy FaceMesh in tracking mode over cv2.VideoCapture frames."""
    import cv2

    from ..track.detect import mediapipe_solution

    cap = cv2.VideoCapture(path)
    mesh = mediapipe_solution("face_mesh").FaceMesh(static_image_mode=False, max_num_faces=1)
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        n += 1
    return n


def dlib_process(path: str, model: str) -> int:
    """dlib's 68-point predictor with its own HOG detector on every frame (the classic pipeline)."""
    import cv2
    import dlib

    det, pred = dlib.get_frontal_face_detector(), dlib.shape_predictor(model)
    cap = cv2.VideoCapture(path)
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        for r in det(grey, 0):
            pred(grey, r)
        n += 1
    return n


def _timed(cmd: list[str]) -> dict:
    """Run a command; its wall seconds, user+sys CPU seconds and peak RSS (MiB), from wait4."""
    import subprocess

    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise click.ClickException(f"{' '.join(cmd[:4])} ... failed ({p.returncode}): {err.strip()[-300:]}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "rss_mib": ru.ru_maxrss / 1024}


def _processes(clip: Path, pairs: int, model, json_out, dlib_model) -> dict:
    """fkp-live and FaceMesh (and dlib) as whole processes on the same file, alternating."""
    import json
    import statistics
    import sys

    from ..io.sources import VideoSource

    with VideoSource(clip) as src:
        frames = sum(1 for _ in src)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cmds = {
            "fkp-live": [py, "-m", "fkp_live.cli", "--video", str(clip), "--no-display", "--csv",
                         str(Path(tmp) / "o.csv")] + (["--model", model] if model else []),
            "MediaPipe FaceMesh": [py, "-c", f"from fkp_live.commands.bench import facemesh_process; "
                                             f"facemesh_process({str(clip)!r})"],
        }
        if dlib_model:
            try:
                import dlib  # noqa: F401
                cmds["dlib 68 + HOG"] = [py, "-c", f"from fkp_live.commands.bench import dlib_process; "
                                                   f"dlib_process({str(clip)!r}, {dlib_model!r})"]
            except ImportError:
                click.echo("dlib is not installed (pip install dlib-bin): left out of the side-by-side")
        else:
            click.echo("dlib: give --dlib-model shape_predictor_68_face_landmarks.dat (pip install dlib-bin "
                       "face_recognition_models installs dlib and that file) to add it")
        runs = {k: [] for k in cmds}
        for _ in range(max(1, pairs)):
            for k, cmd in cmds.items():  # alternate, so a busy neighbour hurts every program alike
                runs[k].append(_timed(cmd))
    table = {}
    for k, rs in runs.items():
        wall = statistics.median(r["wall_s"] for r in rs)
        table[k] = {"wall_s": round(wall, 3), "fps": round(frames / wall, 1),
                    "cpu_s": round(statistics.median(r["cpu_s"] for r in rs), 3),
                    "rss_mib": round(max(r["rss_mib"] for r in rs), 1),
                    "wall_runs": [round(r["wall_s"], 3) for r in rs]}
    ours = table["fkp-live"]
    # fkp-live against each other program: its frame rate over theirs, its CPU time over theirs
    ratios = {k: {"fps": round(other["wall_s"] / ours["wall_s"], 3), "cpu": round(ours["cpu_s"] / other["cpu_s"], 3),
                  "per_pair_fps": [round(m["wall_s"] / o["wall_s"], 3) for o, m in zip(runs["fkp-live"], runs[k])]}
              for k, other in table.items() if k != "fkp-live"}
    click.echo(f"\n== whole processes on {clip.name} ({frames} frames), {pairs} alternating runs each, median")
    click.echo(f"{'program':<22}{'wall s':>8}{'fps':>8}{'CPU s':>8}{'peak RSS MiB':>14}")
    for k, r in table.items():
        click.echo(f"{k:<22}{r['wall_s']:>8.2f}{r['fps']:>8.1f}{r['cpu_s']:>8.2f}{r['rss_mib']:>14.0f}")
    for k, ratio in ratios.items():
        click.echo(f"fkp-live / {k}: {ratio['fps']:.2f}x the frame rate (pairs: "
                   f"{', '.join(f'{x:.2f}' for x in ratio['per_pair_fps'])}), {ratio['cpu']:.2f}x the CPU time")
    # "ratio": against FaceMesh (the table's first comparison); "ratios": against every program run
    out = {"clip": str(clip), "frames": frames, "cores": os.cpu_count(), "programs": table,
           "ratio": ratios["MediaPipe FaceMesh"], "ratios": ratios}
    if json_out:
        Path(json_out).write_text(json.dumps(out, indent=2) + "\n")
        click.echo(f"wrote {json_out}")
    return out


def _demo_smoothing(model, device, threads, detector, frames: int = 240, noise: float = 3.0) -> dict:
    """The real model on the demo portrait, still and moving, with camera-like noise.

    Still: the same image every frame plus Gaussian pixel noise (sd `noise` grey levels), so all
    jitter is the model's response to sensor noise. Moving: the demo's known motion; the truth of
    every point is its mean position in the portrait's own frame pushed through that frame's
    transform, so lag is measured against where the face really is.
    """
    from ..track.smooth import jitter, lag
    from ..io.sources import DemoSource, Motion

    rng = np.random.default_rng(0)
    result = {}
    for label, motion in (("still", lambda t: Motion()), ("moving", None)):
        src = DemoSource(frames=frames, motion=motion)
        tracks = {}
        for strength in (0.0, None):  # None: the default strength
            tr = _tracker(model, device, threads, detector, smooth=strength)
            raw, sm, mats = [], [], []
            for f in src:
                img = np.clip(f.image.astype(np.float32) + rng.normal(0, noise, f.image.shape), 0, 255).astype(np.uint8)
                faces = tr(img)
                if len(faces) == 1:
                    raw.append(faces[0].raw)
                    sm.append(faces[0].smoothed)
                    mats.append(src.transform(f.index))
            tracks[strength] = (np.array(raw), np.array(sm), np.array(mats))
        raw, _, mats = tracks[0.0]
        _, sm, _ = tracks[None]
        n = min(len(raw), len(sm))
        if n < 60:
            click.echo(f"demo {label}: the face was not tracked in enough frames ({n})")
            continue
        raw, sm, mats = raw[20:n], sm[20:n], mats[20:n]
        # each frame's raw points in portrait pixels, averaged: the face's true shape there
        inv = np.array([np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2] for m in mats])
        local = np.einsum("tij,tnj->tni", inv[:, :, :2], raw) + inv[:, None, :, 2]
        shape = local.mean(axis=0)
        truth = np.einsum("tij,nj->tni", mats[:, :, :2], shape) + mats[:, None, :, 2]
        e = tr.schema.ocular_points(truth)
        iod = np.linalg.norm(e[:, 1] - e[:, 0], axis=-1)
        jr, js = jitter(raw, iod), jitter(sm, iod)
        if label == "still":
            result["still_jitter"] = (jr, js)
            click.echo(f"model, demo face still + pixel noise sd {noise:g}: jitter raw {jr:.4f}, smoothed {js:.4f} "
                       f"({jr / max(js, 1e-9):.1f}x lower)")
        else:
            err_r = float(np.mean(np.linalg.norm(raw - truth, axis=-1) / iod[:, None]))
            err_s = float(np.mean(np.linalg.norm(sm - truth, axis=-1) / iod[:, None]))
            result["moving_lag"] = (lag(raw, truth), lag(sm, truth))
            click.echo(f"model, demo face moving: lag behind the true motion raw {lag(raw, truth):.2f} frames, "
                       f"smoothed {lag(sm, truth):.2f} frames; error vs truth (IOD) raw {err_r:.4f}, "
                       f"smoothed {err_s:.4f}")


    return result


if __name__ == "__main__":
    bench.main(prog_name="python -m fkp_live.commands.bench", auto_envvar_prefix="FKP_LIVE_BENCH")
