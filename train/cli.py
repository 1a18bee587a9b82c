"""`fkp-train`: train, evaluate, plot and export facial keypoint models."""
from __future__ import annotations

import json
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from .tasks import TASKS

CONTEXT = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "FKP_TRAIN"}


class Fail(click.ClickException):
    """An error a user can act on: printed as one line, exit code 2."""

    exit_code = 2


MAIN_HELP = """Train, evaluate, plot and export facial keypoint models.

\b
A typical run (300-W, the runtime's default model):
  fkp-train fit --task ibug68 --data ../shared/data/300w --out runs/ibug68
  fkp-train eval runs/ibug68/best.pt --data ../shared/data/300w --split test
  fkp-train plot runs/ibug68 --data ../shared/data/300w
  fkp-train export runs/ibug68/best.pt --data ../shared/data/300w --out models/ibug68.onnx
  fkp-train bench

\b
Tasks (presets of data reader, schema, network, input and loss; override any field):
""" + "\n".join(f"  {k:<18} {v.schema}, {v.net} net, {v.size[0]}x{v.size[1]}, {v.reader} data"
                for k, v in TASKS.items()) + """

Run `fkp-train COMMAND --help` for each command's options.
"""


@contextmanager
def _user_errors(skip_bad_option: bool = False):
    """The library's errors about files a user gave (data, checkpoints, calibrations, models, dlib) as one-line
    failures (exit 2); with `skip_bad_option` a bad file or row also suggests --skip-bad."""
    from fkp_live.card import ModelError

    from .calibrate import CalibrationError
    from .checkpoint import CheckpointError
    from .data import DataError, SkippableError
    from .eval_runtime import DlibUnavailable
    from .tasks import TaskError

    try:
        yield
    except SkippableError as e:
        raise Fail(f"{e} (or pass --skip-bad to skip bad {e.unit})" if skip_bad_option else str(e)) from None
    except (DataError, CheckpointError, CalibrationError, TaskError, ModelError, DlibUnavailable) as e:
        raise Fail(str(e)) from None


@click.group(context_settings=CONTEXT, help=MAIN_HELP)
def main():
    pass


def _task_from_options(task, **over):
    from .tasks import get

    t = get(task)
    if over.get("size"):
        w, _, h = over["size"].partition("x")
        over["size"] = (int(w), int(h or w))
    if over.get("augment"):
        over["augment"] = {**t.augment, **json.loads(over["augment"])}
    if over.get("net_args"):
        over["net_args"] = json.loads(over["net_args"])
    return t.with_(**over)


