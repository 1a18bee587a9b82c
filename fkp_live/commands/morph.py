"""`fkp-live morph` and `fkp-live average`: face morphs, caricatures and mean faces from pictures.

The commands are click commands (`morph`, `average`); `main(argv)` dispatches between them, so
`python -m fkp_live.commands.morph morph A.jpg B.jpg -o ab.mp4` works on its own. Exit status: 0 done,
1 failed while running, 2 bad usage or input (the message names the file or option).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .common import FkpCommand, setup_logging
from .common import fail as _fail

log = logging.getLogger("fkp_live")

VIDEO_SUFFIXES = (".mp4",)
GIF_SUFFIXES = (".gif",)

MORPH_EXAMPLES = """\b
Examples:
  fkp-live morph a.jpg b.jpg -o ab.mp4                 2 s from a to b (60 frames at 30 fps)
  fkp-live morph a.jpg b.jpg c.jpg -o abc.mp4 --gif abc.gif --hold 0.5
                                                       one sequence through three faces
  fkp-live morph a.jpg b.jpg --midway mid.png          the halfway face only
  fkp-live morph a.jpg b.jpg --warp-frac 0.2 --dissolve-frac 0.8 -o x.png
                                                       a's shape, mostly b's colours
  fkp-live morph a.jpg --mean mean.json --warp-frac 1.8 -o caricature.png
                                                       a's differences from the mean, x1.8
  fkp-live morph a.jpg b.jpg --points a.pts --points auto -o ab.mp4
                                                       a's points from a file, b's found

\b
Faces are found with the tracker's model (the largest face of each picture; --face N picks face N,
counted from 0 left to right). --points takes a 300-W .pts file or a CSV written by fkp-live --csv
(the row whose `source` is the image, else the first face), in the order of the images; `auto`
finds that image's face. The morph has the first image's size; later faces are moved onto the
first face's eyes (--no-align: each picture is scaled to cover the first's size instead).
"""

AVERAGE_EXAMPLES = """\b
Examples:
  fkp-live average faces/ -o mean.png                  the mean face (and its shape in mean.json)
  fkp-live average faces/ -o mean.png --limit 50 --use-pts --size 300

\b
Each face is moved so its outer eye corners land on fixed places, the shapes are averaged, every
face is warped to the mean shape and the pixels are averaged. Use the shape for caricatures:
  fkp-live morph a.jpg --mean mean.json --warp-frac 1.8 -o caricature.png
"""


class MorphInputError(click.ClickException):
    """Bad input found while working (a file, a face, an output): exit status 2, no --help hint."""

    exit_code = 2


class MorphCommand(FkpCommand):
    """fkp-live's conventions (fkp_live.commands.common); bad input found while working stands alone."""

    plain_errors = (MorphInputError,)


def _guard(body, verbose: int):
    """Run a command body: our errors -> one line and exit status 2, anything else -> 1."""
    from ..card import ModelError
    from ..io.sinks import SinkError
    from ..io.sources import SourceError
    from ..render.morph import MorphError
    from ..track.detect import DetectorError
    from ..track.landmarker import DeviceError

    try:
        return body()
    except KeyboardInterrupt:
        click.echo("fkp-live: interrupted", err=True)
        return 130
    except click.ClickException:
        raise
    except (MorphError, SinkError, SourceError, ModelError, DeviceError, DetectorError) as e:
        if verbose:
            log.exception("details")
        raise MorphInputError(str(e)) from None
    except Exception as e:
        if verbose:
            log.exception("details")
        _fail(f"{type(e).__name__}: {e}" + ("" if verbose else " (run with -v for details)"))
        return 1


def _model_options(f):
    f = click.option("-v", "--verbose", count=True, help="Show tracebacks on failure.")(f)
    f = click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="cpu",
                     show_default=True, help="Where the model runs (a few pictures need no GPU).")(f)
    f = click.option("--model", metavar="NAME|PATH", default=None,
                     help="The keypoint model (a 68-point iBUG one) [default: fast].")(f)
    return f


def _tracker(model, device, verbose):
    """A tracker for still pictures: up to 16 faces, no smoothing."""
    from ..settings import RunSettings

    return RunSettings(model=model, device=device, max_faces=16, smooth=0.0, quiet=not verbose).build_tracker()


