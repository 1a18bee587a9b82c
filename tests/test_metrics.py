"""train.metrics and train.losses against values worked out by hand (arithmetic in comments)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fkp_live.schemas import Schema
from train import losses, metrics

# A tiny 5-point scheme: two outer eye corners (0, 3) normalise inter-ocular NME; the eye centres
# are the means of (corner, inner corner) pairs, (0, 1) and (2, 3), for inter-pupil NME.
TINY = Schema(
    name="tiny5",
    names=("l_outer", "l_inner", "r_inner", "r_outer", "nose"),
    mirror=(3, 2, 1, 0, 4),
    ocular=((0,), (3,)),
    pupils=((0, 1), (2, 3)),
    lines=((0, 1), (2, 3)),
)


def two_samples():
    """Sample 0: all five points labelled; sample 1: the nose unlabelled and predicted far off."""
    truth = np.array([
        # ocular distance |(40,20)-(10,20)| = 30; pupils (15,20) and (35,20): distance 20
        [(10, 20), (20, 20), (30, 20), (40, 20), (25, 35)],
        # ocular distance |(50,0)-(0,0)| = 50; pupils (7.5,0) and (42.5,0): distance 35
        [(0, 0), (15, 0), (35, 0), (50, 0), (25, 20)],
    ], np.float64)
    offset = np.array([
        # errors: |(3,4)| = 5, 0, |(-6,8)| = 10, 0, |(0,3)| = 3
        [(3, 4), (0, 0), (-6, 8), (0, 0), (0, 3)],
        # errors: |(0,2)| = 2, |(2,0)| = 2, 0, |(0,-4)| = 4; the nose is unlabelled
        [(0, 2), (2, 0), (0, 0), (0, -4), (975, 980)],
    ], np.float64)
    mask = np.array([[True] * 5, [True, True, True, True, False]])
    return truth + offset, truth, mask


def test_point_errors_nan_where_unlabelled():
    pred, truth, mask = two_samples()
    e = metrics.point_errors(pred, truth, mask)
    np.testing.assert_allclose(e[0], [5, 0, 10, 0, 3])
    np.testing.assert_allclose(e[1, :4], [2, 2, 0, 4])
    assert np.isnan(e[1, 4])


def test_nme_ocular_and_pupil_by_hand():
    pred, truth, mask = two_samples()
    # sample 0: mean error (5+0+10+0+3)/5 = 18/5 = 3.6 -> 3.6/30 = 0.12 ; 3.6/20 = 0.18
    # sample 1: mean error (2+2+0+4)/4 = 8/4 = 2 -> 2/50 = 0.04 ; 2/35 = 0.057142857...
    np.testing.assert_allclose(metrics.nme_per_sample(pred, truth, mask, TINY, "ocular"), [0.12, 0.04])
    np.testing.assert_allclose(metrics.nme_per_sample(pred, truth, mask, TINY, "pupil"), [0.18, 2 / 35])


def test_rmse_mae_mean_pixel_error_by_hand():
    pred, truth, mask = two_samples()
    # 18 labelled coordinates (10 in sample 0, 8 in sample 1).
    # squares: sample 0: 9+16, 0+0, 36+64, 0+0, 0+9 = 134 ; sample 1: 0+4, 4+0, 0+0, 0+16 = 24
    # rmse = sqrt((134 + 24) / 18) = sqrt(8.777...) = 2.96273...
    assert metrics.rmse(pred, truth, mask) == pytest.approx(math.sqrt(158 / 18))
    assert metrics.rmse(pred, truth, mask) == pytest.approx(2.962731, abs=1e-6)
    # absolute: sample 0: 3+4+0+0+6+8+0+0+0+3 = 24 ; sample 1: 0+2+2+0+0+0+0+4 = 8 -> 32/18
    assert metrics.mae(pred, truth, mask) == pytest.approx(32 / 18)
    # point errors pooled over 9 labelled points: (5+0+10+0+3) + (2+2+0+4) = 26 -> 26/9
    assert metrics.mean_pixel_error(pred, truth, mask) == pytest.approx(26 / 9)


def test_masked_points_change_nothing():
    pred, truth, mask = two_samples()
    before = metrics.summary(pred, truth, mask, TINY)
    moved = pred.copy()
    moved[1, 4] = (-1e6, 3e5)
    truth2 = truth.copy()
    truth2[1, 4] = (0, 0)  # what nan_to_num makes of an unlabelled truth point
    after = metrics.summary(moved, truth2, mask, TINY)
    assert after == pytest.approx(before)
    np.testing.assert_allclose(metrics.nme_per_sample(moved, truth2, mask, TINY),
                               metrics.nme_per_sample(pred, truth, mask, TINY))
    np.testing.assert_allclose(metrics.per_point_error(moved, truth2, mask),
                               metrics.per_point_error(pred, truth, mask))


def test_sample_without_eye_pair_is_nan_and_left_out_of_summary():
    pred, truth, mask = two_samples()
    # a third sample whose right outer eye corner (3) is unlabelled: no ocular pair, and no
    # complete pupil group (2, 3) either; its other points are predicted 1 px off.
    t3 = np.array([[(0, 0), (10, 0), (20, 0), (30, 0), (15, 10)]], np.float64)
    p3 = t3 + (1.0, 0.0)
    m3 = np.array([[True, True, True, False, True]])
    pred3, truth3 = np.concatenate([pred, p3]), np.concatenate([truth, t3])
    mask3 = np.concatenate([mask, m3])
    nme_o = metrics.nme_per_sample(pred3, truth3, mask3, TINY, "ocular")
    nme_p = metrics.nme_per_sample(pred3, truth3, mask3, TINY, "pupil")
    np.testing.assert_allclose(nme_o[:2], [0.12, 0.04])
    assert np.isnan(nme_o[2]) and np.isnan(nme_p[2])

    s = metrics.summary(pred3, truth3, mask3, TINY)
    # NME from samples 0 and 1 only: (0.12 + 0.04)/2 = 8 % ; (0.18 + 0.0571428)/2 = 11.857 %
    assert s["nme_io"] == pytest.approx(8.0)
    assert s["nme_ip"] == pytest.approx(100 * (0.18 + 2 / 35) / 2)
    # CED over {0.12, 0.04}: 0 below 4 %, 1/2 from 4 % to 8 %: AUC = 0.5 * (0.08-0.04)/0.08 = 0.25
    assert s["auc@0.08"] == pytest.approx(0.25, abs=2e-3)
    # one of the two ranked samples is above 8 %: 50 %
    assert s["fr@0.08"] == pytest.approx(50.0)
    # the pixel metrics do use sample 2 (its 4 labelled points, each 1 px off):
    # pooled point errors 26 + 4 = 30 over 13 points
    assert s["mean_px"] == pytest.approx(30 / 13)
    assert s["n"] == 3


def test_rmse_mae_with_integer_mask():
    pred, truth, mask = two_samples()
    m = mask.astype(np.uint8)
    assert metrics.rmse(pred, truth, m) == pytest.approx(math.sqrt(158 / 18))
    assert metrics.mae(pred, truth, m) == pytest.approx(32 / 18)


def test_schema_without_eyes_has_no_nme():
    nose = Schema(name="nose", names=("nose",), mirror=(0,), ocular=None, pupils=None)
    pred = np.array([[[3.0, 4.0]]])
    truth = np.zeros((1, 1, 2))
    mask = np.ones((1, 1), bool)
    s = metrics.summary(pred, truth, mask, nose)
    assert s["mean_px"] == pytest.approx(5.0)  # |(3,4)| = 5
    assert "nme_io" not in s
    with pytest.raises(ValueError):
        metrics.nme_per_sample(pred, truth, mask, nose)


def test_auc_extremes():
    assert metrics.auc(np.zeros(10)) == pytest.approx(1.0)
    assert metrics.auc(np.full(5, 0.09)) == 0.0
    assert metrics.auc(np.array([0.5, 1.0, np.inf])) == 0.0


def test_auc_staircase_by_hand():
    # NMEs 0, 2, 4, 6 % with a limit of 8 %: the CED is a staircase 1/4, 1/2, 3/4, 1 on the four
    # 2 %-wide steps, so AUC = (0.25 + 0.5 + 0.75 + 1.0) * 0.02 / 0.08 = 2.5 / 4 = 0.625.
    # The 1000-step trapezoid smears each of the 3 inner jumps over one step (0.08/1000), which
    # adds at most 3 * 0.25 * 0.5/1000 = 0.000375: allow 1e-3.
    assert metrics.auc(np.array([0.0, 0.02, 0.04, 0.06])) == pytest.approx(0.625, abs=1e-3)
    # uniform errors on [0, limit]: the CED is the diagonal, AUC = 1/2
    assert metrics.auc(np.linspace(0, 0.08, 2001)) == pytest.approx(0.5, abs=2e-3)
    # NaN samples are left out: same as without them
    assert metrics.auc(np.array([0.0, np.nan, 0.02, 0.04, 0.06])) == pytest.approx(0.625, abs=1e-3)


def test_failure_rate():
    # above the limit (strictly): 0.09 and 0.5 of four ranked samples = 0.5; 0.08 itself passes
    assert metrics.failure_rate(np.array([0.01, 0.08, 0.09, 0.5, np.nan])) == pytest.approx(0.5)
    assert metrics.failure_rate(np.zeros(3)) == 0.0
    assert metrics.failure_rate(np.array([0.2, 0.3]), limit=0.1) == 1.0
    assert math.isnan(metrics.failure_rate(np.array([np.nan])))


def test_ced_monotone_and_bounded():
    rng = np.random.default_rng(0)
    nmes = np.concatenate([rng.gamma(2.0, 0.02, 500), [np.nan, 0.5]])
    xs, ys = metrics.ced(nmes, 0.08)
    assert xs[0] == 0 and xs[-1] == pytest.approx(0.08)
    assert np.all(np.diff(xs) > 0)
    assert np.all(np.diff(ys) >= 0)
    assert 0 <= ys[0] and ys[-1] <= 1
    # the CED at the limit is 1 - failure rate
    assert ys[-1] == pytest.approx(1 - metrics.failure_rate(nmes, 0.08))


def test_per_point_error_by_hand():
    pred, truth, mask = two_samples()
    # point 0: (5 + 2)/2 = 3.5 ; point 2: (10 + 0)/2 = 5 ; nose: only sample 0: 3
    np.testing.assert_allclose(metrics.per_point_error(pred, truth, mask), [3.5, 1, 5, 2, 3])
    # normalised by the inter-ocular distances 30 and 50: point 0 -> (5/30 + 2/50)/2
    pp = metrics.per_point_error(pred, truth, mask, norm=np.array([30.0, 50.0]))
    assert pp[0] == pytest.approx((5 / 30 + 2 / 50) / 2)


# --- losses -----------------------------------------------------------------------------------

def _loss_case():
    # one sample, three points; point 2 is unlabelled and its target is NaN (as unlabelled
    # coordinates are before nan_to_num), its prediction far off
    pred = torch.tensor([[[0.1, 0.2], [0.3, 0.0], [5.0, -5.0]]], requires_grad=True)
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [float("nan"), float("nan")]]])
    mask = torch.tensor([[True, True, False]])
    return pred, target, mask


def test_masked_mse_by_hand_and_masked_grad():
    pred, target, mask = _loss_case()
    loss = losses.masked_mse(pred, target, mask)
    # per point: (0.01 + 0.04)/2 = 0.025, (0.09 + 0)/2 = 0.045 ; mean over 2 labelled = 0.035
    assert loss.item() == pytest.approx(0.035)
    loss.backward()
    # d/dpred of mean_points(mean_xy(d^2)) = 2 d / (2 coords * 2 points) = d / 2
    np.testing.assert_allclose(pred.grad[0, :2].numpy(), [[0.05, 0.1], [0.15, 0.0]], rtol=1e-6)
    assert torch.equal(pred.grad[0, 2], torch.zeros(2))


def test_masked_l1_by_hand_and_masked_grad():
    pred, target, mask = _loss_case()
    loss = losses.masked_l1(pred, target, mask)
    # per point: (0.1 + 0.2)/2 = 0.15, (0.3 + 0)/2 = 0.15 ; mean = 0.15
    assert loss.item() == pytest.approx(0.15)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.equal(pred.grad[0, 2], torch.zeros(2))


def test_wing_formula_by_hand():
    w, eps = 0.04, 0.008
    pred = torch.tensor([[[0.01, 0.1]]], dtype=torch.float64)
    target = torch.zeros_like(pred)
    mask = torch.tensor([[True]])
    # |x| = 0.01 < w:  w ln(1 + 0.01/0.008) = 0.04 ln 2.25 = 0.04 * 0.810930 = 0.0324372
    # |x| = 0.1 >= w:  |x| - C, C = w - w ln(1 + w/eps) = 0.04 - 0.04 ln 6 = -0.0316704
    #                  -> 0.1 + 0.0316704 = 0.1316704
    # summed over the two coordinates of the one point: 0.1641076
    small = 0.04 * math.log(2.25)
    big = 0.1 - (0.04 - 0.04 * math.log(6))
    assert small == pytest.approx(0.0324372, abs=1e-7) and big == pytest.approx(0.1316704, abs=1e-7)
    assert losses.masked_wing(pred, target, mask, w, eps).item() == pytest.approx(small + big)
    assert losses.masked_wing(pred, target, mask, w, eps).item() == pytest.approx(0.1641076, abs=1e-7)
    # continuous at |x| = w: w ln(1 + w/eps) = w - C
    at = torch.tensor([[[w, 0.0]]], dtype=torch.float64)
    assert losses.masked_wing(at, target, mask, w, eps).item() == pytest.approx(w * math.log(1 + w / eps))


def test_masked_wing_masked_grad():
    pred, target, mask = _loss_case()
    loss = losses.masked_wing(pred, target, mask)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.equal(pred.grad[0, 2], torch.zeros(2))
    assert pred.grad[0, 0].abs().sum() > 0


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_losses_ignore_masked_points(name):
    fn = losses.get(name)
    pred, target, mask = _loss_case()
    a = fn(pred, target, mask).item()
    moved = pred.detach().clone()
    moved[0, 2] = torch.tensor([-100.0, 42.0])
    assert fn(moved, target, mask).item() == pytest.approx(a)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_losses_zero_when_nothing_labelled(name):
    fn = losses.get(name)
    pred = torch.randn(2, 4, 2, requires_grad=True)
    target = torch.full((2, 4, 2), float("nan"))
    mask = torch.zeros(2, 4, dtype=torch.bool)
    loss = fn(pred, target, mask)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_unknown_loss():
    with pytest.raises(ValueError):
        losses.get("huber")


def _gaussian_logits(h, w, cx, cy, sx, sy, angle):
    """Log of a Gaussian heatmap (1, 1, h, w) centred at cell (cx, cy), spreads sx along `angle`."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    a = (xs - cx) * c + (ys - cy) * s
    b = -(xs - cx) * s + (ys - cy) * c
    return (-0.5 * ((a / sx) ** 2 + (b / sy) ** 2))[None, None].double()


