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
    d = torch.where(mask[..., None], pred - target, torch.zeros_like(pred)).abs()
    c = w - w * math.log(1 + w / eps)
    loss = torch.where(d < w, w * torch.log1p(d / eps), d - c)
    return _masked_mean(loss.sum(-1), mask)


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


LOSSES = {"mse": masked_mse, "l1": masked_l1, "wing": masked_wing}


def get(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}") from None
