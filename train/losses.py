"""Point losses, all masked: an unlabelled point costs nothing and sends no gradient."""
from __future__ import annotations

import math

import torch


def _masked_mean(per_point: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """per_point (B, N), mask (B, N) -> mean over labelled points (0 when none is labelled)."""
    m = mask.to(per_point.dtype)
    return (per_point * m).sum() / m.sum().clamp_min(1.0)


def masked_mse(pred, target, mask):
    """Mean squared coordinate error over labelled points."""
    d = torch.where(mask[..., None], pred - target, torch.zeros_like(pred))
    return _masked_mean((d * d).mean(-1), mask)


def masked_l1(pred, target, mask):
    d = torch.where(mask[..., None], pred - target, torch.zeros_like(pred))
    return _masked_mean(d.abs().mean(-1), mask)


def masked_wing(pred, target, mask, w: float = 0.04, eps: float = 0.008):
    """Wing loss (Feng et al. 2018) on coordinates given as fractions of the input.

    Defaults are w = 5 px and eps = 1 px at a 128-pixel input: log-shaped for small errors, so
    the many nearly-right points keep pulling once the large errors are gone.
    """
    d = torch.where(mask[..., None], pred - target, torch.zeros_like(pred))
    return _masked_mean(_wing(d, w, eps).sum(-1), mask)


def _wing(d, w: float, eps: float):
    """The wing function of each error component: w ln(1 + |d|/eps) below w, |d| - C above."""
    d = d.abs()
    c = w - w * math.log(1 + w / eps)
    return torch.where(d < w, w * torch.log1p(d / eps), d - c)


def heatmap_ce(logits, target, mask, sigma: float = 1.0):
    """Cross-entropy between each heatmap's softmax and a Gaussian around its label (DSNT-style).

    `logits` (B, N, h, w), `target` (B, N, 2) fractions of the input, cell centres at (i + 0.5) / w
    as in the soft-argmax; `sigma` in cells. The coordinate loss alone lets probability spread over
    the map (soft-argmax only sees its mean, pulled towards the centre by far-off mass); this keeps
    each map one peak where the point is.
    """
    b, n, h, w = logits.shape
    xs = torch.arange(w, device=logits.device, dtype=logits.dtype) + 0.5
    ys = torch.arange(h, device=logits.device, dtype=logits.dtype) + 0.5
    gx = torch.exp(-0.5 * ((xs - target[..., 0:1] * w) / sigma) ** 2)  # (B, N, w)
    gy = torch.exp(-0.5 * ((ys - target[..., 1:2] * h) / sigma) ** 2)  # (B, N, h)
    t = gy[..., :, None] * gx[..., None, :]
    t = t / t.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    logp = torch.log_softmax(logits.reshape(b, n, h * w), dim=-1).reshape(b, n, h, w)
    ce = -(t * logp).sum(dim=(-2, -1))
    return _masked_mean(torch.where(mask, ce, torch.zeros_like(ce)), mask)


def heatmap_axes(logits: torch.Tensor, floor: float = 0.25):
    """Each heatmap's principal axes and how much its spread along the major one is ambiguity.

    `logits` (B, N, h, w) -> (u (B, N, 2) the major axis as a unit vector in fraction
    coordinates, k (B, N) in [floor, 1]): the ratio of the distribution's variance across the
    axis to its variance along it (1 for a round peak, small for a peak drawn out along a
    contour; on the 176 px net's validation maps, median 0.56 at the jaw, 0.8 at the eyes). No
    gradient flows through either: the net cannot lower the loss by widening its maps."""
    with torch.no_grad():
        b, n, h, w = logits.shape
        p = torch.softmax(logits.reshape(b, n, h * w).float(), dim=-1).reshape(b, n, h, w)
        xs = (torch.arange(w, device=p.device, dtype=p.dtype) + 0.5) / w
        ys = (torch.arange(h, device=p.device, dtype=p.dtype) + 0.5) / h
        px, py = p.sum(2), p.sum(3)  # (B, N, w), (B, N, h)
        mx, my = (px * xs).sum(-1), (py * ys).sum(-1)
        vxx = (px * xs * xs).sum(-1) - mx * mx
        vyy = (py * ys * ys).sum(-1) - my * my
        vxy = (p * ys[:, None] * xs[None, :]).sum((-2, -1)) - mx * my
        half_tr, half_diff = (vxx + vyy) / 2, (vxx - vyy) / 2
        r = torch.sqrt(half_diff * half_diff + vxy * vxy)
        c = 0.25 / (w * h)  # half a cell squared: a peak narrower than that counts as round
        k = (((half_tr - r).clamp_min(0) + c) / (half_tr + r + c)).clamp(floor, 1.0)
        theta = 0.5 * torch.atan2(2 * vxy, vxx - vyy)
        u = torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)
    return u.to(logits.dtype), k.to(logits.dtype)


def masked_wing_axes(pred, target, mask, heatmaps=None, floor: float = 0.25, w: float = 0.04, eps: float = 0.008):
    """The wing loss on each error split along its heatmap's principal axes, the part along the
    major axis scaled by the ratio of the variances (`heatmap_axes`): where the net's own map is
    drawn out along a contour (the jaw, the brows), the labels' position along it is ambiguous and
    counts less; a round peak is scored as by `masked_wing` (in rotated axes). Without
    `heatmaps` (validation) it is `masked_wing`."""
    if heatmaps is None:
        return masked_wing(pred, target, mask, w, eps)
    u, k = heatmap_axes(heatmaps, floor)
    e = torch.where(mask[..., None], pred - target, torch.zeros_like(pred))
    along = (e * u).sum(-1) * k
    across = e[..., 1] * u[..., 0] - e[..., 0] * u[..., 1]
    return _masked_mean(_wing(torch.stack([along, across], dim=-1), w, eps).sum(-1), mask)


LOSSES = {"mse": masked_mse, "l1": masked_l1, "wing": masked_wing, "wing-axes": masked_wing_axes}
# the losses that also read the batch's heatmap logits (a fourth argument, training only)
READS_HEATMAPS = frozenset({"wing-axes"})


def get(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}") from None
