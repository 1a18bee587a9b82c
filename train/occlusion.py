"""How well per-point confidence tells hidden points from visible ones: synthetic occluders on the
test split's faces, and the AUC of the runtime's `point_confidence` between the two.

Each test face is cut with the card's crop convention from its true points (as `fkp-train export`
measures), and a rectangle of blurred noise (a random grey level, sides 30-50 % of the crop) is
pasted on it at a random place; the points whose true position falls inside it are the hidden
ones. `repeats` occluders per face, each on its own copy. The AUC is the probability that a
visible point scores higher than a hidden one: pooled over every point, and per point index
(the 68 points differ in how sure the net is of them even unhidden; the mean of their AUCs).

    python -m train.occlusion /tmp/ibug68-pc.onnx --data ../shared/data/300w
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import cv2
import numpy as np


def auc(score: np.ndarray, hidden: np.ndarray) -> float:
    """P(a visible point's score > a hidden one's), ties counted half (Mann-Whitney U)."""
    score, hidden = np.asarray(score, np.float64).ravel(), np.asarray(hidden, bool).ravel()
    n_vis, n_hid = int((~hidden).sum()), int(hidden.sum())
    if not n_vis or not n_hid:
        raise ValueError("the AUC needs both visible and hidden points")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s = score[order]
    # average ranks over ties
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[~hidden].sum() - n_vis * (n_vis + 1) / 2) / (n_vis * n_hid))


def occlude(crops: np.ndarray, truth_px: np.ndarray, rng: np.random.Generator):
    """A copy of each (S, S, C) uint8 crop with one noise rectangle on it, and which of its true
    points (crop pixels, (B, N, 2)) the rectangle hides (B, N)."""
    out = crops.copy()
    s = crops.shape[1]
    hidden = np.zeros(truth_px.shape[:2], bool)
    for b in range(len(out)):
        w, h = (rng.uniform(0.3, 0.5, 2) * s).astype(int)
        x0 = int(rng.uniform(0.1 * s, 0.9 * s - w))
        y0 = int(rng.uniform(0.1 * s, 0.9 * s - h))
        tex = cv2.GaussianBlur(rng.normal(rng.uniform(60, 200), 25, (h, w)).astype(np.float32), (0, 0), 2)
        out[b, y0:y0 + h, x0:x0 + w, :] = np.clip(tex, 0, 255).astype(np.uint8)[..., None]
        x, y = truth_px[b, :, 0], truth_px[b, :, 1]
        hidden[b] = (x >= x0) & (x < x0 + w) & (y >= y0) & (y < y0 + h)
    return out, hidden


def measure(model: str, data: str, split: str = "test", repeats: int = 3, limit: int | None = None,
            seed: int = 0) -> dict:
    """The confidence of visible and hidden points under synthetic occluders, and their AUCs."""
    from fkp_live.track.landmarker import Landmarker

    from .datasets import load_split
    from .export import crops_of
    from .tasks import get

    lm = Landmarker(model, device="cpu", point_confidence=True)
    card = lm.card
    task_name = card.training.get("task", {}).get("name", card.schema)
    task = dataclasses.replace(get(task_name), size=(card.input_size, card.input_size),
                               crop_scale=card.crop_scale, crop_rotate=card.crop_rotate)
    samples, _ = load_split(task, data, split)
    samples = samples[:limit]
    crops, mats = crops_of(samples, task)
    truth = np.stack([np.nan_to_num(s.points, nan=-1e6) for s in samples]).astype(np.float64)
    truth_px = np.einsum("bij,bnj->bni", mats[:, :2, :2], truth) + mats[:, None, :2, 2]
    labelled = np.stack([s.mask for s in samples]).astype(bool)
    rng = np.random.default_rng(seed)

    def confidence(batch):
        out = [lm.run_all(lm.normalise(batch[i:i + 64]))[2] for i in range(0, len(batch), 64)]
        return np.concatenate(out)

    clear = confidence(crops)
    scores, hid, keep = [], [], []
    for _ in range(repeats):
        occluded, hidden = occlude(crops, truth_px, rng)
        scores.append(confidence(occluded))
        hid.append(hidden)
        keep.append(labelled)
    score, hidden, keep = np.concatenate(scores), np.concatenate(hid), np.concatenate(keep)
    per_point = [auc(score[keep[:, i], i], hidden[keep[:, i], i]) for i in range(score.shape[1])
                 if hidden[keep[:, i], i].sum() >= 5 and (~hidden[keep[:, i], i]).sum() >= 5]
    # the same points hidden against themselves on the unoccluded crop
    clear_rep = np.concatenate([clear] * repeats)
    paired = auc(np.concatenate([clear_rep[hidden & keep], score[hidden & keep]]),
                 np.r_[np.zeros((hidden & keep).sum(), bool), np.ones((hidden & keep).sum(), bool)])
    return {
        "model": str(lm.onnx_path), "split": split, "faces": len(samples), "repeats": repeats,
        "hidden_points": int((hidden & keep).sum()), "visible_points": int((~hidden & keep).sum()),
        "auc": round(auc(score[keep], hidden[keep]), 4),
        "auc_per_point_mean": round(float(np.mean(per_point)), 4),
        "auc_hidden_vs_same_points_clear": round(paired, 4),
        "mean_visible": round(float(score[~hidden & keep].mean()), 4),
        "mean_hidden": round(float(score[hidden & keep].mean()), 4),
        "mean_clear": round(float(clear[labelled].mean()), 4),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.occlusion", description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="an .onnx with the point_confidence output (python -m train.point_confidence)")
    ap.add_argument("--data", required=True, help="the task's dataset, e.g. ../shared/data/300w")
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--repeats", type=int, default=3, help="occluders per face (each on its own copy)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from fkp_live.card import ModelError

    try:
        res = measure(args.model, args.data, args.split, args.repeats, seed=args.seed)
    except (ModelError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
