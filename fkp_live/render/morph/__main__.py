"""`python -m fkp_live.render.morph --bench VIDEO TARGET`: the live morph's cost, measured."""
from __future__ import annotations

import json

from .live import benchmark


def _main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m fkp_live.render.morph",
                                 description="Benchmark the live morph: tracker-only vs tracker + morph, MP4 written.")
    ap.add_argument("--bench", nargs=2, metavar=("VIDEO", "TARGET"), required=True)
    ap.add_argument("--frames", type=int, default=None, help="at most this many frames (default: all)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.5)
    a = ap.parse_args(argv)
    r = benchmark(a.bench[0], a.bench[1], a.frames, a.rounds, a.alpha)
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
