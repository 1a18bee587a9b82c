"""How long the crop takes inside a running fkp-live: wall and CPU time of each call that cuts a
frame's crops (`Landmarker.prepare_frame`), around the CLI given on the command line.

    python scripts/crop_timing.py --video CLIP -o o.mp4 --csv o.csv --no-display

Prints, over the run, the median and mean milliseconds per call of wall-clock time
(`time.perf_counter`) and of the calling thread's own CPU time (`time.thread_time`), and the
faces per call. Wall time above CPU time is time the thread waited (for a core, for the GIL);
CPU time above what the same warp takes on a warm frame (`fkp-live bench --faces 1`) is memory:
the frame and the warp's tables are not in this core's caches when the model has just run.
"""
from __future__ import annotations

import atexit
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fkp_live.track import landmarker  # noqa: E402

CALLS: list[tuple[float, float, int]] = []
_prepare = landmarker.Landmarker.prepare_frame


def timed(self, frame, crops):
    t0, c0 = time.perf_counter(), time.thread_time()
    out = _prepare(self, frame, crops)
    CALLS.append((time.perf_counter() - t0, time.thread_time() - c0, len(crops)))
    return out


@atexit.register
def report() -> None:
    if not CALLS:
        print("crop_timing: no crops were cut", file=sys.stderr)
        return
    wall = [w * 1e3 for w, _, _ in CALLS]
    cpu = [c * 1e3 for _, c, _ in CALLS]
    faces = statistics.mean(n for _, _, n in CALLS)
    print(f"crop_timing: {len(CALLS)} calls, {faces:.2f} faces per call; ms per call: wall median "
          f"{statistics.median(wall):.3f} mean {statistics.mean(wall):.3f}, CPU median "
          f"{statistics.median(cpu):.3f} mean {statistics.mean(cpu):.3f}", file=sys.stderr)


landmarker.Landmarker.prepare_frame = timed

if __name__ == "__main__":
    from fkp_live.commands import main

    try:
        main(sys.argv[1:])  # not the console entry point, which ends the process before atexit
    except SystemExit as e:
        if e.code not in (0, None):
            raise
