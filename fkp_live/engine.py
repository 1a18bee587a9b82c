"""The run engine (`fkp_live.run`): a source through the tracker into the sinks, one loop for every caller.

The CLI, the benchmark and the Python API all run frames through `run()`; the loop lives here,
not in the CLI, and what it measured comes back as values in a `RunResult`.

    >>> import os, tempfile
    >>> from fkp_live import Tracker, run
    >>> from fkp_live.io.sinks import CsvSink
    >>> from fkp_live.io.sources import DemoSource
    >>> out = os.path.join(tempfile.mkdtemp(), "demo.csv")
    >>> with DemoSource(frames=5) as src, Tracker(device="cpu") as tracker, CsvSink(out, 68) as csv:
    ...     result = run(src, tracker, [csv])
    >>> result.frames, len(result.ids)
    (5, 1)
"""
from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable

STAGES = ("decode", "detect", "crop", "infer", "smooth", "draw", "write")


@dataclass
class RunResult:
    """What a run did: counts, wall time, and seconds per stage summed over its frames."""

    frames: int = 0
    faces: int = 0
    frames_with_face: int = 0
    seconds: float = 0.0
    interrupted: bool = False  # ended by a StopFlag (Ctrl-C, SIGTERM)
    quit: bool = False  # a sink asked to stop (the window closed, q or Esc)
    ids: set = field(default_factory=set)
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def ms_per_frame(self) -> dict[str, float]:
        """Milliseconds per frame for each stage that ran, in pipeline order."""
        n = max(self.frames, 1)
        return {s: 1000.0 * self.stage_seconds[s] / n for s in STAGES if s in self.stage_seconds}


class StopFlag:
    """Set by the first Ctrl-C / SIGTERM: the loop ends after the frame in hand, so every output is
    closed properly. A second signal raises KeyboardInterrupt at once (outputs are still closed)."""

    def __init__(self) -> None:
        self.stop = False
        self.signal: int | None = None
        self._old: dict = {}

    def _handler(self, signum, _frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop, self.signal = True, signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def run(source: Iterable, tracker, sinks=(), *, overlay: Callable | None = None, still: bool | None = None,
        max_frames: int | None = None, stop: StopFlag | None = None,
        progress: Callable | None = None, on_events: Callable | None = None) -> RunResult:
    """Read every frame of `source`, track it, and hand `(frame, faces)` to each sink.

    overlay: `overlay(frame, faces) -> frame` draws the picture the sinks with `picture = True`
    receive (drawn once per frame, on a copy); the others get the frame as decoded.
    still: frames are unrelated pictures (default: the source's `still`): no tracking between them.
    progress(result, n_faces) after each frame; on_events(frame, events) when faces come or go.
    The sinks are not closed here: open them in a `with` block around the call.
    """
    res = RunResult()
    st = res.stage_seconds
    sinks = list(sinks)
    pictures = [s for s in sinks if getattr(s, "picture", False)]
    data = [s for s in sinks if not getattr(s, "picture", False)]
    still = getattr(source, "still", False) if still is None else still
    it = iter(source)
    t_start = time.perf_counter()
    while True:
        if stop is not None and stop.stop:
            res.interrupted = True
            break
        if max_frames is not None and res.frames >= max_frames:
            break
        t0 = time.perf_counter()
        try:
            frame = next(it)
        except StopIteration:
            break
        st["decode"] += time.perf_counter() - t0
        tracked = tracker.track(frame, still=still)
        for k, v in tracked.seconds.items():
            st[k] += v
        faces = tracked.faces
        if on_events is not None and tracked.events:
            on_events(frame, tracked.events)
        shown = frame
        if pictures and overlay is not None:
            t1 = time.perf_counter()
            shown = overlay(frame, faces)
            st["draw"] += time.perf_counter() - t1
        t2 = time.perf_counter()
        for s in data:
            s.write(frame, faces)
        for s in pictures:
            s.write(shown, faces)
            res.quit |= bool(s.stop_requested)
        st["write"] += time.perf_counter() - t2
        res.frames += 1
        res.faces += len(faces)
        res.frames_with_face += bool(faces)
        res.ids.update(f.id for f in faces)
        if progress is not None:
            progress(res, len(faces))
        if res.quit:
            break
    res.seconds = time.perf_counter() - t_start
    return res