def _check_output(path: str, what: str, kinds: tuple[str, ...]) -> Path:
    """An output path: writable folder, a suffix of one of `kinds` ('video', 'gif', 'image')."""
    import cv2

    from ..io.outputs import check_output_path

    p = check_output_path(path, what)
    suf = p.suffix.lower()
    kind = ("video" if suf in VIDEO_SUFFIXES else "gif" if suf in GIF_SUFFIXES
            else "image" if suf and cv2.haveImageWriter(str(p)) else None)
    if kind not in kinds:
        want = {"video": ".mp4", "gif": ".gif", "image": ".png or .jpg"}
        raise click.BadParameter(f"{p}: give a {' or '.join(want[k] for k in kinds)} file", param_hint=what)
    return p


def _write_image(path: Path, image, what: str) -> None:
    import cv2

    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise MorphInputError(f"cannot encode {what} {path} as {path.suffix}")
    try:
        buf.tofile(str(path))
    except OSError as e:
        raise MorphInputError(f"cannot write {what} {path}: {e.strerror or e}; choose a writable path") from None


def write_gif(path: Path, images, fps: float, width: int | None = 320, what: str = "--gif", colors: int = 255) -> int:
    """BGR pictures -> an animated GIF (looping, one palette for all frames so colours hold still),
    scaled to `width` pixels wide (None: as they are). Returns its size in bytes."""
    import cv2
    import numpy as np
    from PIL import Image

    frames = []
    for img in images:
        h, w = img.shape[:2]
        if width and w > width:
            img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        frames.append(Image.fromarray(np.ascontiguousarray(img[:, :, ::-1])))
    if not frames:
        raise MorphInputError(f"nothing to write to {what} {path}")
    # one palette from a sample of frames
    sample = frames[:: max(1, len(frames) // 8)][:8]
    mosaic = Image.new("RGB", (frames[0].width, frames[0].height * len(sample)))
    for i, f in enumerate(sample):
        mosaic.paste(f, (0, i * frames[0].height))
    pal = mosaic.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    q, durations = [], []
    step = max(20, round(1000 / fps))
    for f in frames:  # a repeated frame (a hold) is one frame shown longer
        p = f.quantize(palette=pal, dither=Image.Dither.NONE)
        if q and p.tobytes() == q[-1].tobytes():
            durations[-1] += step
        else:
            q.append(p)
            durations.append(step)
    try:
        q[0].save(str(path), save_all=True, append_images=q[1:], duration=durations, loop=0, optimize=False)
    except OSError as e:
        raise MorphInputError(f"cannot write {what} {path}: {e.strerror or e}; choose a writable path") from None
    return path.stat().st_size


def _points_for(images, names, points, faces, tracker_factory):
    """The 68 points of each image: from --points (a file, or `auto`) or found by the tracker."""
    from ..render.morph import face_points, read_points

    tracker = None
    out = []
    for k, (img, name) in enumerate(zip(images, names)):
        spec = points[k] if k < len(points) else "auto"
        face = faces[k] if k < len(faces) else None
        if spec.lower() != "auto":
            out.append(read_points(spec, name, face if Path(spec).suffix.lower() == ".csv" else None))
            continue
        if tracker is None:
            tracker = tracker_factory()
        out.append(face_points(img, tracker, name, face))
    if tracker is not None:
        tracker.close()
    return out


def _face_numbers(values) -> list[int | None]:
    out = []
    for v in values:
        if v.strip().lower() == "auto":
            out.append(None)
            continue
        try:
            n = int(v)
        except ValueError:
            raise click.BadParameter(f"{v!r} is not a face number (0, 1, ... from the left) or auto",
                                     param_hint="--face") from None
        if n < 0:
            raise click.BadParameter(f"{n}: face numbers start at 0 (the leftmost face)", param_hint="--face")
        out.append(n)
    return out


# ----------------------------------------------------------------------------------------------
@click.command("morph", cls=MorphCommand, epilog=MORPH_EXAMPLES,
               context_settings=dict(help_option_names=["-h", "--help"], max_content_width=100))
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-o", "--output", metavar="OUT", help="The morph: .mp4 (H.264 video), .gif, or .png/.jpg for one "
              "picture (at --warp-frac/--dissolve-frac; with one image and --mean, a caricature).")
@click.option("--frames", type=click.IntRange(min=1), default=60, show_default=True, metavar="N",
              help="Frames from each face to the next.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True, metavar="FPS",
              help="Frame rate of the video and GIF.")
@click.option("--hold", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Hold each face this long before it starts to change.")
@click.option("--gif", metavar="OUT.gif", help="Also write the sequence as an animated GIF.")
@click.option("--gif-width", type=click.IntRange(min=16), default=320, show_default=True, metavar="PX",
              help="Width of the GIF (made smaller only).")
@click.option("--midway", metavar="OUT.png", help="Also write the halfway picture of the first two faces.")
@click.option("--warp-frac", type=float, metavar="F",
              help="Shape weight for one picture: 0 the first face's shape, 1 the second's (default 0.5); "
                   "outside 0..1 extrapolates. With --mean: 1 is the face, 0 the mean, 1.8 a caricature.")
@click.option("--dissolve-frac", type=float, metavar="F",
              help="Colour weight for one picture: 0 the first face's pixels, 1 the second's [default: --warp-frac].")
@click.option("--mean", "mean_path", metavar="MEAN.json",
              help="A mean shape (from fkp-live average): with one image, move its face away from (or towards) it.")
@click.option("--points", multiple=True, metavar="FILE|auto",
              help="Points for the images, in order: a 300-W .pts file or an fkp-live CSV; auto finds the face "
                   "(repeat once per image; images past the last one are found).")
@click.option("--face", "faces", multiple=True, metavar="N|auto",
              help="Which face of an image, counted from 0 left to right (repeat once per image) "
                   "[default: the largest].")
@click.option("--no-align", is_flag=True, help="Do not move later faces onto the first face's eyes; scale each "
              "picture to cover the first's size.")
@_model_options
def morph(images, output, frames, fps, hold, gif, gif_width, midway, warp_frac, dissolve_frac, mean_path, points,
          faces, no_align, model, device, verbose):
    """Morph between faces in pictures (a video, a GIF or one picture), or exaggerate one face.

    Each face's 68 points are found (or read with --points), forehead and border points added, the
    mesh triangulated once on the mean shape, and every picture warped to each in-between shape and
    cross-dissolved.
    """
    o = dict(locals())
    setup_logging(verbose)
    return _guard(lambda: _morph(o), verbose)


def _morph(o: dict) -> int:
    from ..render.morph import Morph, caricature

    images = list(o["images"])
    n = len(images)
    outs, out_kind, gif, midway = _morph_outputs(o, images)
    if len(o["points"]) > n:
        raise click.BadParameter(f"{len(o['points'])} given for {n} image(s)", param_hint="--points")
    face_nos = _face_numbers(o["faces"])
    if len(face_nos) > n:
        raise click.BadParameter(f"{len(face_nos)} given for {n} image(s)", param_hint="--face")
    still = out_kind == "image"
    mean = _mean_for(o, n, still)
    subjects = _subjects(o, images, face_nos)

    if mean is not None:
        wf = 1.5 if o["warp_frac"] is None else o["warp_frac"]
        img, folded = caricature(subjects[0], mean, wf)
        if folded:
            log.warning("--warp-frac %g folds %d triangle(s) of the mesh: the picture overlaps itself there", wf,
                        folded)
        _write_image(outs[0], img, "--output")
        click.echo(f"fkp-live: wrote {outs[0]} (warp-frac {wf:g} from the mean shape)", err=True)
        return 0

    m = Morph(subjects, align=not o["no_align"])
    if still:
        wf = 0.5 if o["warp_frac"] is None else o["warp_frac"]
        df = wf if o["dissolve_frac"] is None else o["dissolve_frac"]
        shape = m.shape(0, wf)
        if m.folded(shape):
            log.warning("--warp-frac %g folds %d triangle(s) of the mesh: the picture overlaps itself there", wf,
                        m.folded(shape))
        _write_image(outs[0], m.image(0, wf, df), "--output")
        click.echo(f"fkp-live: wrote {outs[0]} (warp-frac {wf:g}, dissolve-frac {df:g})", err=True)
    if midway is not None:
        _write_image(midway, m.image(0, 0.5, 0.5), "--midway")
        click.echo(f"fkp-live: wrote {midway}", err=True)
    if out_kind in ("video", "gif") or gif is not None:
        _write_sequence(o, m, n, outs[0] if out_kind in ("video", "gif") else None, out_kind, gif)
    return 0


def _morph_outputs(o: dict, images: list):
    """-o, --gif and --midway checked (writable, the right kind, different files, no input
    overwritten) -> (the outputs, the kind of -o, the GIF, the midway picture)."""
    n = len(images)
    out_kind = None
    outs = []
    if o["output"]:
        kinds = ("image",) if n == 1 else ("video", "gif", "image")
        out = _check_output(o["output"], "--output", kinds)
        out_kind = {".mp4": "video", ".gif": "gif"}.get(out.suffix.lower(), "image")
        outs.append(out)
    gif = _check_output(o["gif"], "--gif", ("gif",)) if o["gif"] else None
    midway = _check_output(o["midway"], "--midway", ("image",)) if o["midway"] else None
    outs += [p for p in (gif, midway) if p]
    if not outs:
        raise click.UsageError("give an output: -o OUT.mp4|OUT.gif|OUT.png, --gif OUT.gif or --midway OUT.png")
    resolved = [p.resolve() for p in outs]
    if len(set(resolved)) < len(resolved):
        raise click.UsageError("-o, --gif and --midway must be different files")
    for img in images:
        if Path(img).exists() and Path(img).resolve() in resolved:
            raise click.UsageError(f"an output would overwrite the input {img}; choose another name")
    return outs, out_kind, gif, midway


def _mean_for(o: dict, n: int, still: bool):
    """The mean shape of a caricature (one image), or None for a morph; the options that go with
    each checked."""
    from ..render.morph import load_mean

    fracs = o["warp_frac"] is not None or o["dissolve_frac"] is not None
    if n == 1:
        if not o["mean_path"]:
            raise click.UsageError("one image needs --mean MEAN.json (a caricature); give two or more images to morph")
        if o["gif"] or o["midway"] or not o["output"]:
            raise click.UsageError("one image with --mean makes one picture: give -o OUT.png (no --gif, --midway)")
        if o["dissolve_frac"] is not None:
            raise click.BadParameter("there is only one image's colour; use --warp-frac", param_hint="--dissolve-frac")
        return load_mean(o["mean_path"])
    if o["mean_path"]:
        raise click.BadParameter("a mean shape goes with one image (a caricature), not a morph",
                                 param_hint="--mean")
    if fracs and not still:
        raise click.UsageError("--warp-frac and --dissolve-frac make one picture: give -o OUT.png")
    if still and n != 2:
        raise click.UsageError(f"one picture morphs two images, not {n}; give -o OUT.mp4 for a sequence")
    return None


def _subjects(o: dict, images: list, face_nos: list) -> list:
    """Each picture with its 68 points (from --points or found), the points checked to lie on it."""
    from ..render.morph import Subject, load_image

    pics = [load_image(p) for p in images]
    tracker_factory = lambda: _tracker(o["model"], o["device"], o["verbose"])  # noqa: E731
    pts = _points_for(pics, images, list(o["points"]), face_nos, tracker_factory)
    for k, (p, img, name) in enumerate(zip(pts, pics, images)):
        h, w = img.shape[:2]
        if (p[:, 0] < -0.5 * w).any() or (p[:, 0] > 1.5 * w).any() or (p[:, 1] < -0.5 * h).any() \
                or (p[:, 1] > 1.5 * h).any():
            raise click.BadParameter(f"the points for {name} lie far outside its {w}x{h} pixels; "
                                     "are they for another picture?", param_hint="--points")
        if k and (w, h) != (pics[0].shape[1], pics[0].shape[0]):
            log.info("%s is %dx%d; the morph is %dx%d (the first image's size)", name, w, h,
                     pics[0].shape[1], pics[0].shape[0])
    return [Subject(img, p, name) for img, p, name in zip(pics, pts, images)]


def _write_sequence(o: dict, m, n: int, out, out_kind, gif) -> None:
    """The morph's frames into -o (an MP4 or a GIF) and --gif, holding each face --hold seconds."""
    fps = o["fps"]
    hold = int(round(o["hold"] * fps))
    total = (n - 1) * o["frames"] + 1 + n * hold
    seq = m.frames(o["frames"], hold)
    keep_for_gif = []
    gif_paths = [(p, w) for p, w in ((out if out_kind == "gif" else None, "--output"), (gif, "--gif"))
                 if p is not None]
    if out_kind == "video":
        from tqdm import tqdm

        from ..io.mp4 import Mp4Sink

        with Mp4Sink(out, fps=fps, what="--output") as sink, \
                tqdm(total=total, unit="frame", disable=None, leave=False, desc="morph") as bar:
            for i, img in enumerate(seq):
                sink.write_image(img, i / fps)
                if gif_paths:
                    keep_for_gif.append(_small(img, o["gif_width"]))
                bar.update(1)
            written = sink.frames
        click.echo(f"fkp-live: wrote {out} ({written} frames, {written / fps:.1f} s at {fps:g} fps)", err=True)
    else:
        keep_for_gif = [_small(img, o["gif_width"]) for img in seq]
    for gif_path, what in gif_paths:
        size = write_gif(gif_path, keep_for_gif, fps, o["gif_width"], what)
        click.echo(f"fkp-live: wrote {gif_path} ({len(keep_for_gif)} frames, {size / 1024:.0f} KiB)", err=True)


def _small(img, width):
    import cv2

    h, w = img.shape[:2]
    if width and w > width:
        return cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return img


# ----------------------------------------------------------------------------------------------
def _size(text: str) -> tuple[int, int]:
    t = text.lower().strip()
    try:
        if "x" in t:
            w, h = (int(v) for v in t.split("x", 1))
        else:
            w = h = int(t)
    except ValueError:
        raise click.BadParameter(f"{text!r}: give N or WxH, e.g. 400 or 400x480", param_hint="--size") from None
    if min(w, h) < 32 or max(w, h) > 8192:
        raise click.BadParameter(f"{text!r}: each side must be 32 to 8192 pixels", param_hint="--size")
    return w, h


@click.command("average", cls=MorphCommand, epilog=AVERAGE_EXAMPLES,
               context_settings=dict(help_option_names=["-h", "--help"], max_content_width=100))
@click.argument("folder", metavar="DIR")
@click.option("-o", "--output", required=True, metavar="OUT.png", help="The mean face picture.")
@click.option("--save-mean", metavar="MEAN.json", help="Where the mean shape goes [default: beside -o, as .json].")
@click.option("--size", "size_text", default="400", show_default=True, metavar="N|WxH", help="Size of the mean face.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Use the first N images (sorted by name).")
@click.option("--use-pts", is_flag=True,
              help="Read NAME.pts beside an image (300-W format) instead of finding its face.")
@_model_options
def average(folder, output, save_mean, size_text, limit, use_pts, model, device, verbose):
    """The mean face of the pictures in a folder (and its mean shape, for caricatures)."""
    o = dict(locals())
    setup_logging(verbose)
    return _guard(lambda: _average(o), verbose)


def _average(o: dict) -> int:
    from ..render.morph import IMAGE_SUFFIXES, MorphError, Subject, average, face_points, load_image, read_pts, save_mean

    size = _size(o["size_text"])
    out = _check_output(o["output"], "--output", ("image",))
    mean_path = Path(o["save_mean"]) if o["save_mean"] else out.with_suffix(".json")
    if o["save_mean"]:
        from ..io.outputs import check_output_path

        check_output_path(mean_path, "--save-mean")
    if mean_path.resolve() == out.resolve():
        raise click.UsageError("--save-mean and -o must be different files")
    d = Path(o["folder"])
    if not d.exists():
        raise MorphInputError(f"folder {d} does not exist")
    if not d.is_dir():
        raise MorphInputError(f"{d} is not a folder; give a folder of face pictures")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise MorphInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {d}")
    if o["limit"]:
        files = files[:o["limit"]]
    subjects, skipped = [], []
    tracker = None
    try:
        for f in files:
            try:
                img = load_image(f)
                pts_file = f.with_suffix(".pts")
                if o["use_pts"] and pts_file.exists():
                    from ..render.morph import check_points

                    pts = check_points(read_pts(pts_file), str(pts_file))
                else:
                    if tracker is None:
                        tracker = _tracker(o["model"], o["device"], o["verbose"])
                    pts = face_points(img, tracker, f.name)
            except MorphError as e:
                why = str(e)
                if why.startswith("no face found"):
                    why = "no face found"
                skipped.append((f.name, why))
                log.debug("skipped %s: %s", f.name, why)
                continue
            subjects.append(Subject(img, pts, f.name))
    finally:
        if tracker is not None:
            tracker.close()
    if not subjects:
        raise MorphInputError(f"no face found in any of the {len(files)} images of {d}"
                              + (f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""))
    res = average(subjects, size)
    _write_image(out, res.image, "--output")
    save_mean(mean_path, res.points, size, res.used)
    click.echo(f"fkp-live: averaged {len(subjects)} of {len(files)} faces into {out} "
               f"(mean shape in {mean_path})", err=True)
    if skipped:
        click.echo(f"fkp-live: skipped {len(skipped)}: " + "; ".join(f"{n} ({w})" for n, w in skipped), err=True)
    return 0


COMMANDS = {"morph": morph, "average": average}


def main(argv=None):
    """`python -m fkp_live.commands.morph morph|average ...`"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        click.echo("usage: python -m fkp_live.commands.morph morph|average ... (see morph --help)", err=True)
        return 2
    return COMMANDS[argv[0]].main(args=argv[1:], prog_name=f"fkp-live {argv[0]}")


if __name__ == "__main__":
    main()