def test_heatmap_axes_find_the_long_axis_and_the_variance_ratio():
    # drawn out 4:1 (spreads) along 30 degrees: the major axis at 30 degrees, variance ratio ~1/16
    lg = _gaussian_logits(64, 64, 32, 32, 8.0, 2.0, math.radians(30))
    u, k = losses.heatmap_axes(lg, floor=0.0)
    assert abs(abs(float(u[0, 0] @ torch.tensor([math.cos(math.radians(30)), math.sin(math.radians(30))],
                                                  dtype=u.dtype))) - 1) < 1e-4
    assert k.item() == pytest.approx((4 + 0.25) / (64 + 0.25), rel=0.02)  # half a cell squared added
    # a round peak: ratio 1; the floor holds
    assert losses.heatmap_axes(_gaussian_logits(32, 32, 16, 16, 2.0, 2.0, 0.0))[1].item() == pytest.approx(1, abs=1e-3)
    assert losses.heatmap_axes(lg, floor=0.25)[1].item() == 0.25


def test_wing_axes_discounts_the_error_along_the_maps_long_axis_only():
    lg = _gaussian_logits(32, 32, 16, 16, 6.0, 1.5, 0.0)  # drawn out along x
    target = torch.tensor([[[0.5, 0.5]]], dtype=torch.float64)
    mask = torch.tensor([[True]])
    _, k = losses.heatmap_axes(lg, floor=0.1)
    along = torch.tensor([[[0.6, 0.5]]], dtype=torch.float64)
    across = torch.tensor([[[0.5, 0.6]]], dtype=torch.float64)
    # along x: the wing of k * 0.1 (and 0 across); across: the plain wing of 0.1, as masked_wing
    w, eps = 0.04, 0.008
    c = w - w * math.log(1 + w / eps)
    d = k.item() * 0.1
    want = w * math.log1p(d / eps) if d < w else d - c
    assert losses.masked_wing_axes(along, target, mask, lg, floor=0.1).item() == pytest.approx(want, rel=1e-6)
    assert losses.masked_wing_axes(across, target, mask, lg, floor=0.1).item() == pytest.approx(
        losses.masked_wing(across, target, mask).item(), rel=1e-6)
    # no gradient reaches the heatmaps through the axes; the points get one
    lg = lg.clone().requires_grad_(True)
    p = along.clone().requires_grad_(True)
    losses.masked_wing_axes(p, target, mask, lg).backward()
    assert lg.grad is None and p.grad.abs().sum() > 0
    # without heatmaps (validation) it is the plain wing loss
    assert losses.masked_wing_axes(along, target, mask).item() == losses.masked_wing(along, target, mask).item()
