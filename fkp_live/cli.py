"""`fkp-live`: track facial keypoints in a camera, video file, image folder or the demo."""
from __future__ import annotations

import os
import sys

from .stopflag import StopFlag

# Stop handling from the very start: a Ctrl-C or SIGTERM while Python, click or ONNX Runtime is
# still importing is noted (not raised inside an import) and ends the run with exit 130. Only when
# this module is the command itself, never when a program or test imports it.
_STOP: StopFlag | None = None
if __name__ == "__main__" or sys.argv[0].endswith(("/fkp-live", "fkp-live")):
    _STOP = StopFlag().__enter__()

import contextlib  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402

from .command import FkpCommand  # noqa: E402
from .command import fail as _fail  # noqa: E402

from .io import DEFAULT_PRESET, PRESETS  # noqa: E402
from .track.smooth import DEFAULT_STRENGTH as DEFAULT_SMOOTH

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
x_0..x_{N-1},y_0..y_{N-1}, then with --analysis: pose_Tx,pose_Ty,pose_Tz (mm),
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


# ----------------------------------------------------------------------------------------------
class _TqdmHandler(logging.Handler):
    """Log lines on stderr, printed above the progress bar when there is one. tqdm is not
    imported here: it costs 80 ms of start-up, and it is loaded only where a bar is shown."""

    def emit(self, record):
        try:
            bar = sys.modules.get("tqdm")
            if bar is not None:
                bar.tqdm.write(self.format(record), file=sys.stderr)
            else:
                sys.stderr.write(self.format(record) + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _setup_logging(verbose: int) -> None:
    log.handlers.clear()
    h = _TqdmHandler()
    h.setFormatter(logging.Formatter("fkp-live: %(message)s"))
    log.addHandler(h)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


class FiniteFloat(click.FloatRange):
    """A float option that must be a finite number (not nan or inf), optionally within a range."""

    name = "finite float"

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            return super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(v, param, ctx)


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
                   "address); udp://HOST:PORT, a JSON datagram per frame. Needs pip install 'fkp-live[live]'.")
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
def run(camera, video, images, demo, videos, demo_frames, model, device, detector, redetect_every, max_faces,
        smooth, no_smooth, min_confidence, refine_shift, output, mp4_preset, mp4_crf, draw_layers, csv, jsonl,
        send, send_normalised, point_confidence, analysis, focal, blink_threshold, crops,
        crop_size, crops_every, out_dir, jobs, shard, mp4, morph_to, morph_alpha, no_display, max_frames, stats,
        threads, verbose):
    """Track facial keypoints live, or in a video or image folder, and save or show them.

    Give one source (--camera, --video, --images, --demo, or --videos for many files) and any
    outputs (--output, --csv, --jsonl, --crops). A window shows the result unless --no-display is
    given or there is no display. --analysis adds head pose, eye and mouth measures per face.
    """
    _setup_logging(verbose)
    o = locals()
    with contextlib.ExitStack() as guard:
        # the command's StopFlag (installed at start-up), or one for this call (tests, the API)
        stop = _STOP if _STOP is not None else guard.enter_context(StopFlag())
        o["stop"] = stop
        rv = _guarded(o, verbose)
        if stop.stop and rv not in (130, 1):
            # a signal during start-up or while closing: the outputs are finalised, say so
            click.echo("fkp-live: interrupted", err=True)
            return 130
        return rv


def _guarded(o: dict, verbose: int) -> int:
    stop = o["stop"]
    try:
        return _run(o)
    except KeyboardInterrupt:
        click.echo("fkp-live: interrupted", err=True)
        return 130
    except click.ClickException:
        raise
    except Exception as e:  # anything else: one line, the traceback only with -v
        from .card import ModelError
        from .track.detect import DetectorError
        from .track.landmarker import DeviceError
        from .batch import BatchError
        from .render.morph import MorphError
        from .io.sinks import SinkError
        from .io.sources import SourceError

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


