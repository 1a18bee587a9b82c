"""Which test-time combination of nets and readings to export: every reading on the validation split.

    python scripts/tta_sweep.py FIRST.pt [OTHER.pt ...] --data ../shared/data/300w [--shift 3]

Crops are cut at FIRST's input size; a net trained at another size reads them resized, as
`fkp-train export --ensemble` builds it (`train.export.Resized`). For each net it takes four
readings, each through the export's own graph pieces: plain (P), mirror (F: the plain and mirror
readings' mean), diagonal shift +-d (S) and both (FS); then prints the validation NME of each
net's units and of every mix of one unit per net, weighted by its readings, with the readings
each costs; a mix such as 1F+2P exports as `fkp-train export FIRST.pt --ensemble OTHER.pt
--readings F,P --shift-average d` (and its pixels, in 128x128 readings: about what it costs on a CPU). Selection is on val only: the test split stays for the chosen model's card.
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
from train.export import READINGS as UNITS, crops_of, load_members, read_as


@torch.no_grad()
def readings_of(model, task, x, shift: int) -> dict[str, np.ndarray]:
    """A net's four readings of crops `x` (at the first net's size, which its points are in),
    through the graphs `fkp-train export --readings` builds."""
    size = x.shape[-1]
    return {u: read_as(model, u, task, size, shift)(x)[0].numpy() for u in UNITS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--shift", type=int, default=3, help="diagonal shift in FIRST's input pixels")
    ap.add_argument("--split", default="val", choices=["val"])
    ap.add_argument("--top", type=int, default=25, help="mixes printed, best first")
    ap.add_argument("--max-cost", type=float, default=None,
                    help="only mixes of at most this many 128 px readings' pixels (4.8: about 5 ms of INT8 on a 2-core CPU, at about 1 ms a 128 px reading)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    first, task = load_model(a.checkpoints[0])
    samples, _ = load_split(task, a.data, a.split)
    batch, mats = crops_of(samples, task)
    x = to_input(batch)
    truth = np.stack([np.nan_to_num(s.points) for s in samples]).astype(np.float32)
    mask = np.stack([s.mask for s in samples])
    sch = schemas.get(task.schema)

    def score(pred):
        return metrics.summary(to_frame(pred, mats, task.size), truth, mask, sch)["nme_io"]

    nets, work = [], []  # work: one reading's pixels, in 128x128 crops (a rough cost)
    members = [(a.checkpoints[0], first.eval(), task)] + load_members(task, a.checkpoints[1:])
    for i, (ck, m, t) in enumerate(members):
        work.append((t.size[0] / 128) ** 2)
        r = {}
        for k in range(0, len(x), 64):
            part = readings_of(m, t, x[k:k + 64], a.shift)
            for u, v in part.items():
                r.setdefault(u, []).append(v)
        nets.append({u: np.concatenate(v) for u, v in r.items()})
        for u in UNITS:
            print(f"net {i + 1} ({ck}) {u:2s}: {score(nets[-1][u]):.3f} %")

    rows = []
    for combo in itertools.product([None, *UNITS], repeat=len(nets)):
        used = [(n, u, c) for n, u, c in zip(nets, combo, work) if u]
        cost = sum(UNITS[u] * c for _, u, c in used)
        if not used or (a.max_cost is not None and cost > a.max_cost):
            continue
        w = np.array([UNITS[u] for _, u, _ in used], float)
        pred = sum(wi * n[u] for wi, (n, u, _) in zip(w, used)) / w.sum()
        rows.append((score(pred), int(w.sum()), cost, "+".join(f"{i + 1}{u}" for i, u in enumerate(combo) if u)))
    for nme, k, cost, name in sorted(rows)[:a.top]:
        print(f"{name:14s} {k} readings ({cost:.1f}x a 128 px reading): {nme:.3f} %")


if __name__ == "__main__":
    main()