def fit_options(f):
    opts = [
        click.option("--task", type=click.Choice(list(TASKS)), required=True, help="Experiment preset."),
        click.option("--data", required=True, type=click.Path(exists=True),
                     help="Dataset: a folder (300-W, IMM) or a CSV (Kaggle training.csv, generic)."),
        click.option("--out", required=True, type=click.Path(), help="Run folder: checkpoints, log.csv."),
        click.option("--extra", multiple=True, type=click.Path(exists=True),
                     help="More 68-point folders added to training only (repeatable)."),
        click.option("--epochs", type=int), click.option("--batch", type=int), click.option("--lr", type=float),
        click.option("--net", type=click.Choice(["nose", "imm", "kaggle", "resnet18", "mobile"])),
        click.option("--size", help="Input size WxH (or one number for a square)."),
        click.option("--channels", type=click.Choice(["1", "3"]), callback=lambda c, p, v: int(v) if v else None),
        click.option("--loss", type=click.Choice(["mse", "l1", "wing", "wing-axes"]),
                     help="wing-axes: heatmap nets; the error along the direction each predicted "
                          "heatmap is drawn out in (a contour) counts less."),
        click.option("--optimizer", type=click.Choice(["adam", "adamw"])),
        click.option("--schedule", type=click.Choice(["onecycle", "cosine", "step", "plateau", "none"])),
        click.option("--crop-scale", type=float, help="Crop side / keypoint box side (crop mode)."),
        click.option("--heatmap-weight", type=float,
                     help="Weight of the auxiliary Gaussian heatmap loss (heatmap nets; 0 = off)."),
        click.option("--augment", help='JSON overrides of augmentation (train.augment.AugmentConfig), e.g. '
                     '\'{"rotate_deg": 20}\'; "self_crop": P cuts a share P of the crops from the net\'s own '
                     'reading of each image, made afresh before each epoch.'),
        click.option("--net-args", help='JSON keyword arguments for the network, e.g. \'{"width": 0.75}\'.'),
        click.option("--patience", type=int, default=0, show_default=True, help="Early stopping (0 = off)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--resume", is_flag=True, help="Continue from OUT/last.pt."),
        click.option("--stop-after", type=int, help="Run at most N epochs now; continue later with --resume."),
        click.option("--init", type=click.Path(exists=True), help="Start from this checkpoint's weights (fine-tune)."),
        click.option("--skip-bad", is_flag=True, help="Skip bad files (and report them) instead of stopping."),
        click.option("--oversample", type=click.IntRange(1), default=1, show_default=True,
                     help="Show each rare 68-point training face (the tenth with the widest-open mouth or the "
                          "most turned head) N times per epoch."),
        click.option("--limit", type=int, help="Use only the first N training samples."),
        click.option("--threads", type=int, help="Torch CPU threads."),
        click.option("--workers", type=int, default=0, show_default=True, help="DataLoader workers."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@main.command("fit", context_settings=CONTEXT)
@fit_options
def fit_command(task, data, out, extra, epochs, batch, lr, net, size, channels, loss, optimizer,
                schedule, crop_scale, heatmap_weight, augment, net_args, patience, seed, resume, stop_after, init,
                skip_bad, oversample, limit, threads, workers, device):
    """Train a model. Also runs under `torchrun --nproc_per_node=N -m train.ddp ...` (DDP).

    Writes OUT/last.pt every epoch and OUT/best.pt when the validation metric improves (both
    atomically), OUT/log.csv (one row per epoch) and OUT/summary.json.
    """
    from .fit import FitConfig, fit

    t = _task_from_options(task, epochs=epochs, batch=batch, lr=lr, net=net, size=size,
                           channels=channels, loss=loss, optimizer=optimizer, schedule=schedule,
                           crop_scale=crop_scale, heatmap_weight=heatmap_weight, augment=augment,
                           net_args=net_args)
    cfg = FitConfig(task=t, data=data, out=out, extra=list(extra), seed=seed, patience=patience,
                    resume=resume, stop_after=stop_after, init=init, skip_bad=skip_bad, oversample=oversample, limit=limit, threads=threads, workers=workers,
                    device=device)
    with _user_errors(skip_bad_option=True):
        summary = fit(cfg)
    click.echo(json.dumps(summary))


@main.command("eval", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--data", required=True, type=click.Path(exists=True), help="Dataset of the checkpoint's task.")
@click.option("--split", default="val", show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--json-out", type=click.Path(), help="Also write the metrics here.")
@click.option("--skip-bad", is_flag=True)
@click.option("--two-model", type=click.Path(exists=True),
              help="A second checkpoint that predicts the points the first was not trained on "
                   "(the seeds' Kaggle approach: CHECKPOINT from kaggle15-big4, this from kaggle15-complete).")
@click.option("--plots", type=click.Path(), help="Folder for a prediction grid, CED curve and per-point errors.")
def eval_command(checkpoint, data, split, json_out, skip_bad, two_model, plots):
    """Measure a checkpoint: NME (inter-ocular, inter-pupil), RMSE, MAE, AUC@0.08, FR@0.08.

    Metrics are over every labelled point of the split (a task's label subset is not applied).
    """
    from .evaluate import evaluate_checkpoint

    with _user_errors(skip_bad_option=True):
        res = evaluate_checkpoint(checkpoint, data, split, skip_bad, two_model, plots, echo=click.echo)
    click.echo(json.dumps(res, indent=2))
    if json_out:
        Path(json_out).write_text(json.dumps(res, indent=2) + "\n")


@main.command("mirror-offset", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--data", required=True, type=click.Path(exists=True), help="Dataset of the checkpoint's task.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "val", "test", "all"]))
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1), help="Use every Nth face.")
def mirror_offset_command(checkpoint, data, split, every):
    """Split a systematic x offset into the labels' own (b) and the pipeline's (c).

    \b
    Mean signed x error on the split's images and on their mirror images, in % of the
    inter-ocular distance: a flip-trained net reads -b on the images and +b on the mirrors when
    the labels sit b right of the features; a crop or resize error (c) keeps its sign.
    """
    from .evaluate import mirror_offset

    with _user_errors():
        res = mirror_offset(checkpoint, data, split, every)
    click.echo(json.dumps(res, indent=2))


@main.command("export", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(), help="NAME.onnx; the card goes to NAME.json.")
@click.option("--data", type=click.Path(exists=True),
              help="The task's dataset: parity on real crops, metrics for the card, INT8 calibration.")
@click.option("--metrics-split", default="test", show_default=True,
              type=click.Choice(["val", "test"]), help="Split whose metrics go into the card.")
@click.option("--calibration", type=click.Path(exists=True),
              help="Detector box calibration JSON from `fkp-train calibrate`.")
@click.option("--tolerance", default=0.05, show_default=True, help="Parity limit in input pixels.")
@click.option("--int8", is_flag=True, help="Also write NAME.int8.onnx (static quantisation).")
@click.option("--fp16", is_flag=True, help="Also write NAME.fp16.onnx for GPUs.")
@click.option("--tensorrt", is_flag=True, help="Also build NAME.engine with TensorRT (NVIDIA GPU).")
@click.option("--flip-average", is_flag=True,
              help="Average each crop's points with its mirror image's, inside the graph (2x the work).")
@click.option("--ensemble", "ensemble", multiple=True, type=click.Path(exists=True), metavar="CHECKPOINT",
              help="Another checkpoint of the same task, averaged with CHECKPOINT inside the graph "
                   "(repeatable; each adds one net's work).")
@click.option("--shift-average", type=click.IntRange(0, 31), default=0, metavar="PIXELS",
              help="Read each crop moved by +PIXELS and by -PIXELS on the diagonal and average the two "
                   "readings, inside the graph (2x the work; with --flip-average, 4x). 0: off.")
@click.option("--readings", metavar="UNITS", default=None,
              help="What each net reads, one per net in order (the checkpoint, then each --ensemble): P "
                   "plain, F with its mirror image, S shifted by +-PIXELS of --shift-average, FS both, "
                   "X with its mirror image, the crop moved by +PIXELS and the mirror by -PIXELS (F's cost); "
                   "e.g. F,P. The nets are weighted by their readings (scripts/tta_sweep.py's mixes).")
@click.option("--shape-correction", type=click.Path(dir_okay=False), metavar="FILE",
              help="A linear shape correction from `fkp-train shape-fit`, applied to the points inside the "
                   "graph (fit it on this export made without the option).")
@click.option("--point-confidence", is_flag=True,
              help="Also output each point's confidence from its heatmap (point_confidence, [batch, N], "
                   "0..1), which `fkp-live --point-confidence` reads.")
def export_command(checkpoint, out, data, metrics_split, calibration, tolerance, int8, fp16, tensorrt,
                   flip_average, ensemble, shift_average, readings, shape_correction, point_confidence):
    """Export a checkpoint to ONNX with its model card, checked for parity against torch.

    \b
    The same crops go through torch and through the runtime's ONNX Runtime wrapper; the export
    fails (exit 1) when they differ by more than --tolerance pixels at the model's input size.
    """
    from . import export as ex

    if Path(out).suffix != ".onnx":
        raise Fail(f"--out {out}: the file name must end in .onnx")
    if int8 and not data:
        raise Fail("--int8 needs --data: INT8 is calibrated on training crops")
    try:
        with _user_errors():
            ex.export_checkpoint(checkpoint, out, data, metrics_split, calibration, tolerance, int8, fp16,
                                 tensorrt, flip_average, ensemble, shift_average=shift_average,
                                 readings=readings, shape_correction=shape_correction,
                                 point_confidence=point_confidence, echo=click.echo)
    except ex.ParityError as e:
        raise click.ClickException(str(e)) from None
    except ex.TensorRTUnavailable as e:
        click.echo(f"tensorrt: {e}", err=True)
        sys.exit(3)
    except ex.ExportError as e:
        raise Fail(str(e)) from None


@main.command("shape-fit", context_settings=CONTEXT)
@click.argument("model")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False),
              help="The 300-W folder: the training split is fitted, the validation split reported.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The correction (.npz) for "
              "`fkp-train export --shape-correction`.")
@click.option("--ridge", default=1000.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Ridge penalty of the regression (units of a mean shape of norm 100).")
@click.option("--limit", type=click.IntRange(1), help="Use at most N training faces.")
def shape_fit_command(model, data, out, ridge, limit):
    """Fit a linear shape correction to MODEL's own readings of the training split.

    \b
    MODEL (a shipped name or an .onnx file made without --shape-correction) reads every training
    face the way the runtime reads a new face, end to end from the detector. A ridge regression of
    each reading, aligned to the mean shape, predicts its error; the validation split's first-frame
    NME before and after is printed. Put the result into the graph with `fkp-train export
    CHECKPOINT --shape-correction OUT`.
    """
    from . import shape_fit

    if not out.endswith(".npz"):
        raise Fail(f"--out {out}: the file name must end in .npz")
    try:
        with _user_errors():
            r = shape_fit.measure(model, data, ridge, limit, echo=click.echo)
    except shape_fit.ShapeFitError as e:
        raise Fail(str(e)) from None
    rep = r["report"]
    command = shlex.join(["fkp-train", "shape-fit", model, "--data", str(data), "--out", out, "--ridge", f"{ridge:g}"]
                         + (["--limit", str(limit)] if limit else []))
    shape_fit.save(out, r["params"], command=command, **{k: v for k, v in rep.items() if k != "model"})
    click.echo(f"wrote {out}")


@main.command("predict", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", type=click.Path(), required=True, help="Folder for annotated PNGs and points.csv.")
def predict_command(checkpoint, images, out):
    """Predict keypoints on image files with a checkpoint; crops come from the file's .pts
    (if present) or, for whole-image tasks, the whole image. Writes annotated PNGs and a CSV."""
    from .predict import predict_images

    with _user_errors():
        n, csv_path = predict_images(checkpoint, images, out)
    click.echo(f"wrote {n} annotated image(s) and {csv_path}")


@main.command("pseudo-label", context_settings=CONTEXT)
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True,
              help="A 68-point folder (.pts beside each image); its points only place the crops.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for the teacher's .pts (and links to the images): pass it to fit --extra.")
def pseudo_label_command(model, data, out):
    """Label a 68-point folder with a teacher MODEL (an exported .onnx with its card): each face
    is read from the crop its own points give, then again from the teacher's first reading.
    Prints the teacher's agreement with the folder's labels."""
    from .pseudo_label import pseudo_label

    with _user_errors():
        cmd = shlex.join(["fkp-train", "pseudo-label", model, "--data", data, "--out", out])
        r = pseudo_label(model, data, out, command=cmd, echo=lambda m: click.echo(m, err=True))
    click.echo(json.dumps(r))


@main.command("teacher-fit", context_settings=CONTEXT)
@click.option("--data", type=click.Path(exists=True, file_okay=False), required=True,
              help="A 300-W folder: the teacher is fitted on its train split and measured on val.")
@click.option("--model", default="accurate", show_default=True,
              help="The net member and anchor: a shipped model's name or an exported .onnx.")
@click.option("--dlib-model", type=click.Path(exists=True, dir_okay=False),
              help="dlib's shape_predictor_68_face_landmarks.dat (default: face_recognition_models').")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The teacher (.npz); a .json report beside it.")
@click.option("--limit", type=click.IntRange(1), help="Use at most N faces of each split.")
def teacher_fit_command(data, model, dlib_model, out, limit):
    """Fit the teacher: the net, dlib's 68-point predictor and MediaPipe Face Mesh (468 points
    regressed to the 68), combined with per-point weights, all fitted on the train split; each
    member and the ensemble are measured on val, end to end from the detector."""
    from .teacher import fit_teacher

    with _user_errors():
        t, report = fit_teacher(data, model, dlib_model, echo=lambda m: click.echo(m, err=True), limit=limit)
        report["file"] = str(Path(out).resolve())
        report["command"] = shlex.join(["fkp-train", "teacher-fit"] + sys.argv[2:])
        t.info = report
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        t.save(out)
        Path(out).with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    click.echo(json.dumps({"val_nme_io": {m: v["nme_io"] for m, v in report["val"].items()},
                           "mean_weights": report["mean_weights"], "out": str(out)}))


@main.command("teacher-label", context_settings=CONTEXT)
@click.argument("teacher", type=click.Path(exists=True, dir_okay=False))
@click.option("--images", type=click.Path(exists=True, file_okay=False), required=True,
              help="A folder of face images (any .pts beside them only places a face the detector misses).")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for the teacher's .pts and links to the images: pass it to fit --extra.")
@click.option("--model", default="accurate", show_default=True, help="The teacher's net member (as fitted).")
@click.option("--dlib-model", type=click.Path(exists=True, dir_okay=False), help="As for teacher-fit.")
@click.option("--max-disagreement", default=0.15, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Leave out faces where the net and the teacher differ by more (mean, in inter-ocular distances).")
def teacher_label_command(teacher, images, out, model, dlib_model, max_disagreement):
    """Label a folder of faces with a fitted TEACHER (from teacher-fit)."""
    from .teacher import Teacher, label_folder

    with _user_errors():
        t = Teacher.load(teacher)
        cmd = shlex.join(["fkp-train", "teacher-label"] + sys.argv[2:])
        if t.info.get("command"):  # a student's card names the whole chain, the teacher's fit first
            cmd = f"{t.info['command']} && {cmd}"
        r = label_folder(t, model, images, out, dlib_model, echo=lambda m: click.echo(m, err=True),
                         max_disagreement=max_disagreement, command=cmd)
    click.echo(json.dumps(r))


@main.command("import-onnx", context_settings=CONTEXT)
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The checkpoint (.pt).")
@click.option("--data", type=click.Path(exists=True, file_okay=False),
              help="Training faces of the model's task, to set the BatchNorm statistics from (recommended).")
def import_onnx_command(model, out, data):
    """Read an exported model (.onnx with its card) back into a training checkpoint, e.g. to
    fine-tune a shipped model with `fkp-train fit --init OUT`."""
    from .from_onnx import checkpoint_from_onnx

    with _user_errors():
        cmd = shlex.join(["fkp-train", "import-onnx"] + sys.argv[2:])
        r = checkpoint_from_onnx(model, out, data=data, command=cmd)
    click.echo(json.dumps(r))


@main.command("plot", context_settings=CONTEXT)
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--data", type=click.Path(exists=True), help="Also plot predictions, CED and per-point errors.")
@click.option("--split", default="val", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--out", type=click.Path(), help="Folder for the PNGs (default: RUN/plots).")
def plot_command(run, data, split, out):
    """Plots of a run: loss curves, first-layer kernels, and with --data the best and worst
    predictions (truth green, prediction red), the CED curve and per-point errors."""
    from .plots import plot_run

    with _user_errors():
        made = plot_run(run, data, split, out)
    for m in made:
        click.echo(str(m))


@main.command("eval-runtime", context_settings=CONTEXT)
@click.argument("models", nargs=-1, required=True)
@click.option("--data", required=True, type=click.Path(exists=True), help="A 300-W folder (68 points).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test", "all"]))
@click.option("--detector", default="blazeface", show_default=True,
              type=click.Choice(["blazeface", "blazeface-full", "haar"]))
@click.option("--ced", "ced_png", type=click.Path(dir_okay=False),
              help="Also draw the first-frame CED curves of every model into this PNG.")
@click.option("--refine-shift", type=click.FloatRange(min=0), metavar="PX",
              help="As fkp-live's: a new face's second read is the mean of two copies of its crop moved PX "
                   "model pixels along the diagonal; 0 reads the crop once [default: the runtime's, 3].")
@click.option("--dlib-model", metavar="PATH", type=click.Path(dir_okay=False),
              help="Also score dlib's 68-point predictor with its own HOG detector (this file: "
                   "shape_predictor_68_face_landmarks.dat; needs dlib, e.g. `pip install dlib-bin "
                   "face_recognition_models`), and draw it into --ced.")
def eval_runtime_command(models, data, split, detector, ced_png, refine_shift, dlib_model):
    """Accuracy of shipped or exported models the way the runtime meets a new face: the
    detector's box, the card's box calibration, the model (a new face is read from the box, then
    again from the crop its points give, moved both ways by --refine-shift: the first frame) and one
    more pass from those points (what tracking does on the next frame). Images with no face detected count as missed. Prints one JSON
    object per model, with the first frame's error per face region; --dlib-model adds dlib's."""
    from .eval_runtime import evaluate_dlib, evaluate_runtime, load_dlib

    dlib_loaded = None
    if dlib_model:  # before the long part: a missing dlib or file fails at once
        with _user_errors():
            dlib_loaded = load_dlib(dlib_model)
    curves = {}
    for model in models:
        with _user_errors():
            out = evaluate_runtime(model, data, split, detector, per_face=bool(ced_png),
                                   refine_shift=refine_shift)
        nmes = out.pop("nmes", None)
        if nmes is not None:
            stem = Path(out["file"]).stem
            curves[stem if model.endswith(".onnx") else f"{model} ({stem})"] = nmes
        click.echo(json.dumps(out, indent=2))
    if dlib_model:
        with _user_errors():  # a predictor of other than 68 points fails here
            out = evaluate_dlib(dlib_model, data, split, per_face=bool(ced_png), loaded=dlib_loaded)
        nmes = out.pop("nmes", None)
        if nmes is not None:
            lost, found = out["missed"], out["faces"]
            curves["dlib 68 + HOG" + (f" ({lost} of {lost + found} faces not found)" if lost else "")] = nmes
        click.echo(json.dumps(out, indent=2))
    if ced_png:
        from .plots import ced_curves

        title = f"300-W {split} split, end to end from {detector}" + (" (dlib: its HOG detector)" if dlib_model else "")
        click.echo(f"wrote {ced_curves(curves, ced_png, title=title)}")


@main.command("cross-check", context_settings=CONTEXT)
@click.argument("models", nargs=-1)
@click.option("--imm", "imm", required=True, type=click.Path(exists=True, file_okay=False),
              help="The IMM Face Database folder (NN-Kg.jpg + NN-Kg.asf).")
@click.option("--dlib-model", metavar="PATH", type=click.Path(dir_okay=False),
              help="Also score dlib's 68-point predictor with its own HOG detector (as for eval-runtime).")
@click.option("--labels", "labels", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Also score a folder of 68-point .pts named for the IMM images, e.g. teacher-label's "
                   "output for the IMM folder (repeatable).")
@click.option("--ridge", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Penalty of each reader's 68-to-58 point map.")
def cross_check_command(models, imm, dlib_model, labels, ridge):
    """Score 68-point readers on faces none of them was trained on: the IMM Face Database.
    Each reader (MODELS as the runtime meets a new face, dlib, label folders) gets its own linear
    map from its 68 points to IMM's 58, fitted on IMM's people 1-32 and scored on people 33-40 by
    IMM's inter-ocular NME. Prints one JSON object per reader; compare readers, not the figures
    with 300-W's, which include no map."""
    from .cross_check import imm_faces, read_dlib, read_labels, read_model, score_reader
    from .eval_runtime import load_dlib

    if not (models or dlib_model or labels):
        raise click.UsageError("name at least one reader: MODELS, --dlib-model or --labels")
    with _user_errors():
        loaded = load_dlib(dlib_model) if dlib_model else None
        images, truth, person = imm_faces(imm)
    readers = [(m, lambda m=m: read_model(m, images)) for m in models]
    if dlib_model:
        readers.append(("dlib", lambda: read_dlib(loaded, dlib_model, images)))
    readers += [(str(d), lambda d=d: read_labels(d, sorted(images))) for d in labels]
    for name, read in readers:
        try:
            with _user_errors():
                out = score_reader(read(), truth, person, ridge)
        except ValueError as e:
            raise Fail(f"{name}: {e}") from None
        click.echo(json.dumps({"reader": name, **out}, indent=2))


@main.command("bench", context_settings=CONTEXT)
@click.argument("models", nargs=-1)
@click.option("--runs", default=300, show_default=True, help="Timed runs per figure (median reported).")
@click.option("--threads", default=1, show_default=True, help="ONNX Runtime intra-op threads.")
def bench_command(models, runs, threads):
    """Latency per face of shipped models (or .onnx paths) at batch 1 and 4, on every available
    execution provider, median of many runs after warm-up; and the metrics in each card."""
    from .bench import bench

    with _user_errors():
        bench(models, runs, threads, echo=click.echo)


@main.command("convert", context_settings=CONTEXT)
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the Kaggle files.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random label removal.")
@click.option("--keep-all", default=0.3, show_default=True,
              help="Fraction of training images that keep all 15 points (the rest keep Kaggle's 4).")
@click.option("--skip-bad", is_flag=True, help="Skip bad files (and report them) instead of stopping.")
def convert_command(sources, out, seed, keep_all, skip_bad):
    """Write a Kaggle Facial Keypoints dataset from 68-point .pts folders.

    \b
    68 -> 15 points, 96x96 greyscale faces framed like Kaggle's, labels removed at random so
    that about 70% of the images keep only the 4 points of Kaggle's big subset. 300-W's fixed
    test split becomes test.csv + IdLookupTable.csv (+ test_truth.csv to score submissions).
    Example:
      fkp-train convert ../shared/data/300w/* --out runs/kaggle_data
    """
    from .convert import convert_to_kaggle, iter_ibug
    from .data import SkipReport

    report = SkipReport([])
    try:
        with _user_errors(skip_bad_option=True):
            convert_to_kaggle(iter_ibug(sources, skip_bad, report), out, seed=seed, keep_all_frac=keep_all,
                              echo=click.echo)
    except ValueError as e:
        raise Fail(str(e)) from None
    if report:
        click.echo(report.summary(), err=True)


@main.command("kaggle-submit", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--test", "test_csv", required=True, type=click.Path(exists=True), help="Kaggle test.csv.")
@click.option("--lookup", required=True, type=click.Path(exists=True), help="Kaggle IdLookupTable.csv.")
@click.option("--out", required=True, type=click.Path(), help="The submission CSV (RowId,Location).")
@click.option("--two-model", type=click.Path(exists=True),
              help="Second checkpoint for the points the first was not trained on (seeds' approach).")
@click.option("--truth", type=click.Path(exists=True),
              help="test_truth.csv from `fkp-train convert`: also print the submission's RMSE.")
def kaggle_submit_command(checkpoint, test_csv, lookup, out, two_model, truth):
    """Predict Kaggle's test.csv and write the submission file, Locations clipped to [0, 96]."""
    from .data import kaggle
    from .predict import kaggle_submission

    try:
        with _user_errors():
            n, n_images = kaggle_submission(checkpoint, test_csv, lookup, out, two_model)
    except ValueError as e:
        raise Fail(str(e)) from None
    click.echo(f"wrote {out}: {n} rows for {n_images} images")
    if truth:
        click.echo(f"RMSE against {truth}: {kaggle.score_submission(out, lookup, truth):.4f} px")


@main.command("calibrate", context_settings=CONTEXT)
@click.option("--task", "task_name", default="ibug68", show_default=True, type=click.Choice(list(TASKS)),
              help="The model's task: its data reader, schema and crop scale.")
@click.option("--data", required=True, type=click.Path(exists=True), help="The task's dataset.")
@click.option("--crop-scale", type=float, help="Override the task's crop scale.")
@click.option("--split", default="train", show_default=True, type=click.Choice(["train", "val", "all"]))
@click.option("--out", required=True, type=click.Path(), help="JSON for `fkp-train export --calibration`.")
@click.option("--limit", type=int, help="Use at most N images.")
def calibrate_command(task_name, data, crop_scale, split, out, limit):
    """Measure how each runtime detector's box maps to the model's crop.

    For every face the crop made from its true points (the model's convention) is compared with
    the box the runtime's detector finds; the medians of the centre offset (in box sizes, in the
    eye-levelled frame) and of the size ratio become (dx, dy, scale) in the model card.
    """
    from . import calibrate

    with _user_errors():
        result = calibrate.measure(data, task_name, crop_scale, split, limit, echo=click.echo)
    calibrate.save(result, out)
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
