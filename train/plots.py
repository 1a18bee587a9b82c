"""Training plots: loss curves, prediction grids, first-layer kernels, CED curves, per-point errors,
an evaluation's plots (`prediction_plots`) and a run folder's (`plot_run`).

Every drawing function uses matplotlib's Agg backend (no display needed), writes one PNG, closes
its figure and returns the PNG's path as a string. Inputs are plain numpy arrays (torch tensors
are accepted where noted) so the plots can be made from a run's files without the training code.
"""
from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fkp_live.schemas import Schema  # noqa: E402

from . import metrics  # noqa: E402

DPI = 110
TRUTH_COLOUR = "#2ecc40"  # green
PRED_COLOUR = "#ff2b2b"  # red

# Validation metric columns that `loss_curves` knows how to show: (column, label, scale, percent?).
# NME columns are logged in percent already (metrics.summary multiplies by 100).
_PERCENT_METRICS = (("val_nme_io", "NME inter-ocular"), ("val_nme_ip", "NME inter-pupil"))
_PIXEL_METRICS = (("val_rmse_px", "RMSE"), ("val_mean_px", "mean point error"), ("val_mae_px", "MAE"))
# Which column picks the best epoch, in order of preference (lower is better for all of them).
_BEST_ORDER = ("val_nme_io", "val_rmse_px", "val_mean_px", "val_nme_ip", "val_mae_px", "val_loss")


def _save(fig, out_png) -> str:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=DPI, facecolor="white")
    finally:
        plt.close(fig)
    return str(out)


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a)


# --- loss curves ------------------------------------------------------------------------------

def read_log(log_csv) -> dict[str, np.ndarray]:
    """fit.py's log.csv -> {column: float array}, one entry per epoch.

    Cells that are empty or not numbers become NaN. When a resumed run logged an epoch twice
    (a crash between the log write and the checkpoint), the last row for that epoch wins.
    """
    with open(log_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("epoch") not in (None, "")]
    if not rows:
        raise ValueError(f"{log_csv}: no epochs logged")

    def num(v) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan

    by_epoch: dict[float, dict] = {}
    for r in rows:
        by_epoch[num(r["epoch"])] = r
    epochs = sorted(e for e in by_epoch if not math.isnan(e))
    cols = list(rows[0].keys())
    return {c: np.array([num(by_epoch[e].get(c)) for e in epochs]) for c in cols}


def _best_column(log: dict[str, np.ndarray], metric: str | None) -> str | None:
    if metric is not None:
        col = metric if metric.startswith("val_") or metric in log else f"val_{metric}"
        if col not in log:
            raise KeyError(f"metric {metric!r} is not in the log; columns: {', '.join(log)}")
        return col
    for col in _BEST_ORDER:
        if col in log and np.isfinite(log[col]).any():
            return col
    return None


def _metric_label(col: str) -> str:
    for c, label in _PERCENT_METRICS:
        if c == col:
            return f"{label} (%)"
    for c, label in _PIXEL_METRICS:
        if c == col:
            return f"{label} (px)"
    return col.removeprefix("val_").replace("_", " ")