def _check_common(o: dict):
    """Options shared by single runs and --videos: overlay layers, analysis kinds, crops."""
    from .analysis.analyser import parse_kinds
    from .render.draw import parse_layers

    try:
        layers = parse_layers(o["draw_layers"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--draw") from None
    try:
        kinds = parse_kinds(o["analysis"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--analysis") from None
    if not o["crops"]:
        for name in ("crop_size", "crops_every"):
            if o[name] is not None:
                raise click.UsageError(f"--{name.replace('_', '-')} goes with --crops DIR")
    return layers, kinds


def _tracker_options(o: dict, threads: int | None) -> dict:
    """The options' keyword arguments for `Tracker`."""
    return dict(model=o["model"], device=o["device"], threads=threads, detector=o["detector"],
                redetect_every=o["redetect_every"], max_faces=o["max_faces"],
                smooth=0.0 if o["no_smooth"] else o["smooth"], min_confidence=o["min_confidence"],
                refine_shift=o["refine_shift"], quiet=not o["verbose"],
                point_confidence=o.get("point_confidence", False))


def _analysing(tracker, kinds, layers, o: dict, shown: bool = True):
    """Wrap the tracker so faces carry their analysis, when any is asked for, or when a picture
    (window, MP4) shows the pose layer."""
    named_pose = "pose" in {t.strip().lower() for t in (o["draw_layers"] or "").split(",")}
    if tracker.schema.n != 68 and (kinds or named_pose):
        why = "--analysis" if kinds else "--draw pose"
        raise click.UsageError(f"{why} needs a 68-point iBUG model; {tracker.schema.name} has "
                               f"{tracker.schema.n} points")
    wanted = set(kinds)
    if shown and "pose" in layers and tracker.schema.n == 68:  # 'all' draws pose only where it can
        wanted.add("pose")
    if not wanted:
        return tracker
    from .analysis import Analyser, AnalysingTracker

    return AnalysingTracker(tracker, Analyser(wanted, focal=o["focal"], blink_threshold=o["blink_threshold"]))


def _run(o: dict) -> int:
    from .engine import one_opencv_thread, reads_pixels, run as run_frames

    one_opencv_thread()
    from .io.sinks import CropSink, CsvSink, JsonlSink, Mp4Sink, WindowSink, check_output_path, is_special
    from .io.sources import open_source
    from .render.draw import Overlay
    from .track.tracker import Tracker

    n_src = sum(x is not None and x is not False
                for x in (o["camera"], o["video"], o["images"], o["demo"] or None, o["videos"]))
    if n_src != 1:
        raise click.UsageError("give exactly one source: --camera N, --video PATH, --images DIR, --demo "
                               "or --videos DIR|GLOB")
    layers, kinds = _check_common(o)
    if o["videos"]:
        return _run_batch(o, layers, kinds)
    for name in ("out_dir", "shard", "mp4"):
        if o[name]:
            raise click.UsageError(f"--{name.replace('_', '-')} goes with --videos")
    if o["jobs"] != 1:
        raise click.UsageError("--jobs goes with --videos")
    if o["send_normalised"] and not o["send"]:
        raise click.UsageError("--send-normalised goes with --send URL")
    outs = [(o["output"], "--output"), (o["csv"], "--csv"), (o["jsonl"], "--jsonl")]
    for path, what in outs:  # before anything slow, so a typo costs nothing
        if path:
            check_output_path(path, what)
    named = [Path(p).resolve() for p, _ in outs if p and not is_special(p)]  # /dev/null twice is fine
    if len(set(named)) < len(named):
        raise click.UsageError("--output, --csv and --jsonl must be different files")
    if o["video"] and any(Path(o["video"]).resolve() == p for p in named):
        raise click.UsageError(f"an output would overwrite the input {o['video']}; choose another name")

    stop = o["stop"]

    def stopped():  # a signal during start-up: end now, before any frame
        if stop.stop:
            raise KeyboardInterrupt

    stopped()
    source = open_source(camera=o["camera"], video=o["video"], images=o["images"], demo=o["demo"],
                         demo_frames=o["demo_frames"])
    with contextlib.ExitStack() as stack:
        stack.enter_context(source)
        stopped()
        tracker = stack.enter_context(Tracker(**_tracker_options(o, o["threads"])))
        stopped()
        log.info(_device_line(tracker))
        sinks = []
        if o["send"]:  # first among the outputs: sent as soon as a frame is tracked
            from .io.send import make_sender

            o["senders"] = [stack.enter_context(make_sender(u, o["send_normalised"])) for u in o["send"]]
            sinks += o["senders"]
        if o["output"]:
            sinks.append(stack.enter_context(Mp4Sink(
                o["output"], fps=source.fps, audio_from=source.path if getattr(source, "has_audio", False) else None,
                crf=o["mp4_crf"], preset=o["mp4_preset"])))
        if o["csv"]:
            sinks.append(stack.enter_context(CsvSink(o["csv"], tracker.schema.n, with_source=source.still,
                                                     analysis=kinds, point_confidence=o["point_confidence"])))
        if o["jsonl"]:
            sinks.append(stack.enter_context(JsonlSink(o["jsonl"])))
        if o["crops"]:
            sinks.append(stack.enter_context(CropSink(o["crops"], tracker.schema, o["crop_size"] or 112,
                                                      o["crops_every"] or 1)))
        if not o["no_display"]:
            window = stack.enter_context(WindowSink(f"fkp-live: {source.name}"))
            if window.enabled:
                sinks.append(window)
        # faces carry their analysis when asked for, or when a picture shows the pose
        shown = any(getattr(s, "picture", False) for s in sinks)
        tracker = _analysing(tracker, kinds, layers, o, shown)

        bar = None
        # a bar only where someone watches: tqdm costs 40 ms of start-up to import
        if not source.live and sys.stderr.isatty():
            from tqdm import tqdm

            total = source.length
            if o["max_frames"]:
                total = min(total, o["max_frames"]) if total else o["max_frames"]
            bar = stack.enter_context(tqdm(total=total, unit="frame", dynamic_ncols=True, disable=None,
                                           desc=Path(source.name).name, leave=False))
        t_last = [None, None]  # time of the last frame, frame-rate estimate

        def progress(res, n_faces):
            if bar is not None:
                now = time.perf_counter()
                if t_last[0] is not None:
                    dt = max(now - t_last[0], 1e-6)
                    t_last[1] = 1 / dt if t_last[1] is None else 0.9 * t_last[1] + 0.1 / dt
                t_last[0] = now
                bar.update(1)
                if res.frames % 10 == 0:
                    bar.set_postfix_str(f"{t_last[1] or 0:.0f} fps, {n_faces} face{'s' * (n_faces != 1)}",
                                        refresh=False)

        warned_crowd = [False]

        def on_events(frame, events):
            for kind, fid, detail in events:
                where = frame.source or f"frame {frame.index}"
                if kind == "crowd" and not warned_crowd[0]:
                    warned_crowd[0] = True
                    small = ("" if tracker.detector_name == "haar" else
                             "; in crowds of small faces BlazeFace misses some: --detector haar finds more "
                             "(all 20 of the 20-face test, where BlazeFace finds 8)")
                    log.warning("%d faces found in %s; tracking %d (--max-faces %d): raise --max-faces to "
                                "track more%s", detail, where, tracker.max_faces, tracker.max_faces, small)
                elif kind == "new":
                    log.debug("face %d found in %s", fid, where)
                elif kind == "lost":
                    log.debug("face %d lost in %s: %s", fid, where, detail)

        # every source here makes a new picture per frame: draw on it unless an output reads it undrawn
        overlay = Overlay(tracker.schema, layers, copy=reads_pixels(sinks))
        if o["morph_to"]:
            overlay = _morph_overlay(o, tracker, overlay if layers else None)
        stopped()
        res = run_frames(source, tracker, sinks, overlay=overlay,
                         max_frames=o["max_frames"], stop=stop, progress=progress, on_events=on_events)
        if bar is not None:
            bar.close()
    # the with-block has closed every output (MP4 finalised) before we report
    _summary(source, tracker, res, o)
    if res.interrupted:
        click.echo("fkp-live: interrupted; outputs hold every frame done", err=True)
        return 130
    return 0


def _run_batch(o: dict, layers, kinds) -> int:
    from .batch import BatchError, Options, parse_shard, run_batch

    for opt, what in ((o["output"], "--output"), (o["csv"], "--csv"), (o["jsonl"], "--jsonl"),
                      (o["send"], "--send"), (o["point_confidence"], "--point-confidence")):
        if opt:
            raise click.UsageError(f"{what} goes with one source; with --videos every video gets OUT/NAME.csv "
                                   "(and OUT/NAME.mp4 with --mp4) in --out-dir")
    if not o["out_dir"]:
        raise click.UsageError("--videos needs --out-dir DIR for the outputs and the manifest")
    try:
        shard_kn = parse_shard(o["shard"])
    except BatchError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1], param_hint="--shard") from None
    tracker_opts = _tracker_options(o, o["threads"] or (1 if o["jobs"] > 1 else None))
    opts = Options(tracker=tracker_opts, analysis=kinds, focal=o["focal"], blink_threshold=o["blink_threshold"],
                   mp4=o["mp4"], mp4_preset=o["mp4_preset"], mp4_crf=o["mp4_crf"],
                   mp4_threads=1 if o["jobs"] > 1 else None, draw=",".join(sorted(layers)) or "none", crops=o["crops"],
                   crop_size=o["crop_size"] or 112, crops_every=o["crops_every"] or 1, max_frames=o["max_frames"])
    from .batch import find_videos

    files = find_videos(o["videos"])  # a bad spec fails before any model is loaded
    tracker = None
    if o["stop"].stop:
        raise KeyboardInterrupt
    if o["jobs"] == 1:  # in this process: load (and check) the model once, here
        from .track.tracker import Tracker

        tracker = _analysing(Tracker(**tracker_opts), kinds, layers, o, shown=o["mp4"])
        log.info(_device_line(tracker))
    else:  # the workers load it; its card is checked here, before any worker starts
        from .card import ModelCard, resolve

        n = ModelCard.load(resolve(o["model"])[1]).keypoints.n
        named_pose = "pose" in {t.strip().lower() for t in (o["draw_layers"] or "").split(",")}
        if n != 68 and (kinds or named_pose):
            raise click.UsageError(f"{'--analysis' if kinds else '--draw pose'} needs a 68-point iBUG model; "
                                   f"this one has {n} points")
        if n != 68:
            opts.draw = ",".join(sorted(layers - {"pose"})) or "none"
    shard_note = f" (shard {shard_kn[0]}/{shard_kn[1]})" if shard_kn else ""
    log.info("%d video%s%s into %s, %d job%s", len(files), "s" * (len(files) != 1), shard_note, o["out_dir"],
             o["jobs"], "s" * (o["jobs"] != 1))
    try:
        res = run_batch(files, o["out_dir"], opts, jobs=o["jobs"], shard_kn=shard_kn,
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


def _morph_overlay(o: dict, tracker, drawn):
    """--morph-to: the target's face warped onto every tracked face (its points found once), with
    the chosen overlay layers drawn on top."""
    from .render.morph import LiveMorph

    base = getattr(tracker, "tracker", tracker)  # the analysing tracker wraps the real one
    live = LiveMorph.from_file(o["morph_to"], base, alpha=o["morph_alpha"])
    if drawn is None:
        return live
    return lambda frame, faces: drawn(live(frame, faces), faces)


def _summary(source, tracker, res, o: dict) -> None:
    fps = res.fps
    ms = res.ms_per_frame()
    stages = " ".join(f"{k} {v:.2f}" + (" (reading thread)" if k in res.beside else "") for k, v in ms.items())
    click.echo(f"fkp-live: {res.frames} frames, {len(res.ids)} face id{'s' * (len(res.ids) != 1)} "
               f"({res.frames_with_face} frames with a face), {fps:.1f} fps; ms per frame: {stages}", err=True)
    skipped = getattr(source, "skipped", None)
    if skipped:
        click.echo(f"fkp-live: skipped {len(skipped)} unreadable image{'s' * (len(skipped) != 1)}: "
                   + ", ".join(n for n, _ in skipped), err=True)
    if res.frames and not res.frames_with_face:
        click.echo(f"fkp-live: warning: no face found in any of the {res.frames} frames of {source.name}; "
                   "check the input, or try --detector blazeface-full for small faces", err=True)
    for p in (o["output"], o["csv"], o["jsonl"], o["crops"]):
        if p and res.frames:
            click.echo(f"fkp-live: wrote {p}", err=True)
    for s in o.get("senders", ()):
        click.echo(f"fkp-live: {s.summary()}", err=True)
    if o["stats"]:
        import resource

        # the reading thread's stages overlap the loop: on a line of their own, not in its total
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
        for s in o.get("senders", ()):
            for what, lat in (("capture", s.counts.latency_ms()), ("tracking start", s.counts.latency_ms(True))):
                if lat:
                    click.echo(f"{s.url}: from {what} to sent {lat['median']:.2f} ms median, {lat['p95']:.2f} "
                               f"ms 95th percentile, {lat['max']:.2f} ms largest ({s.counts.sent} messages)",
                               err=True)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        click.echo(f"peak RSS {rss:.0f} MiB; device {tracker.device}", err=True)


def main(argv=None, from_console: bool = False):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("morph", "average"):
        from .morph_cli import COMMANDS

        return COMMANDS[argv[0]].main(args=argv[1:], prog_name=f"fkp-live {argv[0]}")
    if argv and argv[0] == "bench":
        from .bench import bench

        return bench.main(args=argv[1:], prog_name="fkp-live bench", auto_envvar_prefix="FKP_LIVE_BENCH")
    if not from_console:
        return run.main(args=argv, prog_name="fkp-live")
    try:
        run.main(args=argv, prog_name="fkp-live")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    # Every output is closed and renamed into place by now (the run's with-blocks have ended), so
    # the interpreter's own tear-down (freeing MediaPipe's graph, ONNX Runtime and every module:
    # about 0.1 s) is skipped, as a whole-process benchmark would otherwise pay for it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def console() -> None:
    """The `fkp-live` executable."""
    main(from_console=True)


if __name__ == "__main__":
    console()
