"""A model's predictions over a dataset, in image pixels: the one pass that evaluation, the
run plots, the seeds' two-model answer and `fkp-train predict` all read."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from .datasets import KeypointDataset, to_frame


@torch.no_grad()
def predict_dataset(model, ds: KeypointDataset, batch: int = 64, device="cpu", loss_fn=None):
    """Run a model over a dataset: (pred px, truth px, mask, presence prob), in image pixels.

    With `loss_fn`, the same pass also gives the mean loss per sample (a fifth value).
    """
    model.eval()
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=0)
    preds, confs, mats, loss = [], [], [], 0.0
    for b in loader:
        p, c = model(b["image"].to(device))
        if loss_fn is not None:
            loss += float(loss_fn(p, b["points"].to(device), b["mask"].to(device))) * len(p)
        preds.append(p.float().cpu().numpy())
        confs.append(torch.sigmoid(c).float().cpu().numpy())
        mats.append(b["matrix"].numpy())
    pred = to_frame(np.concatenate(preds), np.concatenate(mats), ds.task.size)
    truth = np.stack([np.nan_to_num(s.points) for s in ds.samples]).astype(np.float32)
    mask = np.stack([s.mask for s in ds.samples])
    out = (pred, truth, mask, np.concatenate(confs))
    return out + (loss / max(len(ds), 1),) if loss_fn is not None else out
