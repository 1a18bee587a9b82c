"""train.plots: every plot writes a sensible PNG from synthetic data; the grid picks correctly."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from fkp_live import schemas
from train import metrics, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def check_png(path, w_range, h_range, min_bytes=2000):
    w, h = png_size(path)
    assert w_range[0] <= w <= w_range[1], f"width {w} not in {w_range}"
    assert h_range[0] <= h <= h_range[1], f"height {h} not in {h_range}"
    from pathlib import Path

    assert Path(path).stat().st_size >= min_bytes


LOG_HEADER = ("epoch,lr,train_loss,val_loss,val_n,val_mean_px,val_mae_px,val_rmse_px,val_nme_io,"
              "val_nme_ip,val_auc@0.08,val_fr@0.08,val_presence,seconds\n")


def write_log(path, n_epochs, nme=True):
    rng = np.random.default_rng(1)
    header = LOG_HEADER if nme else "epoch,lr,train_loss,val_loss,val_n,val_mean_px,val_mae_px,val_rmse_px,seconds\n"
    lines = [header]
    for e in range(1, n_epochs + 1):
        tl, vl = 1.0 / e + 0.05, 1.1 / e + 0.08 + 0.01 * rng.random()
        px = 20.0 / e + 2 + rng.random()
        row = [e, 1e-3, tl, vl, 50, px, 0.7 * px, 1.2 * px]
        if nme:
            row += [px * 1.5, px * 2.0, 0.5, 10.0, 0.9]
        row += [3.2]
        lines.append(",".join(str(v) for v in row) + "\n")
    path.write_text("".join(lines))
    return path


def synthetic_batch(b=12, n=68, size=96, colour_every=2, seed=0):
    rng = np.random.default_rng(seed)
    images, truth, pred = [], [], []
    for i in range(b):
        img = rng.integers(40, 200, (size, size), dtype=np.uint8)
        if colour_every and i % colour_every:
            img = np.stack([img, img // 2, img // 3], -1)  # BGR
        images.append(img)
        t = rng.uniform(10, size - 10, (n, 2))
        truth.append(t)
        pred.append(t + rng.normal(0, 0.5 + 0.4 * i, t.shape))
    return images, np.array(pred), np.array(truth), np.ones((b, n), bool)


def test_loss_curves(tmp_path):
    log = write_log(tmp_path / "log.csv", 25)
    out = plots.loss_curves(log, tmp_path / "loss.png")
    assert out == str(tmp_path / "loss.png")
    check_png(out, (700, 1600), (300, 700))


def test_loss_curves_one_row_and_pixel_metrics(tmp_path):
    log = write_log(tmp_path / "log.csv", 1, nme=False)
    check_png(plots.loss_curves(log, tmp_path / "loss1.png"), (700, 1600), (300, 700))


def test_loss_curves_resumed_duplicate_epoch(tmp_path):
    log = write_log(tmp_path / "log.csv", 4)
    text = log.read_text().splitlines(keepends=True)
    log.write_text("".join(text + [text[-1]]))  # epoch 4 logged twice
    parsed = plots.read_log(log)
    assert list(parsed["epoch"]) == [1, 2, 3, 4]
    check_png(plots.loss_curves(log, tmp_path / "loss.png", metric="rmse_px"), (700, 1600), (300, 700))


def test_loss_curves_unknown_metric(tmp_path):
    log = write_log(tmp_path / "log.csv", 3)
    with pytest.raises(KeyError):
        plots.loss_curves(log, tmp_path / "x.png", metric="nme_xx")


def test_pick_best_worst():
    scores = np.array([0.5, 0.1, np.nan, 0.9, 0.3, 0.7, 0.2])
    best, worst = plots.pick_best_worst(scores, 2, 2)
    assert list(best) == [1, 6]  # 0.1, 0.2
    assert list(worst) == [3, 5]  # 0.9, 0.7
    # fewer ranked samples (6) than asked for (8 + 8): shared 3 / 3, never overlapping, NaN out
    best, worst = plots.pick_best_worst(scores, 8, 8)
    assert list(best) == [1, 6, 4] and list(worst) == [3, 5, 0]
    assert not set(best) & set(worst) and 2 not in set(best) | set(worst)
    best, worst = plots.pick_best_worst(np.array([0.3]), 8, 8)
    assert list(best) == [0] and len(worst) == 0


def test_prediction_grid_best_row_holds_lowest_scores(tmp_path):
    images, pred, truth, mask = synthetic_batch(b=20)
    mask[3, 40:] = False  # no outer eye corner 45: sample 3 gets a NaN NME, never picked
    scores = metrics.nme_per_sample(pred, truth, mask, schemas.IBUG68)
    perm = np.random.default_rng(3).permutation(len(scores))
    images, pred, truth, mask, scores = ([images[i] for i in perm], pred[perm], truth[perm],
                                         mask[perm], scores[perm])  # scores unrelated to index
    assert np.isnan(scores).sum() == 1
    out, best, worst = plots.prediction_grid(images, pred, truth, mask, scores, schemas.IBUG68,
                                             tmp_path / "grid.png", n_best=6, n_worst=6,
                                             return_indices=True)
    check_png(out, (700, 1800), (350, 900), min_bytes=20000)
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.argsort(scores[finite])]
    assert list(best) == list(order[:6])
    assert list(worst) == list(order[::-1][:6])
    assert scores[best].max() < scores[worst].min()
    # the plain call returns just the path
    assert plots.prediction_grid(images, pred, truth, mask, scores, schemas.IBUG68,
                                 tmp_path / "g2.png") == str(tmp_path / "g2.png")


def test_prediction_grid_small_batch_and_nan_scores(tmp_path):
    images, pred, truth, mask = synthetic_batch(b=3, n=15, size=64)
    images[0] = images[0][:, :, None] if images[0].ndim == 2 else images[0]  # (H, W, 1) grey
    scores = np.array([0.05, np.nan, 0.02])
    out, best, worst = plots.prediction_grid(images, pred, truth, mask, scores, schemas.KAGGLE15,
                                             tmp_path / "small.png", title="three",
                                             return_indices=True)
    check_png(out, (300, 1200), (300, 900))
    assert list(best) == [2] and list(worst) == [0]


def test_prediction_grid_rejects_mismatched_batch(tmp_path):
    images, pred, truth, mask = synthetic_batch(b=4, n=5)
    with pytest.raises(ValueError):
        plots.prediction_grid(images[:3], pred, truth, mask, np.ones(4), schemas.FIVE, tmp_path / "x.png")


@pytest.mark.parametrize("shape", [(32, 3, 5, 5), (16, 1, 3, 3), (24, 8, 3, 3)])
def test_kernels(tmp_path, shape):
    w = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    w[0] = 0.25  # a constant kernel must not divide by zero
    out = plots.kernels(w, tmp_path / "k.png")
    check_png(out, (250, 900), (250, 900), min_bytes=1000)


def test_kernels_torch_weight(tmp_path):
    torch = pytest.importorskip("torch")
    conv = torch.nn.Conv2d(3, 8, 3)
    check_png(plots.kernels(conv.weight, tmp_path / "k.png", title="conv1"), (250, 900), (250, 900), 1000)


def test_ced_curves(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 0.015, 200)
    curves = {"model": a, "baseline": np.concatenate([a * 2, [np.nan]])}
    out = plots.ced_curves(curves, tmp_path / "ced.png")
    check_png(out, (500, 900), (350, 700), min_bytes=10000)


@pytest.mark.parametrize("schema", [schemas.IBUG68, schemas.KAGGLE15, schemas.IMM58, schemas.NOSE_TIP])
def test_per_point_bars(tmp_path, schema):
    errors = np.random.default_rng(0).uniform(1, 5, schema.n)
    if schema.n > 1:
        errors[1] = np.nan
    out = plots.per_point_bars(errors, schema, tmp_path / "pp.png")
    check_png(out, (400, 1900), (350, 600))


def test_per_point_bars_wrong_length(tmp_path):
    with pytest.raises(ValueError):
        plots.per_point_bars(np.ones(5), schemas.IBUG68, tmp_path / "x.png")


def test_point_family():
    assert plots.point_family("left_eyebrow_inner_end") == "brow"
    assert plots.point_family("eye_l_3") == "eye"
    assert plots.point_family("nostril_2") == "nose"
    assert plots.point_family("mouth_inner_7") == "mouth"
    assert plots.point_family("jaw_0") == "jaw"
