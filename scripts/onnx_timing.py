"""Several ONNX files timed against each other in one process, interleaved, so that a shared host's
drifting speed falls on all of them alike: the runtime's own ONNX Runtime session on one thread
(pool spinning off), batch 1, random input, rounds of 100 reads per file (after 5 thrown away), the
median of the rounds' means printed per file.

    python scripts/onnx_timing.py A.onnx B.onnx [...] [--rounds 15]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from fkp_live.track.landmarker import _session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    runs = []
    for p in a.models:
        s = _session({"cpu": p}, "cpu", 1)[0]  # as the runtime makes it, on one thread
        i = s.get_inputs()[0]
        shape = [1 if isinstance(d, str) or d is None else d for d in i.shape]
        runs.append((p, s, {i.name: np.random.default_rng(0).random(shape).astype(np.float32)}))
    times: dict[str, list[float]] = {p: [] for p, _, _ in runs}
    for _ in range(a.rounds):
        for p, s, feed in runs:
            for _ in range(5):
                s.run(None, feed)
            t = time.perf_counter()
            for _ in range(100):
                s.run(None, feed)
            times[p].append((time.perf_counter() - t) * 10.0)  # ms per read
    for p, t in times.items():
        print(f"{np.median(t):7.3f} ms  {p}")


if __name__ == "__main__":
    main()
