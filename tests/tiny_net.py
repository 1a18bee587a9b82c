"""A tiny 68-point heatmap net for export tests: real layers, seeded weights and BatchNorm
statistics that are not the identity, so that an exported graph computes something."""
from __future__ import annotations

import torch

from train.nets import build_model
from train.tasks import get


def task():
    return get("ibug68").with_(size=(64, 64), net_args={"width": 0.5, "decoder": 16})


def build(seed: int = 0):
    """(task, net in eval mode)."""
    t = task()
    torch.manual_seed(seed)
    model = build_model(t).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return t, model
