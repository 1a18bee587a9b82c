"""`fkp-train`: train, evaluate, plot and export facial keypoint models."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .tasks import TASKS

CONTEXT = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "FKP_TRAIN"}


class Fail(click.ClickException):
    """An error a user can act on: printed as one line, exit code 2."""

    exit_code = 2


def _data_fail(e, skip_bad_option: bool = False) -> Fail:
    """A reader's error as a Fail; where the command has --skip-bad, a bad file or row suggests it
    (the readers themselves name no command-line flag)."""
    from .data import SkippableError

    if skip_bad_option and isinstance(e, SkippableError):
        return Fail(f"{e} (or pass --skip-bad to skip bad {e.unit})")
    return Fail(str(e))


MAIN_HELP = """Train, evaluate, plot and export facial keypoint models.

\b
A typical session (300-W, the runtime's default model):
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
        click.option("--loss", type=click.Choice(["mse", "l1", "wing"])),
        click.option("--optimizer", type=click.Choice(["adam", "adamw"])),
        click.option("--schedule", type=click.Choice(["onecycle", "cosine", "step", "plateau", "none"])),
        click.option("--crop-scale", type=float, help="Crop side / keypoint box side (crop mode)."),
        click.option("--heatmap-weight", type=float,
                     help="Weight of the auxiliary Gaussian heatmap loss (heatmap nets; 0 = off)."),
        click.option("--augment", help='JSON overrides of augmentation, e.g. \'{"rotate_deg": 20}\'.'),
        click.option("--net-args", help='JSON keyword arguments for the network, e.g. \'{"width": 0.75}\'.'),
        click.option("--patience", type=int, default=0, show_default=True, help="Early stopping (0 = off)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--resume", is_flag=True, help="Continue from OUT/last.pt."),
        click.option("--stop-after", type=int, help="Run at most N epochs now; continue later with --resume."),
        click.option("--init", type=click.Path(exists=True), help="Start from this checkpoint's weights (fine-tune)."),
        click.option("--skip-bad", is_flag=True, help="Skip bad files (and report them) instead of stopping."),
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
                skip_bad, limit, threads, workers, device):
    """Train a model. Also runs under `torchrun --nproc_per_node=N -m train.fit ...` (DDP).

    Writes OUT/last.pt every epoch and OUT/best.pt when the validation metric improves (both
    atomically), OUT/log.csv (one row per epoch) and OUT/summary.json.
    """
    from .checkpoint import CheckpointError
    from .data import DataError
    from .fit import FitConfig, fit

    t = _task_from_options(task, epochs=epochs, batch=batch, lr=lr, net=net, size=size,
                           channels=channels, loss=loss, optimizer=optimizer, schedule=schedule,
                           crop_scale=crop_scale, heatmap_weight=heatmap_weight, augment=augment,
                           net_args=net_args)
    cfg = FitConfig(task=t, data=data, out=out, extra=list(extra), seed=seed, patience=patience,
                    resume=resume, stop_after=stop_after, init=init, skip_bad=skip_bad, limit=limit, threads=threads, workers=workers,
                    device=device)
    try:
        summary = fit(cfg)
    except DataError as e:
        raise _data_fail(e, skip_bad_option=True) from None
    except CheckpointError as e:
        raise Fail(str(e)) from None
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
    import dataclasses

    import numpy as np

    from fkp_live import schemas

    from . import metrics
    from .data import DataError
    from .datasets import KeypointDataset, load_split
    from .fit import predict_dataset

    model, task = _load_ckpt(checkpoint)
    plain = dataclasses.replace(task, label_subset=None, complete_only=False)
    try:
        samples, rep = load_split(plain, data, split, skip_bad)
    except DataError as e:
        raise _data_fail(e, skip_bad_option=True) from None
    if rep:
        click.echo(rep.summary(), err=True)
    ds = KeypointDataset(samples, plain, None)
    pred, truth, mask, conf = predict_dataset(model, ds)
    if two_model:
        model_b, task_b = _load_ckpt(two_model)
        pred_b, *_ = predict_dataset(model_b, KeypointDataset(samples, dataclasses.replace(task_b, label_subset=None, complete_only=False), None))
        pred = _combine(pred, pred_b, task)
    schema = schemas.get(task.schema)
    res = metrics.summary(pred, truth, mask, schema)
    res["presence"] = float(conf.mean())
    if task.reader == "imm":
        # IMM views: 1-2 frontal, 3-4 turned about 30 degrees, 5 spot light, 6 free expression
        import re

        views = np.array([int(re.match(r"\d+-(\d)", Path(s.source).name).group(1)) for s in samples])
        err = np.nanmean(metrics.point_errors(pred, truth, mask), axis=1)
        res["mean_px_by_view"] = {str(v): round(float(err[views == v].mean()), 3) for v in sorted(set(views))}
    res = {"checkpoint": str(checkpoint), "two_model": two_model, "split": split, "task": task.name, **res}
    if plots:
        _prediction_plots(samples, pred, truth, mask, schema, Path(plots), f"{task.name} on {split}")
        click.echo(f"plots in {plots}", err=True)
    click.echo(json.dumps(res, indent=2))
    if json_out:
        Path(json_out).write_text(json.dumps(res, indent=2) + "\n")


