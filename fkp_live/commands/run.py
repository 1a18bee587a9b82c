"""`fkp-live`: track facial keypoints in a camera, video file, image folder or the demo.

This module is the command line only: it maps the options onto a `RunSettings` (same names), runs
it (`fkp_live.single.run_single`, or `fkp_live.batch.run_batch` for --videos) and reports: the
log lines, the progress bar, the summary, the error messages and the exit status.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import click

from ..io import DEFAULT_PRESET, PRESETS
from ..stopflag import StopFlag, process_flag
from ..track.smooth import DEFAULT_STRENGTH as DEFAULT_SMOOTH
from .common import FiniteFloat, FkpCommand, setup_logging
from .common import fail as _fail

log = logging.getLogger("fkp_live")

EXAMPLES = """\b
Examples:
  fkp-live --demo                            the built-in moving portrait, in a window
  fkp-live --camera 0                        webcam 0; q or Esc quits
  fkp-live --video talk.mp4 -o talk_fkp.mp4 --csv talk.csv --no-display
                                             annotated video (audio kept) and a CSV of points
  fkp-live --images faces/ --csv faces.csv   one CSV row per face per image (file in `source`)
  fkp-live --video talk.mp4 --draw points,box,ids,fps --smooth 2 --max-faces 2
  fkp-live --video talk.mp4 --device cpu --threads 2 --stats --no-display
  fkp-live --video talk.mp4 --analysis pose,eyes,mouth --draw all --csv talk.csv -o talk_fkp.mp4
                                             head pose, eye openness, blinks and mouth in the CSV,
                                             pose axes drawn
  fkp-live --video talk.mp4 --crops crops/ --crop-size 112 --crops-every 5 --no-display
                                             eye-aligned face crops, f{frame:06d}_id{face_id}.png
  fkp-live --videos 'clips/*.mp4' --out-dir out/ --jobs 4 --mp4
                                             many videos: out/NAME.csv (+ .mp4) each, out/manifest.csv;
                                             run it again to resume
  fkp-live --videos clips/ --out-dir out/ --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT
                                             one shard of the set per array task (see examples/)
  fkp-live --camera 0 --send ws://:8765 --send osc://127.0.0.1:9000
                                             live to a browser (http://127.0.0.1:8765/) and an OSC patch
  fkp-live bench --video talk.mp4            speed, memory and smoothing figures

\b
Every option can also come from the environment: FKP_LIVE_<OPTION>, e.g.
  FKP_LIVE_DEVICE=cpu FKP_LIVE_NO_DISPLAY=1 fkp-live --video talk.mp4 --csv out.csv

\b
CSV columns (OpenFace's names and order): frame,face_id,timestamp,confidence,success,
x_0..x_{N-1},y_0..y_{N-1}, with --point-confidence c_0..c_{N-1}, then with --analysis: pose_Tx,pose_Ty,pose_Tz (mm),
pose_Rx,pose_Ry,pose_Rz (degrees, not OpenFace's radians), ear_l,ear_r,blink, mouth_open
(+ source for --images); a frame without a face has one row with face_id -1, success 0.

\b
Head pose: cv2.solvePnP against a generic 3D face (from MediaPipe's canonical face model) in a
pinhole camera with focal length --focal (default: the frame width) and the principal point at
the image centre, no distortion. Rx pitch (> 0 looking down), Ry yaw (> 0 turned towards the
image's left), Rz roll (> 0 clockwise); T in mm, camera axes (x right, y down, z forward).
Eyes: eye aspect ratio per eye (ear_l: the image-left eye), blink = 1 while the mean EAR is
below --blink-threshold (until it rises 0.02 above it). mouth_open: inner-lip height / width.

\b
Exit status: 0 done, 1 failed while running (a full disk or size limit, the output folder
removed; with --videos: a video failed), 2 bad usage or input, 130 interrupted.
Ctrl-C (or SIGTERM, at any time) stops after the current frame: outputs are finalised and playable.
Outputs are written as NAME.partial.EXT and replace NAME.EXT only when the run wrote a frame; a
run killed outright leaves them under that name (the MP4 playable to about a second before).
"""


# the options that are not a RunSettings field of the same name
_NOT_SETTINGS = ("draw_layers", "no_display", "verbose", "stats")


def settings_from(options: dict):
    """The command line's options as RunSettings: each option is the field of its name, except
    --draw (draw), --no-display (display) and -v (quiet); --stats is the report's."""
    from ..settings import RunSettings

    fields = {k: v for k, v in options.items() if k not in _NOT_SETTINGS}
    return RunSettings(**fields, draw=options["draw_layers"], display=not options["no_display"],
                       quiet=not options["verbose"])


def _device_line(tracker) -> str:
    sess = tracker.landmarker.session
    return (f"model {tracker.landmarker.onnx_path.name} ({tracker.schema.name}, {tracker.schema.n} points) "
            f"on {tracker.device} ({sess.get_providers()[0]}), detector {tracker.detector_name}")


@click.command(cls=FkpCommand, epilog=EXAMPLES, context_settings=dict(
    help_option_names=["-h", "--help"], auto_envvar_prefix="FKP_LIVE", max_content_width=100))
@click.option("--camera", type=int, metavar="N", help="Read camera number N (0 is the first).")
@click.option("--video", metavar="PATH", help="Read a video file (any format FFmpeg reads).")
@click.option("--images", metavar="DIR", help="Read every image in a folder, sorted by name.")
@click.option("--demo", is_flag=True, help="The built-in demo: a portrait moving smoothly (needs nothing).")
@click.option("--videos", metavar="DIR|GLOB",
              help="Many videos (a folder's video files, or a quoted glob such as 'clips/**/*.mp4'): one CSV "
                   "(and MP4 with --mp4) per video in --out-dir, a resumable manifest.")
@click.option("--demo-frames", type=click.IntRange(min=1), default=300, show_default=True,
              help="Length of the demo.")
@click.option("--model", metavar="NAME|PATH", default=None,
              help="fast (the default: ibug68, INT8 on a CPU, FP16 on a GPU), accurate (ibug68-accurate, "
                   "likewise), a shipped file's name (ibug68, ibug68-accurate.int8, imm58, kaggle15, ...) "
                   "or an .onnx file with its .json card beside it [default: fast].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="auto",
              show_default=True, help="Where ONNX Runtime runs the model; auto picks the best available. cuda or "
              "tensorrt that cannot be used falls back to the CPU with a warning; the log line names the provider used.")
@click.option("--detector", type=click.Choice(["auto", "blazeface", "blazeface-full", "haar"]), default="auto",
              show_default=True, help="Face detector: BlazeFace short range (near faces), full range "
              "(small faces), Haar (no MediaPipe); auto = short range, retrying full range when it finds none.")
@click.option("--redetect-every", type=click.IntRange(min=1), default=30, show_default=True, metavar="N",
              help="Look for new faces every N frames (faces are also re-detected whenever one is lost).")
@click.option("--max-faces", type=click.IntRange(1, 64), default=5, show_default=True, metavar="N",
              help="Track at most N faces.")
@click.option("--smooth", type=FiniteFloat(min=0), default=DEFAULT_SMOOTH, show_default=True, metavar="STRENGTH",
              help="Kalman smoothing strength; higher is steadier, 0 is off.")
@click.option("--no-smooth", is_flag=True, help="Raw keypoints, no smoothing.")
@click.option("--min-confidence", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="Drop a face when the model's confidence falls below this.")
@click.option("--refine-shift", type=FiniteFloat(min=0), metavar="PX",
              help="A new face (every face of a still picture) is read again from the crop its first points "
                   "give, as the mean of two copies of that crop moved PX model pixels one way and the other "
                   "along the diagonal (with fast, 0.06 points of NME lower on 300-W's validation faces, for "
                   "one more model run per new face); 0 reads that crop once [default: 3].")
@click.option("-o", "--output", metavar="OUT.mp4", help="Write the annotated video (H.264 MP4, source audio kept).")
@click.option("--mp4-preset", type=click.Choice(PRESETS), default=DEFAULT_PRESET, show_default=True,
              help="x264 speed/size trade-off for --output and --mp4: realtime (x264's ultrafast with CABAC, "
                   "deblocking, B-frames and half-pixel motion search) encodes in about 30 % less time than "
                   "superfast for files about as large; veryfast and slower make smaller files, slower.")
@click.option("--mp4-crf", type=click.IntRange(0, 51), default=20, show_default=True, metavar="CRF",
              help="x264 quality for --output and --mp4: lower is better and larger (18-28 is usual).")
@click.option("--draw", "draw_layers", metavar="LAYERS", default="points,contours,ids", show_default=True,
              help="Overlay: any of points,contours,ids,box,fps,pose (or all, none); pose draws the head's axes.")
@click.option("--csv", metavar="PATH", help="Write keypoints as CSV (OpenFace-style columns).")
@click.option("--jsonl", metavar="PATH", help="Write keypoints as JSON Lines, one frame per line.")
@click.option("--send", "send", multiple=True, metavar="URL",
              help="Send every frame's faces live, as tracked (repeatable): osc://HOST:PORT, an OSC bundle per "
                   "frame; ws://HOST:PORT, a WebSocket server streaming a JSON message per frame, with a live "
                   "view page at http://HOST:PORT/ (it listens on 127.0.0.1 unless HOST names another "
                   "address); udp://HOST:PORT, a JSON datagram per frame. ws:// needs pip install "
                   "'fkp-live[live]'.")
@click.option("--send-normalised", is_flag=True,
              help="With --send: coordinates as fractions (0..1) of the frame's width and height.")
@click.option("--point-confidence", is_flag=True,
              help="Each point's confidence (0..1, from the heatmap it is read from) in the CSV (c_0..), the "
                   "JSONL, --send and the Python Face; needs a model with that output (fkp-train export "
                   "--point-confidence, or python -m train.point_confidence MODEL OUT).")
@click.option("--analysis", metavar="LIST", default="none", show_default=True,
              help="Per-face analysis in the CSV, JSONL and Python API: any of pose,eyes,mouth (or all, "
                   "none). pose: head pose (pose_T* mm, pose_R* degrees); eyes: eye aspect ratios and blink; "
                   "mouth: inner-lip openness. Needs a 68-point iBUG model.")
@click.option("--focal", type=FiniteFloat(min=1, min_open=False), metavar="PX",
              help="Camera focal length in pixels for the head pose [default: the frame width].")
@click.option("--blink-threshold", type=FiniteFloat(0, 1), default=0.2, show_default=True, metavar="EAR",
              help="Eyes count as shut (blink 1) below this mean eye aspect ratio.")
@click.option("--crops", metavar="DIR",
              help="Write each face, aligned on its eyes, as DIR/f{frame:06d}_id{face_id}.png (the CSV row's "
                   "frame and face_id); with --videos, DIR/NAME/ per video.")
@click.option("--crop-size", type=click.IntRange(min=8), metavar="PX",
              help="Side of the square --crops images [default: 112].")
@click.option("--crops-every", type=click.IntRange(min=1), metavar="N",
              help="Crops of every Nth frame only (frame numbers divisible by N) [default: 1].")
@click.option("--out-dir", metavar="DIR", help="With --videos: the folder for the outputs and manifest.csv.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="With --videos: N worker processes, each with its own tracker (1 ONNX thread each).")
@click.option("--shard", metavar="K/N",
              help="With --videos: only every Nth video of the sorted list from the Kth (K = 0..N-1), for "
                   "Slurm array jobs and Kubernetes indexed Jobs.")
@click.option("--mp4", is_flag=True, help="With --videos: also write the annotated OUT/NAME.mp4 per video.")
@click.option("--morph-to", metavar="IMAGE",
              help="Draw every tracked face as the face in IMAGE, moving with yours (window and MP4).")
@click.option("--morph-alpha", type=FiniteFloat(0, 1), default=0.5, show_default=True,
              help="With --morph-to: 1 shows the target's face, 0 the frame unchanged.")
@click.option("--no-display", is_flag=True, help="No window (the default where there is no display).")
@click.option("--max-frames", type=click.IntRange(min=1), metavar="N", help="Stop after N frames.")
@click.option("--stats", is_flag=True, help="Print the per-stage timing table and memory at the end (the reading "
              "thread's work, beside the model, on its own line).")
@click.option("--threads", type=click.IntRange(min=1), metavar="N", help="ONNX Runtime threads [default: all cores].")
@click.option("-v", "--verbose", count=True, help="Log faces found and lost; show tracebacks.")
@click.version_option(package_name="fkp-live", prog_name="fkp-live")
def run(**options):
    """Track facial keypoints live, or in a video or image folder, and save or show them.

    Give one source (--camera, --video, --images, --demo, or --videos for many files) and any
    outputs (--output, --csv, --jsonl, --crops). A window shows the result unless --no-display is
    given or there is no display. --analysis adds head pose, eye and mouth measures per face.
    """
    verbose = options["verbose"]
    setup_logging(verbose)
    with contextlib.ExitStack() as guard:
        # the executable's StopFlag (installed at start-up), or one for this call (tests, the API)
        stop = process_flag() or guard.enter_context(StopFlag())
        rv = _guarded(options, stop, verbose)
        if stop.stop and rv not in (130, 1):
            # a signal during start-up or while closing: the outputs are finalised, say so
            click.echo("fkp-live: interrupted", err=True)
            return 130
        return rv


def _as_click(e) -> click.ClickException:
    """A SettingsError as the command line shows it: a bad value of one option, or a usage error."""
    if e.option:
        return click.BadParameter(str(e), param_hint=e.option)
    return click.UsageError(str(e))


def _guarded(options: dict, stop, verbose: int) -> int:
    from ..settings import SettingsError

    try:
        return _run(options, stop)
    except KeyboardInterrupt:
        click.echo("fkp-live: interrupted", err=True)
        return 130
    except click.ClickException:
        raise
    except SettingsError as e:
        raise _as_click(e) from None
    except Exception as e:  # anything else: one line, the traceback only with -v
        return _failed(e, stop, verbose)


def _failed(e: Exception, stop, verbose: int) -> int:
    """An error while running: its one line (with the option a source error concerns) and the
    exit status: 2 for bad input, the sinks' own code, 1 for anything unforeseen."""
    from ..batch import BatchError
    from ..card import ModelError
    from ..io.sinks import SinkError
    from ..io.sources import SourceError
    from ..render.morph.points import MorphError
    from ..track.detect import DetectorError
    from ..track.landmarker import DeviceError

    if verbose:
        log.exception("details")
    if stop.stop and not isinstance(e, (SourceError, SinkError)):
        # a second signal broke an import or a model load (e.g. ImportError: initialization
        # failed): that is an interruption, not a failure
        click.echo("fkp-live: interrupted", err=True)
        return 130
    if isinstance(e, SourceError):
        _fail(str(e) + _SOURCE_HINTS.get(e.hint, ""))
        return e.exit_code
    if isinstance(e, SinkError):
        _fail(str(e))
        return e.exit_code
    if isinstance(e, (ModelError, DeviceError, DetectorError, BatchError, MorphError)):
        _fail(str(e))
        return 2
    _fail(f"{type(e).__name__}: {e}" + ("" if verbose else " (run with -v for details)"))
    return 1


# what the sources' hint keys mean on this command line (the sources name no option)
_SOURCE_HINTS = {
    "images": " (--images DIR)",
    "video": " (--video PATH)",
    "camera": " (--camera N, --demo, --video PATH)",
    "camera_other": " (--camera N)",
    "one_source": " (--camera N, --video PATH, --images DIR or --demo)",
}


def _run(options: dict, stop) -> int:
    from ..engine import one_opencv_thread
    from ..single import run_single

    one_opencv_thread()
    settings = settings_from(options)
    settings.check()  # before anything slow, so a typo costs nothing
    if settings.videos:
        return _run_batch(settings, stop)
    console = _Console(settings)
    done = run_single(settings, stop=stop, on_tracker=console.on_tracker, on_start=console.on_start,
                      on_events=console.on_events)
    _summary(done.source, done.tracker, done.result, settings, options["stats"], done.sinks)
    if done.result.interrupted:
        click.echo("fkp-live: interrupted; outputs hold every frame done", err=True)
        return 130
    return 0


class _Console:
    """What a single run shows while it runs: the model line, a progress bar where someone watches,
    faces found and lost (-v), and one warning for a crowd larger than --max-faces."""

    def __init__(self, settings):
        self.settings = settings
        self.tracker = None
        self.warned_crowd = False

    def on_tracker(self, tracker) -> None:
        self.tracker = tracker
        log.info(_device_line(tracker))

    def on_start(self, source, stack):
        # a bar only where someone watches: tqdm costs 40 ms of start-up to import
        if source.live or not sys.stderr.isatty():
            return None
        from tqdm import tqdm

        total, most = source.length, self.settings.max_frames
        if most:
            total = min(total, most) if total else most
        bar = stack.enter_context(tqdm(total=total, unit="frame", dynamic_ncols=True, disable=None,
                                       desc=Path(source.name).name, leave=False))
        t_last = [None, None]  # time of the last frame, frame-rate estimate

        def progress(res, n_faces):
            now = time.perf_counter()
            if t_last[0] is not None:
                dt = max(now - t_last[0], 1e-6)
                t_last[1] = 1 / dt if t_last[1] is None else 0.9 * t_last[1] + 0.1 / dt
            t_last[0] = now
            bar.update(1)
            if res.frames % 10 == 0:
                bar.set_postfix_str(f"{t_last[1] or 0:.0f} fps, {n_faces} face{'s' * (n_faces != 1)}",
                                    refresh=False)

        return progress

    def on_events(self, frame, events) -> None:
        tracker = self.tracker
        for kind, fid, detail in events:
            where = frame.source or f"frame {frame.index}"
            if kind == "crowd" and not self.warned_crowd:
                self.warned_crowd = True
                small = ("" if tracker.detector_name == "haar" else
                         "; in crowds of small faces BlazeFace misses some: --detector haar finds more "
                         "(all 20 of the 20-face test, where BlazeFace finds 8)")
                log.warning("%d faces found in %s; tracking %d (--max-faces %d): raise --max-faces to "
                            "track more%s", detail, where, tracker.max_faces, tracker.max_faces, small)
            elif kind == "new":
                log.debug("face %d found in %s", fid, where)
            elif kind == "lost":
                log.debug("face %d lost in %s: %s", fid, where, detail)


def _run_batch(settings, stop) -> int:
    from ..batch import find_videos, make_tracker, run_batch

    shard_kn = settings.shard_kn
    files = find_videos(settings.videos)  # a bad spec fails before any model is loaded
    tracker = None
    if stop.stop:
        raise KeyboardInterrupt
    if settings.jobs == 1:  # in this process: load (and check) the model once, here
        tracker = make_tracker(settings)
        log.info(_device_line(tracker))
    else:  # the workers load it; its card is checked here, before any worker starts
        from ..card import ModelCard, resolve

        settings.check_model(ModelCard.load(resolve(settings.model)[1]).keypoints)
    jobs = settings.jobs
    shard_note = f" (shard {shard_kn[0]}/{shard_kn[1]})" if shard_kn else ""
    log.info("%d video%s%s into %s, %d job%s", len(files), "s" * (len(files) != 1), shard_note, settings.out_dir,
             jobs, "s" * (jobs != 1))
    try:
        res = run_batch(files, settings.out_dir, settings, jobs=jobs, shard_kn=shard_kn,
                        echo=lambda s: click.echo(f"fkp-live: {s}", err=True), tracker=tracker)
    finally:
        if tracker is not None:
            tracker.close()
    click.echo(f"fkp-live: {res.total} video{'s' * (res.total != 1)}{shard_note}: {res.done} done now, "
               f"{res.skipped} already done, {res.failed} failed; manifest {res.manifest}", err=True)
    for f, err in res.failures:
        click.echo(f"fkp-live: failed: {err if f in err else f + ': ' + err}", err=True)
    if res.interrupted:
        click.echo("fkp-live: interrupted; run the same command again to resume", err=True)
        return 130
    return 1 if res.failed else 0


def _summary(source, tracker, res, settings, stats: bool, sinks=()) -> None:
    ms = res.ms_per_frame()
    stages = " ".join(f"{k} {v:.2f}" + (" (reading thread)" if k in res.beside else "") for k, v in ms.items())
    click.echo(f"fkp-live: {res.frames} frames, {len(res.ids)} face id{'s' * (len(res.ids) != 1)} "
               f"({res.frames_with_face} frames with a face), {res.fps:.1f} fps; ms per frame: {stages}", err=True)
    skipped = getattr(source, "skipped", None)
    if skipped:
        click.echo(f"fkp-live: skipped {len(skipped)} unreadable image{'s' * (len(skipped) != 1)}: "
                   + ", ".join(n for n, _ in skipped), err=True)
    if res.frames and not res.frames_with_face:
        click.echo(f"fkp-live: warning: no face found in any of the {res.frames} frames of {source.name}; "
                   "check the input, or try --detector blazeface-full for small faces", err=True)
    for p in (settings.output, settings.csv, settings.jsonl, settings.crops):
        if p and res.frames:
            click.echo(f"fkp-live: wrote {p}", err=True)
    senders = [s for s in sinks if hasattr(s, "counts")]  # the live outputs (fkp_live.io.send)
    for s in senders:
        click.echo(f"fkp-live: {s.summary()}", err=True)
    if stats:
        _stats_table(res, tracker, senders)


def _stats_table(res, tracker, senders=()) -> None:
    """--stats: ms per frame and share of each stage of the loop; the reading thread's stages
    overlap the loop, so they stand on a line of their own, not in its total."""
    import resource

    ms = res.ms_per_frame()
    loop = {k: v for k, v in ms.items() if k not in res.beside}
    aside = {k: v for k, v in ms.items() if k in res.beside}
    total = sum(loop.values())
    click.echo("stage      ms/frame   share", err=True)
    for k, v in loop.items():
        click.echo(f"{k:<10} {v:8.2f}  {100 * v / total if total else 0:5.1f}%", err=True)
    click.echo(f"{'total':<10} {total:8.2f}", err=True)
    if aside:
        click.echo("in the reading thread, beside the model: "
                   + ", ".join(f"{k} {v:.2f}" for k, v in aside.items()) + " ms per frame", err=True)
    for s in senders:  # each message's latency, from capture and from the frame's tracking start
        for what, lat in (("capture", s.counts.latency_ms()), ("tracking start", s.counts.latency_ms(True))):
            if lat:
                click.echo(f"{s.url}: from {what} to sent {lat['median']:.2f} ms median, {lat['p95']:.2f} "
                           f"ms 95th percentile, {lat['max']:.2f} ms largest ({s.counts.sent} messages)", err=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    click.echo(f"peak RSS {rss:.0f} MiB; device {tracker.device}", err=True)
