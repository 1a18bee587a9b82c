"""Measuring models: metrics over a dataset, a checkpoint's evaluation (`fkp-train eval`, with
its plots), the seeds' two-model combination, and the mirror offset of a model's points."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from . import echo as _echo
from . import metrics
from .datasets import KeypointDataset
from .inference import predict_dataset


def evaluate(model, ds: KeypointDataset, device="cpu", loss_fn=None) -> dict:
    """Metrics of a model on a dataset (plus "loss" with `loss_fn`), from one pass over it."""
    pred, truth, mask, conf, *loss = predict_dataset(model, ds, device=device, loss_fn=loss_fn)
    out = metrics.summary(pred, truth, mask, ds.schema)
    out["presence"] = float(conf.mean())
    if loss:
        out["loss"] = loss[0]
    return out


def combine(pred_a, pred_b, task_a):
    """The seeds' two-model answer: the points model A was trained on from A, the rest from B."""
    from_a = np.zeros(pred_a.shape[1], bool)
    from_a[list(task_a.label_subset or range(pred_a.shape[1]))] = True
    return np.where(from_a[None, :, None], pred_a, pred_b)


def mirror_sample(s, schema):
    """A sample seen in a mirror: the image flipped and the points mirrored by training's plain
    flip (`augment.flip_points`: column j -> W-1-j, renumbered by the mirror permutation)."""
    from .augment import flip_points

    pts, mask = flip_points(s.points, s.mask, schema, s.image.shape[1])
    return dataclasses.replace(s, image=np.ascontiguousarray(s.image[:, ::-1]), points=pts, mask=mask)


def mirror_offset(checkpoint, data, split: str = "train", every: int = 1) -> dict:
    """Where a systematic x offset against the labels comes from.

    The mean signed error (prediction - label) in x, in % of the inter-ocular distance, on the
    split's images as they are and mirrored. A net trained with flips treats left and right alike:
    if the LABELS sit b to the right of the features, it reads -b on the images and +b on their
    mirrors (the sign turns); an error of the crops, resizing or decoding (the pipeline) keeps its
    sign, c. So b = (mirrored - original) / 2 and c = (mirrored + original) / 2. b is what
    `--augment '{"flip_shift": b}'` (a fraction, not %) keeps through training's flips.
    """
    from .checkpoint import load_model
    from .datasets import load_split

    model, task = load_model(checkpoint)
    plain = dataclasses.replace(task, label_subset=None, complete_only=False)
    samples, _ = load_split(plain, data, split)
    out = {"checkpoint": str(checkpoint), "split": split}
    return {**out, **mirror_offset_of(model, plain, samples[::max(1, every)])}


def mirror_offset_of(model, task, samples) -> dict:
    """`mirror_offset` for a model in memory and a list of samples."""
    from fkp_live import schemas

    schema = schemas.get(task.schema)
    if schema.ocular is None:
        raise ValueError(f"schema {schema.name!r} has no eye corners to measure the offset against")
    out = {"faces": len(samples)}
    for name, ss in (("original", samples), ("mirrored", [mirror_sample(s, schema) for s in samples])):
        pred, truth, mask, _ = predict_dataset(model, KeypointDataset(ss, task, None))
        e = schema.ocular_points(truth)
        iod = np.linalg.norm(e[:, 1] - e[:, 0], axis=-1)
        d = (pred - truth) / iod[:, None, None] * 100
        out[name] = {"dx_pct_iod": round(float(d[..., 0][mask].mean()), 4),
                     "dy_pct_iod": round(float(d[..., 1][mask].mean()), 4)}
    o, m = out["original"]["dx_pct_iod"], out["mirrored"]["dx_pct_iod"]
    out["label_offset_b_pct_iod"] = round((m - o) / 2, 4)
    out["pipeline_offset_c_pct_iod"] = round((m + o) / 2, 4)
    return out


def evaluate_checkpoint(checkpoint, data, split: str = "val", skip_bad: bool = False,
                        two_model=None, plots=None, echo=_echo) -> dict:
    """NME (inter-ocular, inter-pupil), RMSE, MAE, AUC@0.08, FR@0.08 of a checkpoint on a split.

    Metrics are over every labelled point of the split (a task's label subset is not applied).
    `two_model`: a second checkpoint for the points the first was not trained on; `plots`: a
    folder for a prediction grid, CED curve and per-point errors. Skip reports and the plots
    folder go to `echo(..., err=True)`.
    """
    from fkp_live import schemas

    from .checkpoint import load_model
    from .datasets import load_split

    model, task = load_model(checkpoint)
    plain = dataclasses.replace(task, label_subset=None, complete_only=False)
    samples, rep = load_split(plain, data, split, skip_bad)
    if rep:
        echo(rep.summary(), err=True)
    ds = KeypointDataset(samples, plain, None)
    pred, truth, mask, conf = predict_dataset(model, ds)
    if two_model:
        model_b, task_b = load_model(two_model)
        plain_b = dataclasses.replace(task_b, label_subset=None, complete_only=False)
        pred_b, *_ = predict_dataset(model_b, KeypointDataset(samples, plain_b, None))
        pred = combine(pred, pred_b, task)
    schema = schemas.get(task.schema)
    res = metrics.summary(pred, truth, mask, schema)
    res["presence"] = float(conf.mean())
    if task.reader == "imm":
        # IMM views: 1-2 frontal, 3-4 turned about 30 degrees, 5 spot light, 6 free expression
        views = np.array([int(re.match(r"\d+-(\d)", Path(s.source).name).group(1)) for s in samples])
        err = np.nanmean(metrics.point_errors(pred, truth, mask), axis=1)
        res["mean_px_by_view"] = {str(v): round(float(err[views == v].mean()), 3) for v in sorted(set(views))}
    res = {"checkpoint": str(checkpoint), "two_model": two_model, "split": split, "task": task.name, **res}
    if plots:
        from .plots import prediction_plots

        prediction_plots(samples, pred, truth, mask, schema, Path(plots), f"{task.name} on {split}")
        echo(f"plots in {plots}", err=True)
    return res