def _protocol(task, split: str) -> str:
    """What a card's metrics were measured on, in words."""
    where = {
        "300w": f"the fixed '{split}' split of 300-W afw + helen_train + lfpw_train (a hash of each "
                "file name, train.data.ibug.split_of: 10% test, 5% val); the test split takes no part "
                "in training or model selection",
        "imm": "IMM people 33-40 (the course projects' person split; the model was selected on it)",
        "kaggle": f"the '{split}' part of the Kaggle-format file (10% of rows by a hash of the row)",
    }.get(task.reader, split)
    crop = ("crops made from the true points with the card's crop convention (as in tracking)"
            if task.mode == "crop" else "the whole image")
    return f"{where}; input: {crop}; NME = mean point error / outer-eye-corner distance"


def _prediction_plots(samples, pred, truth, mask, schema, out: Path, title: str) -> list[str]:
    """Best and worst predictions, and for schemes with eyes the CED and per-point errors."""
    import numpy as np

    from . import metrics
    from . import plots as pl

    out.mkdir(parents=True, exist_ok=True)
    made = []
    if schema.ocular is not None:
        nme = metrics.nme_per_sample(pred, truth, mask, schema)
        scores, fmt = nme * 100, "NME {:.2f}%"
        made.append(pl.ced_curves({title: nme}, out / "ced.png"))
        made.append(pl.per_point_bars(metrics.per_point_error(pred, truth, mask), schema, out / "per_point.png"))
    else:
        scores, fmt = np.nanmean(metrics.point_errors(pred, truth, mask), axis=1), "{:.1f} px"
    made.append(pl.prediction_grid([s.image for s in samples], pred, truth, mask, scores, schema,
                                   out / "predictions.png", title=title, score_fmt=fmt))
    return made


def _combine(pred_a, pred_b, task_a):
    """The seeds' two-model answer: the points model A was trained on from A, the rest from B."""
    import numpy as np

    from_a = np.zeros(pred_a.shape[1], bool)
    from_a[list(task_a.label_subset or range(pred_a.shape[1]))] = True
    return np.where(from_a[None, :, None], pred_a, pred_b)