def loss_curves(log_csv, out_png, metric: str | None = None, title: str | None = None) -> str:
    """Train/validation loss per epoch (left), validation metrics per epoch (right).

    The right panel shows the NME columns (in %) when the log has them, else the pixel ones
    (RMSE, mean point error, MAE). The best epoch, by `metric` (default: val_nme_io, else
    val_rmse_px, else val_mean_px, else val_loss; lower is better), is marked on both panels.
    """
    log = read_log(log_csv)
    ep = log["epoch"]
    single = len(ep) == 1
    style = dict(marker="o", markersize=6 if single else 3.5 if len(ep) <= 60 else 0, linewidth=1.6)

    metric_cols = [c for c, _ in _PERCENT_METRICS if c in log and np.isfinite(log[c]).any()]
    if not metric_cols:
        metric_cols = [c for c, _ in _PIXEL_METRICS if c in log and np.isfinite(log[c]).any()]
    best_col = _best_column(log, metric)
    best_i = None
    if best_col is not None and np.isfinite(log[best_col]).any():
        best_i = int(np.nanargmin(log[best_col]))

    ncols = 2 if metric_cols else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.8), layout="constrained", squeeze=False)
    axes = axes[0]

    ax = axes[0]
    for col, label, colour in (("train_loss", "train", "#1f77b4"), ("val_loss", "validation", "#ff7f0e")):
        if col in log and np.isfinite(log[col]).any():
            ax.plot(ep, log[col], label=label, color=colour, **style)
    losses = np.concatenate([log[c] for c in ("train_loss", "val_loss") if c in log] or [np.array([])])
    losses = losses[np.isfinite(losses)]
    if len(losses) and losses.min() > 0 and losses.max() / losses.min() > 20:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss")

    if metric_cols:
        mx = axes[1]
        for col in metric_cols:
            mx.plot(ep, log[col], label=_metric_label(col), **style)
        percent = metric_cols[0] in dict(_PERCENT_METRICS)
        mx.set_ylabel("validation NME (%)" if percent else "validation error (px)")
        mx.set_xlabel("epoch")
        mx.set_title("validation metrics")

    if best_i is not None:
        be, bv = ep[best_i], log[best_col][best_i]
        text = f"best: epoch {be:g}, {_metric_label(best_col)} {bv:.4g}"
        target = axes[1] if best_col in metric_cols else axes[0]
        for a in axes:
            a.axvline(be, color="0.45", linestyle="--", linewidth=1, zorder=0)
        target.plot([be], [bv], marker="*", markersize=13, color="gold", markeredgecolor="black",
                    linestyle="none", zorder=5, label=text)
        if target is not axes[0]:
            axes[0].plot([], [], color="0.45", linestyle="--", linewidth=1, label=f"best epoch ({be:g})")

    for a in axes:
        a.grid(True, alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        if single:
            a.set_xlim(ep[0] - 1, ep[0] + 1)
        a.legend(fontsize=8, loc="best")
    if title is None:
        title = f"{Path(log_csv).parent.name}: {len(ep)} epoch{'s' if len(ep) != 1 else ''}"
    fig.suptitle(title, fontsize=11)
    return _save(fig, out_png)


# --- prediction grid --------------------------------------------------------------------------

def pick_best_worst(scores, n_best: int = 8, n_worst: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the lowest-scoring (best first) and highest-scoring (worst first) samples.

    Samples without a finite score cannot be ranked and are never picked. The two sets never
    overlap: with fewer ranked samples than n_best + n_worst, they are shared in proportion.
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    ranked = np.flatnonzero(np.isfinite(scores))
    ranked = ranked[np.argsort(scores[ranked], kind="stable")]
    n_best, n_worst = max(0, int(n_best)), max(0, int(n_worst))
    m = len(ranked)
    if m < n_best + n_worst:
        nb = math.ceil(m * n_best / (n_best + n_worst)) if n_best + n_worst else 0
        n_best, n_worst = nb, m - nb
    best = ranked[:n_best]
    worst = ranked[::-1][:n_worst]
    return best, worst


def _display_image(img) -> tuple[np.ndarray, str | None]:
    """A uint8 grey / BGR / BGRA image -> (array for imshow, cmap)."""
    img = _to_numpy(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return img, "gray"
    if img.ndim == 3 and img.shape[2] in (3, 4):
        return np.ascontiguousarray(img[:, :, 2::-1]), None  # BGR(A) -> RGB, alpha dropped
    raise ValueError(f"image of shape {img.shape} is neither grey nor BGR")


def _draw_tile(ax, img, pred, truth, mask, schema: Schema | None, title: str) -> None:
    shown, cmap = _display_image(img)
    ax.imshow(shown, cmap=cmap, vmin=0, vmax=255, interpolation="bilinear")
    h, w = shown.shape[:2]
    mask = np.asarray(mask, bool)
    lines = schema.lines if schema is not None else ()
    for pts, colour in ((truth, TRUTH_COLOUR), (pred, PRED_COLOUR)):
        for line in lines:
            idx = [i for i in line if i < len(mask)]
            # break a poly-line at unlabelled points rather than bridging across them
            seg = np.array([pts[i] if mask[i] else (np.nan, np.nan) for i in idx], np.float64)
            if len(seg) > 1:
                ax.plot(seg[:, 0], seg[:, 1], color=colour, alpha=0.35, linewidth=0.8)
    ms = 9 if mask.sum() <= 20 else 4
    ax.scatter(truth[mask, 0], truth[mask, 1], s=ms, c=TRUTH_COLOUR, linewidths=0, zorder=3)
    ax.scatter(pred[mask, 0], pred[mask, 1], s=ms, c=PRED_COLOUR, linewidths=0, zorder=4)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8, pad=2)


def prediction_grid(images, pred, truth, mask, scores, schema: Schema | None, out_png,
                    n_best: int = 8, n_worst: int = 8, title: str | None = None, *,
                    score_fmt: str = "score {:.3g}", score_scale: float = 1.0,
                    columns: int = 8, return_indices: bool = False):
    """Best and worst predictions, in two labelled sections of tiles.

    images: list of uint8 arrays (grey, or BGR as OpenCV reads them; shown as RGB).
    pred, truth: (B, N, 2) pixels in each image; mask: (B, N) labelled points (unlabelled ones are
    not drawn). scores: (B,) lower is better, e.g. per-sample NME from metrics.nme_per_sample,
    or mean pixel errors; each tile's title is "#index " + score_fmt.format(score * score_scale),
    so NME fractions read as percent with score_fmt="NME {:.2f}%", score_scale=100, and scores
    already in percent with score_fmt="NME {:.2f}%" alone.
    Samples with a NaN score are not ranked (and not shown). Truth is green, prediction red,
    schema lines faint. Returns the PNG path, or (path, best_indices, worst_indices) with
    return_indices=True; best is ordered best first, worst is ordered worst first.
    """
    pred = _to_numpy(pred).astype(np.float64)
    truth = _to_numpy(truth).astype(np.float64)
    mask = _to_numpy(mask).astype(bool)
    scores = _to_numpy(scores).astype(np.float64).reshape(-1)
    b = len(images)
    if not (pred.shape[0] == truth.shape[0] == mask.shape[0] == len(scores) == b):
        raise ValueError(f"images ({b}), pred {pred.shape}, truth {truth.shape}, mask {mask.shape} "
                         f"and scores ({len(scores)}) must agree on the batch size")
    best, worst = pick_best_worst(scores, n_best, n_worst)
    unranked = int((~np.isfinite(scores)).sum())

    sections = [(f"Best {len(best)} (lowest score)", best), (f"Worst {len(worst)} (highest score)", worst)]
    sections = [(name, idx) for name, idx in sections if len(idx)]
    columns = max(1, int(columns))
    ncols = max([min(columns, len(idx)) for _, idx in sections] or [1])
    rows = [math.ceil(len(idx) / ncols) for _, idx in sections] or [1]
    tile = 1.75
    fig = plt.figure(figsize=(max(ncols * tile, 4.2), sum(rows) * (tile + 0.25) + 0.45 * len(rows) + 0.5),
                     layout="constrained")
    if title is None:
        title = f"{b} samples" + (f" ({unranked} without a score not ranked)" if unranked else "")
    handles = [Line2D([], [], marker="o", linestyle="-", color=TRUTH_COLOUR, label="truth"),
               Line2D([], [], marker="o", linestyle="-", color=PRED_COLOUR, label="prediction")]
    if not sections:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no sample has a score to rank by", ha="center", va="center")
        fig.suptitle(title, fontsize=11)
        path = _save(fig, out_png)
        return (path, best, worst) if return_indices else path

    subfigs = fig.subfigures(len(sections), 1, height_ratios=rows, squeeze=False)[:, 0]
    for sf, (name, idx), r in zip(subfigs, sections, rows):
        sf.suptitle(name, fontsize=10, fontweight="bold", x=0.0, ha="left")
        axes = sf.subplots(r, ncols, squeeze=False).reshape(-1)
        for ax, i in zip(axes, idx):
            _draw_tile(ax, images[i], pred[i], truth[i], mask[i], schema,
                       f"#{i}  " + score_fmt.format(scores[i] * score_scale))
        for ax in axes[len(idx):]:
            ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.legend(handles=handles, loc="upper right", fontsize=8, ncols=2, frameon=False)
    path = _save(fig, out_png)
    return (path, best, worst) if return_indices else path


# --- first-layer kernels ----------------------------------------------------------------------

def kernels(weight, out_png, title: str | None = None, bgr: bool = True) -> str:
    """The first conv layer's kernels, weight (O, I, k, k): one tile per output channel.

    A kernel with three input channels is shown in colour (the project's networks take BGR
    input, so channels are reversed to RGB unless bgr=False); otherwise the input channels are
    averaged and shown in grey. Each kernel is stretched to its own min..max.
    """
    w = _to_numpy(weight).astype(np.float64)
    if w.ndim != 4:
        raise ValueError(f"expected conv weights (O, I, kh, kw), got shape {w.shape}")
    o, i, kh, kw = w.shape
    colour = i == 3
    if colour:
        tiles = w.transpose(0, 2, 3, 1)  # (O, kh, kw, 3)
        if bgr:
            tiles = tiles[..., ::-1]
    else:
        tiles = w.mean(axis=1)  # (O, kh, kw)
    lo = tiles.reshape(o, -1).min(1)
    hi = tiles.reshape(o, -1).max(1)
    span = hi - lo
    shape = (o,) + (1,) * (tiles.ndim - 1)
    tiles = np.where(span.reshape(shape) > 0,
                     (tiles - lo.reshape(shape)) / np.where(span > 0, span, 1).reshape(shape), 0.5)

    ncols = math.ceil(math.sqrt(o))
    nrows = math.ceil(o / ncols)
    gap = 1
    mh, mw = nrows * (kh + gap) + gap, ncols * (kw + gap) + gap
    mosaic = np.full((mh, mw, 3) if colour else (mh, mw), np.nan)
    for n in range(o):
        r, c = divmod(n, ncols)
        y, x = gap + r * (kh + gap), gap + c * (kw + gap)
        mosaic[y:y + kh, x:x + kw] = tiles[n]

    side = min(7.0, max(2.8, 0.45 * max(ncols, nrows) * max(kh, kw) / 3))
    aspect = mh / mw
    fig, ax = plt.subplots(figsize=(side, side * aspect + 0.45), layout="constrained")
    if colour:
        rgb = np.where(np.isnan(mosaic), 1.0, mosaic)  # white gaps
        ax.imshow(rgb, interpolation="nearest")
    else:
        cmap = plt.get_cmap("gray").with_extremes(bad="white")
        ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    how = "RGB" if colour else ("mean of %d inputs" % i if i > 1 else "grey")
    ax.set_title(f"{title or 'first-layer kernels'}\n{o} x {i} x {kh}x{kw} ({how})", fontsize=9)
    return _save(fig, out_png)


# --- CED curves -------------------------------------------------------------------------------

def ced_curves(curves: dict, out_png, limit: float = 0.08, title: str | None = None) -> str:
    """CED curves: x the NME threshold in %, y the fraction of images at or below it.

    curves maps a label to per-sample NME fractions (NaN samples are left out, as in metrics).
    Each legend entry carries AUC@limit and the failure rate FR@limit (NME > limit).
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.4), layout="constrained")
    for name, nmes in curves.items():
        nmes = _to_numpy(nmes).astype(np.float64).reshape(-1)
        xs, ys = metrics.ced(nmes, limit)
        a = metrics.auc(nmes, limit)
        fr = metrics.failure_rate(nmes, limit)
        n = int(np.isfinite(nmes).sum())
        label = (f"{name}: AUC@{100 * limit:g}% {a:.3f}, FR@{100 * limit:g}% "
                 f"{100 * fr:.1f}% (n={n})")
        ax.plot(100 * xs, ys, linewidth=1.8, label=label)
    ax.set_xlim(0, 100 * limit)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("NME (%)")
    ax.set_ylabel("fraction of images")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "cumulative error distribution", fontsize=11)
    if curves:
        ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out_png)


# --- per-point errors -------------------------------------------------------------------------

_FAMILIES = (("brow", "brow"), ("eye", "eye"), ("pupil", "eye"), ("nos", "nose"), ("mouth", "mouth"),
             ("lip", "mouth"), ("jaw", "jaw"), ("chin", "jaw"))


def point_family(name: str) -> str:
    """A point name -> its face part (brow, eye, nose, mouth, jaw or other), for colouring."""
    low = name.lower()
    for key, fam in _FAMILIES:  # "brow" before "eye": "left_eyebrow_inner_end" is a brow
        if key in low:
            return fam
    return re.sub(r"_\d+$", "", low) or "other"


def per_point_bars(errors, schema: Schema, out_png, ylabel: str = "mean error (px)",
                   title: str | None = None) -> str:
    """Bars of each point's mean error (e.g. metrics.per_point_error), coloured by face part and
    labelled with the schema's point names. NaN (never-labelled) points get no bar."""
    errors = _to_numpy(errors).astype(np.float64).reshape(-1)
    if len(errors) != schema.n:
        raise ValueError(f"{len(errors)} errors for the {schema.n}-point schema {schema.name!r}")
    fams = [point_family(n) for n in schema.names]
    order = list(dict.fromkeys(fams))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour = {f: cycle[k % len(cycle)] for k, f in enumerate(order)}
    x = np.arange(schema.n)
    narrow = schema.n <= 30  # legend to the right of the bars rather than over them
    width = min(16.0, max(4.0, 0.19 * schema.n + 1.2) + (1.4 if narrow else 0))
    fig, ax = plt.subplots(figsize=(width, 3.9), layout="constrained")
    ok = np.isfinite(errors)
    ax.bar(x[ok], errors[ok], color=[colour[f] for f, k in zip(fams, ok) if k], width=0.8)
    if (~ok).any():
        for xi in x[~ok]:
            ax.text(xi, 0, " n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="0.4")
    if ok.any():
        mean = float(errors[ok].mean())
        ax.axhline(mean, color="0.3", linestyle="--", linewidth=1)
    ax.set_xticks(x)
    ax.set_xticklabels(schema.names, rotation=90, fontsize=6 if schema.n > 20 else 8)
    ax.set_xlim(-0.7, schema.n - 0.3)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[f]) for f in order]
    labels = list(order)
    if ok.any():
        handles.append(Line2D([], [], color="0.3", linestyle="--"))
        labels.append(f"mean {mean:.3g}")
    if narrow:
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    else:
        ax.legend(handles, labels, fontsize=7, ncols=min(len(labels), 8), loc="upper left", frameon=False)
    if ok.any():
        ax.set_ylim(0, float(errors[ok].max()) * 1.18 or 1)
    ax.set_title(title or f"per-point error, {schema.name}", fontsize=11)
    return _save(fig, out_png)


def prediction_plots(samples, pred, truth, mask, schema, out: Path, title: str) -> list[str]:
    """Best and worst predictions, and for schemes with eyes the CED and per-point errors."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    if schema.ocular is not None:
        nme = metrics.nme_per_sample(pred, truth, mask, schema)
        scores, fmt = nme * 100, "NME {:.2f}%"
        made.append(ced_curves({title: nme}, out / "ced.png"))
        made.append(per_point_bars(metrics.per_point_error(pred, truth, mask), schema, out / "per_point.png"))
    else:
        scores, fmt = np.nanmean(metrics.point_errors(pred, truth, mask), axis=1), "{:.1f} px"
    made.append(prediction_grid([s.image for s in samples], pred, truth, mask, scores, schema,
                                out / "predictions.png", title=title, score_fmt=fmt))
    return made


def plot_run(run, data=None, split: str = "val", out=None) -> list[str]:
    """The plots of a run folder (`fkp-train plot`): loss curves from log.csv, best.pt's
    first-layer kernels and, with `data`, its best and worst predictions on `split`, the CED
    curve and per-point errors. PNGs go to `out` (default RUN/plots). -> the PNGs written."""
    import torch

    from fkp_live import schemas

    from .checkpoint import CheckpointError, load_model
    from .datasets import KeypointDataset, load_split
    from .inference import predict_dataset

    run = Path(run)
    out = Path(out) if out else run / "plots"
    out.mkdir(parents=True, exist_ok=True)
    made = []
    if (run / "log.csv").exists():
        made.append(loss_curves(run / "log.csv", out / "loss.png"))
    ckpt = run / "best.pt"
    if ckpt.exists():
        model, task = load_model(ckpt)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        made.append(kernels(first.weight.detach().numpy(), out / "kernels.png",
                            title=f"{task.net}: first-layer kernels"))
        if data:
            samples, _ = load_split(task, data, split)
            pred, truth, mask, _ = predict_dataset(model, KeypointDataset(samples, task, None))
            made += prediction_plots(samples, pred, truth, mask, schemas.get(task.schema), out,
                                     f"{task.name}: {split} split")
    elif data:
        raise CheckpointError(f"{run}: no best.pt to predict with")
    return made
