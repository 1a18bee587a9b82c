"""Which test-time combination of nets and readings to export: every reading on the validation split.

    python scripts/tta_sweep.py FIRST.pt [OTHER.pt ...] --data ../shared/data/300w [--shift 3]

Crops are cut at FIRST's input size; a net trained at another size reads them resized, as
`fkp-train export --ensemble` builds it (`train.export.Resized`). For each net it takes four
readings, each through the export's own graph pieces: plain (P), mirror (F: the plain and mirror
readings' mean), diagonal shift +-d (S) and both (FS); then prints the validation NME of each
net's units and of every mix of one unit per net, weighted by its readings, with the readings
each costs. Selection is on val only: the test split stays for the chosen model's card.
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from fkp_live import schemas
from train import metrics
from train.checkpoint import load_model
from train.datasets import load_split, to_frame, to_input
from train.export import FlipAverage, Resized, ShiftAverage, crops_of, same_input

UNITS = {"P": 1, "F": 2, "S": 2, "FS": 4}  # readings per unit


@torch.no_grad()
def readings(model, task, x, shift: int) -> dict[str, np.ndarray]:
    """A net's four readings of crops `x` (at the first net's size, which its points are in)."""
    sch = schemas.get(task.schema)
    size = x.shape[-1]
    flip = FlipAverage(model, sch.mirror_array(), size, float(task.augment.get("flip_shift", 0.0) or 0.0),
                       sch.ocular).eval()
    out = {"P": model(x)[0], "F": flip(x)[0], "S": ShiftAverage(model, shift, size)(x)[0],
           "FS": ShiftAverage(flip, shift, size)(x)[0]}
    return {k: v.numpy() for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--shift", type=int, default=3, help="diagonal shift in FIRST's input pixels")
    ap.add_argument("--split", default="val", choices=["val"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    first, task = load_model(a.checkpoints[0])
    samples, _ = load_split(task, a.data, a.split)
    batch, mats = crops_of(samples, task)
    x = to_input(batch)
    truth = np.stack([np.nan_to_num(s.points) for s in samples]).astype(np.float32)
    mask = np.stack([s.mask for s in samples])
    sch = schemas.get(task.schema)
    size = task.size[0]
    nets = []
    for i, ck in enumerate(a.checkpoints):
        m, t = (first, task) if i == 0 else load_model(ck)
        same_input(task, t, ck, size=False)
        m = m.eval()
        if t.size[0] != size:
            m = Resized(m, t.size[0], size).eval()
        r = {}
        for k in range(0, len(x), 64):
            part = readings(m, t, x[k:k + 64], a.shift)
            for u, v in part.items():
                r.setdefault(u, []).append(v)
        nets.append({u: np.concatenate(v) for u, v in r.items()})
        for u in UNITS:
            nme = metrics.summary(to_frame(nets[-1][u], mats, task.size), truth, mask, sch)["nme_io"]
            print(f"net {i + 1} ({ck}) {u:2s}: {nme:.3f} %")

    def score(pred):
        return metrics.summary(to_frame(pred, mats, task.size), truth, mask, sch)["nme_io"]

    rows = []
    for combo in itertools.product([None, *UNITS], repeat=len(nets)):
        used = [(n, u) for n, u in zip(nets, combo) if u]
        if len(used) < 2:
            continue
        w = np.array([UNITS[u] for _, u in used], float)
        pred = sum(wi * n[u] for wi, (n, u) in zip(w, used)) / w.sum()
        rows.append((score(pred), int(w.sum()), "+".join(f"{i + 1}{u}" for i, u in enumerate(combo) if u)))
    for nme, k, name in sorted(rows)[:20]:
        print(f"{name:14s} {k} readings: {nme:.3f} %")


if __name__ == "__main__":
    main()