def _load_ckpt(checkpoint):
    from .checkpoint import CheckpointError, load_model

    try:
        return load_model(checkpoint)
    except CheckpointError as e:
        raise Fail(str(e)) from None


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
def export_command(checkpoint, out, data, metrics_split, calibration, tolerance, int8, fp16, tensorrt,
                   flip_average):
    """Export a checkpoint to ONNX with its model card, checked for parity against torch.

    \b
    The same crops go through torch and through the runtime's ONNX Runtime wrapper; the export
    fails (exit 1) when they differ by more than --tolerance pixels at the model's input size.
    """
    import numpy as np

    from fkp_live.card import ModelCard

    from . import export as ex
    from .datasets import load_split, to_input

    model, task = _load_ckpt(checkpoint)
    out = Path(out)
    if out.suffix != ".onnx":
        raise Fail(f"--out {out}: the file name must end in .onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    if flip_average:
        from fkp_live import schemas

        model = ex.FlipAverage(model.eval(), schemas.get(task.schema).mirror_array(), task.size[0])
    ex.export_onnx(model, task, out)
    cmd, train_data = ex.read_training_command(Path(checkpoint).parent)
    box_cal = {}
    if calibration:
        box_cal = json.loads(Path(calibration).read_text())
    elif out.with_suffix(".json").exists():
        try:
            box_cal = ModelCard.load(out.with_suffix(".json")).box_calibration
        except Exception:
            box_cal = {}
    card = ex.make_card(task, out.stem, command=cmd, data=train_data, box_calibration=box_cal,
                        flip_average=flip_average)
    if data:
        val, _ = load_split(task, data, "val")
        crops, _ = ex.crops_of(val, task, limit=32)
    else:
        rng = np.random.default_rng(0)
        w, h = task.size
        crops = rng.integers(0, 256, (8, h, w, task.channels), dtype=np.uint8)
    diff = ex.parity(model, out, card, crops)
    click.echo(f"parity: largest torch/ONNX Runtime difference {diff:.5f} px at {task.size[0]}px input "
               f"({len(crops)} crops{' of real faces' if data else ', synthetic'})")
    if diff > tolerance:
        out.unlink()
        raise click.ClickException(f"parity check failed: {diff:.4f} px > {tolerance} px; export removed")
    card.metrics = {"parity_max_px": round(diff, 5)}
    if data:
        test, _ = load_split(task, data, metrics_split)
        m = ex.evaluate_onnx(out, card, test, task)
        card.metrics.update({"split": metrics_split, "data": str(data), "protocol": _protocol(task, metrics_split), "fp32": m})
        click.echo(f"{metrics_split} metrics (ONNX Runtime, fp32): {json.dumps(m)}")
    size, ch = task.size[0], task.channels
    card.metrics["latency_ms_cpu_1thread"] = {
        "batch1": round(ex.latency_ms(out, 1, size, ch), 3),
        "batch4": round(ex.latency_ms(out, 4, size, ch), 3),
    }
    if int8:
        if not data:
            raise Fail("--int8 needs --data: INT8 is calibrated on training crops")
        train, _ = load_split(task, data, "train")
        calib, _ = ex.crops_of(train, task, limit=256)
        x = to_input(calib).numpy()
        q = out.with_name(out.stem + ".int8.onnx")
        ex.quantize_int8(out, q, x)
        qm = ex.evaluate_onnx(q, card, test, task) if data else {}
        lat = {"batch1": round(ex.latency_ms(q, 1, size, ch), 3), "batch4": round(ex.latency_ms(q, 4, size, ch), 3)}
        f32 = card.metrics["latency_ms_cpu_1thread"]
        card.metrics["int8"] = {"file": q.name, **qm, "latency_ms_cpu_1thread": lat,
                                "speedup_batch1": round(f32["batch1"] / lat["batch1"], 2),
                                "speedup_batch4": round(f32["batch4"] / lat["batch4"], 2)}
        qcard = ModelCard(**{**card.__dict__, "name": q.stem})
        qcard.save(q.with_suffix(".json"))
        click.echo(f"int8: {q} metrics {json.dumps(qm)} latency {lat} "
                   f"(fp32 {f32}, speed-up x{card.metrics['int8']['speedup_batch1']} at batch 1)")
    if fp16:
        f = out.with_name(out.stem + ".fp16.onnx")
        ex.convert_fp16(out, f)
        card16 = ModelCard(**{**card.__dict__, "name": f.stem})
        card16.save(f.with_suffix(".json"))
        click.echo(f"fp16: {f} (for GPU execution providers)")
    card.save(out.with_suffix(".json"))
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json')}")
    if tensorrt:
        try:
            ex.build_tensorrt(out, out.with_suffix(".engine"), input_size=size, channels=ch)
        except ex.TensorRTUnavailable as e:
            click.echo(f"tensorrt: {e}", err=True)
            sys.exit(3)
        click.echo(f"tensorrt: wrote {out.with_suffix('.engine')}")


@main.command("predict", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", type=click.Path(), required=True, help="Folder for annotated PNGs and points.csv.")
def predict_command(checkpoint, images, out):
    """Predict keypoints on image files with a checkpoint; crops come from the file's .pts
    (if present) or, for whole-image tasks, the whole image. Writes annotated PNGs and a CSV."""
    import csv

    import cv2
    import numpy as np

    from fkp_live import schemas

    from .data import DataError, Sample
    from .data.ibug import read_image, read_pts
    from .datasets import KeypointDataset
    from .fit import predict_dataset

    model, task = _load_ckpt(checkpoint)
    schema = schemas.get(task.schema)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, samples = [], []
    for path in images:
        path = Path(path)
        try:
            img = read_image(path, grey=task.channels == 1)
        except DataError as e:
            raise Fail(str(e)) from None
        pts_file = path.with_suffix(".pts")
        if task.mode == "crop":
            if not pts_file.exists():
                raise Fail(f"{path}: crop-mode models need a face region; put a .pts beside the image "
                           "or use fkp-live --images for detection")
            pts = read_pts(pts_file, None)
            if len(pts) != schema.n:
                raise Fail(f"{pts_file}: {len(pts)} points, the model's schema has {schema.n}")
            mask = np.ones(len(pts), bool)
        else:
            pts, mask = np.zeros((schema.n, 2), np.float32), np.zeros(schema.n, bool)
        samples.append(Sample(img, pts, mask, str(path), task.schema))
    pred, _, _, conf = predict_dataset(model, KeypointDataset(samples, task, None))
    for smp, frame_pts, c in zip(samples, pred, conf):
        img, path = smp.image, Path(smp.source)
        vis = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
        for line in schema.lines:
            cv2.polylines(vis, [np.round(frame_pts[list(line)]).astype(np.int32)], False, (0, 200, 255), 1, cv2.LINE_AA)
        for x, y in frame_pts:
            cv2.circle(vis, (int(round(x)), int(round(y))), 2, (0, 0, 255), -1, cv2.LINE_AA)
        cv2.imwrite(str(out / f"{path.stem}_pred.png"), vis)
        rows.append([path.name, f"{float(c):.4f}"] +
                    [f"{v:.2f}" for v in frame_pts[:, 0]] + [f"{v:.2f}" for v in frame_pts[:, 1]])
    with open(out / "points.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["image", "confidence"] + [f"x_{i}" for i in range(schema.n)] + [f"y_{i}" for i in range(schema.n)])
        wr.writerows(rows)
    click.echo(f"wrote {len(rows)} annotated image(s) and {out / 'points.csv'}")


@main.command("plot", context_settings=CONTEXT)
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--data", type=click.Path(exists=True), help="Also plot predictions, CED and per-point errors.")
@click.option("--split", default="val", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--out", type=click.Path(), help="Folder for the PNGs (default: RUN/plots).")
def plot_command(run, data, split, out):
    """Plots of a run: loss curves, first-layer kernels, and with --data the best and worst
    predictions (truth green, prediction red), the CED curve and per-point errors."""
    import torch

    from fkp_live import schemas

    from . import plots as pl
    from .datasets import KeypointDataset, load_split
    from .fit import predict_dataset

    run = Path(run)
    out = Path(out) if out else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    made = []
    if (run / "log.csv").exists():
        made.append(pl.loss_curves(run / "log.csv", out / "loss.png"))
    ckpt = run / "best.pt"
    if ckpt.exists():
        model, task = _load_ckpt(ckpt)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        made.append(pl.kernels(first.weight.detach().numpy(), out / "kernels.png",
                               title=f"{task.net}: first-layer kernels"))
        if data:
            samples, _ = load_split(task, data, split)
            pred, truth, mask, _ = predict_dataset(model, KeypointDataset(samples, task, None))
            made += _prediction_plots(samples, pred, truth, mask, schemas.get(task.schema), out,
                                      f"{task.name}: {split} split")
    elif data:
        raise Fail(f"{run}: no best.pt to predict with")
    for m in made:
        click.echo(str(m))


@main.command("eval-runtime", context_settings=CONTEXT)
@click.argument("model")
@click.option("--data", required=True, type=click.Path(exists=True), help="A 300-W folder (68 points).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test", "all"]))
@click.option("--detector", default="blazeface", show_default=True,
              type=click.Choice(["blazeface", "blazeface-full", "haar"]))
def eval_runtime_command(model, data, split, detector):
    """Accuracy of a shipped or exported model the way the runtime meets a new face: the
    detector's box, the card's box calibration, one pass of the model (first frame) and a second
    pass from those points (what tracking does on the next frame). Images with no face detected
    count as missed."""
    import numpy as np

    from fkp_live.track.tracker import Tracker

    from . import metrics
    from .datasets import load_split
    from .tasks import get

    samples, _ = load_split(get("ibug68").with_(channels=3), data, split)
    first, second, truth, missed = [], [], [], 0
    tr = Tracker(model=model, device="cpu", threads=1, detector=detector, smooth=0, max_faces=1,
                 redetect_every=10**6)
    for s in samples:
        tr.reset()
        faces = tr(s.image)
        if not faces:
            missed += 1
            continue
        first.append(faces[0].raw)
        second.append(tr(s.image)[0].raw if tr.tracks else faces[0].raw)
        truth.append(s.points)
    t = np.array(truth)
    m = np.ones(t.shape[:2], bool)
    schema = tr.schema
    out = {"model": model, "file": tr.landmarker.onnx_path.name, "split": split, "detector": detector, "faces": len(t), "missed": missed}
    for name, p in (("first_frame", first), ("tracked", second)):
        r = metrics.summary(np.array(p), t, m, schema)
        out[name] = {k: round(r[k], 4) for k in ("nme_io", "auc@0.08", "fr@0.08", "mean_px")}
    click.echo(json.dumps(out, indent=2))


@main.command("bench", context_settings=CONTEXT)
@click.argument("models", nargs=-1)
@click.option("--runs", default=300, show_default=True, help="Timed runs per figure (median reported).")
@click.option("--threads", default=1, show_default=True, help="ONNX Runtime intra-op threads.")
def bench_command(models, runs, threads):
    """Latency per face of shipped models (or .onnx paths) at batch 1 and 4, on every available
    execution provider, median of many runs after warm-up; and the metrics in each card."""
    import onnxruntime as ort

    from fkp_live.card import ModelCard, models_dir, resolve
    from fkp_live.track.landmarker import _gpu_driver_present

    from . import export as ex

    names = list(models) or sorted(p.stem for p in models_dir().glob("*.onnx"))
    # GPU providers are listed whenever onnxruntime-gpu is installed; they run only with a driver
    gpu = ("TensorrtExecutionProvider", "CUDAExecutionProvider") if _gpu_driver_present() else ()
    providers = [p for p in (*gpu, "CPUExecutionProvider") if p in ort.get_available_providers()]
    click.echo(f"onnxruntime {ort.__version__}; threads={threads}; median of {runs} runs after warm-up")
    click.echo(f"{'model':<22}{'provider':<12}{'MB':>6}{'b1 ms/face':>12}{'b4 ms/face':>12}{'b4 ms':>8}  metrics")
    for name in names:
        path, card_path = resolve(name)
        card = ModelCard.load(card_path)
        for prov in providers:
            try:
                b1 = ex.latency_ms(path, 1, card.input_size, card.channels, prov, threads, runs)
                b4 = ex.latency_ms(path, 4, card.input_size, card.channels, prov, threads, runs)
            except Exception as e:  # provider listed but unusable here (no GPU libraries)
                click.echo(f"{path.stem:<22}{prov[:-17]:<12}  unavailable: {str(e).splitlines()[0][:80]}")
                continue
            own = card.metrics.get("int8") if path.stem.endswith(".int8") else None
            m = own or card.metrics.get("fp32", card.metrics)
            keys = ("nme_io", "auc@0.08", "fr@0.08", "rmse_px", "mean_px")
            ms = ", ".join(f"{k}={m[k]:.3g}" for k in keys if isinstance(m.get(k), (int, float)))
            ms += f" ({card.metrics.get('split', '?')}{', fp32 model' if path.stem.endswith('.fp16') else ''})" if ms else ""
            click.echo(f"{path.stem:<22}{prov[:-17]:<12}{path.stat().st_size / 1e6:>6.2f}{b1:>12.3f}"
                       f"{b4 / 4:>12.3f}{b4:>8.2f}  {ms}")


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
    from .data import DataError, SkipReport

    report = SkipReport([])
    try:
        convert_to_kaggle(iter_ibug(sources, skip_bad, report), out, seed=seed, keep_all_frac=keep_all,
                          echo=click.echo)
    except DataError as e:
        raise _data_fail(e, skip_bad_option=True) from None
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
    import numpy as np
    import torch

    from .data import DataError, kaggle
    from .datasets import to_input

    model, task = _load_ckpt(checkpoint)
    if task.schema != "kaggle15" or task.size != (96, 96):
        raise Fail(f"{checkpoint}: a kaggle15 model on 96x96 input is needed, this one is "
                   f"{task.schema} at {task.size[0]}x{task.size[1]}")
    try:
        ids, images = kaggle.read_test(test_csv)
    except DataError as e:
        raise Fail(str(e)) from None

    def run(m):
        x = to_input(images)
        with torch.no_grad():
            return np.concatenate([m(x[i : i + 256])[0].numpy() for i in range(0, len(x), 256)]) * 96.0

    pred = run(model)
    if two_model:
        model_b, _ = _load_ckpt(two_model)
        pred = _combine(pred, run(model_b), task)
    # whole-image models predict fractions of the 96x96 input; pixel centres are integers
    try:
        n = kaggle.write_submission(lookup, dict(zip(ids, pred)), out)
    except (DataError, ValueError) as e:
        raise Fail(str(e)) from None
    click.echo(f"wrote {out}: {n} rows for {len(ids)} images")
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
    import math

    import numpy as np
    from tqdm import tqdm

    from fkp_live import schemas
    from fkp_live.crop import crop_from_points, roll_from_eyes
    from fkp_live.track.detect import make_detector

    from .datasets import load_split
    from .tasks import get

    task = get(task_name).with_(channels=3)
    crop_scale = crop_scale or task.crop_scale
    samples, _ = load_split(task, data, split)
    samples = samples[:limit]
    schema = schemas.get(task.schema)
    result = {}
    for name in ("blazeface", "blazeface-full", "haar"):
        det = make_detector(name)
        rows, missed = [], 0
        for smp in tqdm(samples, desc=name, leave=False):
            crop = crop_from_points(smp.points, schema, crop_scale, task.crop_rotate, mask=smp.mask)
            dets = det(smp.image)
            best, best_d = None, math.inf
            for d in dets:
                bx, by = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
                dist = math.hypot(bx - crop.cx, by - crop.cy)
                if dist < best_d and dist < 0.5 * crop.side:
                    best, best_d = d, dist
            if best is None:
                missed += 1
                continue
            # at run time the roll comes from the detector's eyes (BlazeFace) or is 0 (Haar)
            ang = 0.0 if best.eyes is None else roll_from_eyes(best.eyes[0], best.eyes[1])
            size = best.size
            ox, oy = crop.cx - (best.box[0] + best.box[2]) / 2, crop.cy - (best.box[1] + best.box[3]) / 2
            c, s_ = math.cos(ang), math.sin(ang)
            rows.append(((c * ox + s_ * oy) / size, (-s_ * ox + c * oy) / size, crop.side / size))
        det.close()
        if not rows:
            click.echo(f"{name}: found no face; not calibrated", err=True)
            continue
        med = np.median(np.array(rows), axis=0)
        spread = np.percentile(np.array(rows), [25, 75], axis=0)
        result[name] = [round(float(v), 4) for v in med]
        click.echo(f"{name}: dx={med[0]:.3f} dy={med[1]:.3f} scale={med[2]:.3f} over {len(rows)} faces "
                   f"({missed} missed); IQR of scale {spread[0, 2]:.3f}..{spread[1, 2]:.3f}")
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
