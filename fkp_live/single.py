"""One run from its settings: open the source, the tracker and the outputs, run the engine, close
everything (outputs finalised) however the run ends. The `fkp-live` command and the Python API
both run a single source this way:

    >>> import os, tempfile
    >>> from fkp_live.settings import RunSettings
    >>> out = os.path.join(tempfile.mkdtemp(), "demo.csv")
    >>> done = run_single(RunSettings(demo=True, demo_frames=5, csv=out, device="cpu", display=False))
    >>> done.result.frames, len(open(out).read().splitlines())
    (5, 6)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

from .engine import RunResult, run


@dataclass
class SingleRun:
    """What a single run leaves for its report: the (closed) source, the tracker, the result and
    the (closed) outputs."""

    source: object
    tracker: object
    result: RunResult
    sinks: list = field(default_factory=list)


def run_single(settings, *, stop=None, on_tracker: Callable | None = None, on_start: Callable | None = None,
               on_events: Callable | None = None) -> SingleRun:
    """Run `settings` (a checked `RunSettings` with one source, not --videos).

    stop: a StopFlag; a stop before the first frame raises KeyboardInterrupt, one during the run
    ends it after the frame in hand (`result.interrupted`).
    on_tracker(tracker): once the model is loaded, before any output is opened.
    on_start(source, stack) -> progress or None: just before the first frame; `stack` closes what
    it opens (a progress bar) before the outputs; progress(result, n_faces) after every frame.
    on_events(frame, events): when faces come or go (the engine's `on_events`)."""

    def stopped():  # a signal during start-up: end now, before any frame
        if stop is not None and stop.stop:
            raise KeyboardInterrupt

    stopped()
    source = settings.open_source()
    with contextlib.ExitStack() as stack:
        stack.enter_context(source)
        stopped()
        tracker = stack.enter_context(settings.build_tracker())
        stopped()
        if on_tracker is not None:
            on_tracker(tracker)
        sinks = settings.open_sinks(stack, source, tracker.schema)
        # faces carry their analysis when asked for, or when a picture shows the pose
        tracker = settings.with_analysis(tracker, shown=any(getattr(s, "picture", False) for s in sinks))
        with contextlib.ExitStack() as shown:
            progress = on_start(source, shown) if on_start is not None else None
            overlay = settings.overlay(tracker, sinks)
            stopped()
            result = run(source, tracker, sinks, overlay=overlay, max_frames=settings.max_frames, stop=stop,
                         progress=progress, on_events=on_events)
    # the with-block has closed every output (MP4 finalised) before the caller reports
    return SingleRun(source, tracker, result, sinks)
