"""The run engine (`fkp_live.run`): a source through the tracker into the sinks, one loop for every caller.

The CLI, the benchmark and the Python API all run frames through `run()`; the loop lives here,
not in the CLI, and what it measured comes back as values in a `RunResult`.

    >>> import os, tempfile
    >>> from fkp_live import Tracker, run
    >>> from fkp_live.io.text import CsvSink
    >>> from fkp_live.io.sources import DemoSource
    >>> out = os.path.join(tempfile.mkdtemp(), "demo.csv")
    >>> with DemoSource(frames=5) as src, Tracker(device="cpu") as tracker, CsvSink(out, 68) as csv:
    ...     result = run(src, tracker, [csv])
    >>> result.frames, len(result.ids)
    (5, 1)
"""
from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from .stopflag import StopFlag  # noqa: F401  (part of the engine's API)

STAGES = ("decode", "grey", "detect", "crop", "infer", "smooth", "post", "analyse", "draw", "write")


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
    # the stages whose seconds were spent in the reading thread, beside the loop (they overlap the
    # model, so they add nothing to the loop's time per frame)
    beside: set = field(default_factory=set)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def ms_per_frame(self) -> dict[str, float]:
        """Milliseconds per frame for each stage that ran, in pipeline order."""
        n = max(self.frames, 1)
        return {s: 1000.0 * self.stage_seconds[s] / n for s in STAGES if s in self.stage_seconds}


_END = object()


class _Prefetch:
    """Iterate a source in a thread into a bounded queue, so decoding (PyAV releases the GIL)
    overlaps the model. Exceptions reach the caller at the frame where they happened."""

    def __init__(self, source: Iterable, depth: int = 4):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iter(source),), name="fkp-decode", daemon=True)
        self._thread.start()

    def _work(self, it) -> None:
        try:
            for item in it:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # handed over to the consumer
            self._put(e)

    def _put(self, item) -> bool:
        """Queue `item`, waiting for room; False once the reader is closed. A put that waits on a
        full queue is let go by `close`, which empties the queue; the next one sees the stop."""
        if self._stop.is_set():
            return False
        self._q.put(item)
        return True

    def __iter__(self):
        return self

    def __next__(self):
        item = self._q.get()
        if item is _END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        # empty the queue, so that a reader waiting to put a frame is let go at once rather than
        # at a poll of the stop flag (which would hold `--max-frames 1` up by the poll's period)
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5.0)


class _Writer:
    """Calls `sink.write` in its own thread through a bounded queue (encoding overlaps the model).
    A failure is raised in the caller at the next write or at close."""

    def __init__(self, sink, depth: int = 4):
        self.sink = sink
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="fkp-write", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._q.get()
            if item is _END:
                return
            if self._error is None:
                try:
                    self.sink.write(*item)
                except BaseException as e:
                    self._error = e

    def write(self, frame, faces) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((frame, faces))

    def close(self) -> None:
        """Wait until every queued frame is written; re-raise a failure."""
        self._q.put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error


def reads_pixels(sinks) -> bool:
    """Whether any of `sinks` reads the frame's own (undrawn) picture (`pixels = True`, --crops):
    the source must then make every frame's picture, and an overlay must draw on a copy."""
    return any(getattr(s, "pixels", False) for s in sinks)


def one_opencv_thread() -> None:
    """For a process that runs the engine: OpenCV's own thread pool off. The engine overlaps the
    stages in its own threads; OpenCV's pool, which spins while it waits for work, only took CPU
    from them (512x512 MP4 + CSV, four alternating pairs: 9.2-10.7 against 10.5-12.0 CPU s;
    README, Speed). Not done by `run()` itself: it would change OpenCV for the caller's own code."""
    import cv2

    cv2.setNumThreads(1)


def run(source: Iterable, tracker, sinks=(), *, overlay: Callable | None = None, still: bool | None = None,
        max_frames: int | None = None, stop: StopFlag | None = None,
        progress: Callable | None = None, on_events: Callable | None = None,
        threads: bool = True) -> RunResult:
    """Read every frame of `source`, track it, and hand `(frame, faces)` to each sink.

    overlay: `overlay(frame, faces) -> frame` draws the picture the sinks with `picture = True`
    receive (drawn once per frame, on a copy); the others get the frame as decoded.
    still: frames are unrelated pictures (default: the source's `still`): no tracking between them.
    progress(result, n_faces) after each frame; on_events(frame, events) when faces come or go.
    threads: decode ahead in a thread (sources that do not read ahead themselves) and write the
    sinks marked `threaded` (the MP4 encoder) in their own thread, each through a bounded queue.
    The sinks are not closed here: open them in a `with` block around the call.
    """
    res = RunResult()
    st = res.stage_seconds
    sinks = list(sinks)
    writers = [_Writer(s) if threads and getattr(s, "threaded", False) else s for s in sinks]
    pictures = [w for w, s in zip(writers, sinks) if getattr(s, "picture", False)]
    data = [w for w, s in zip(writers, sinks) if not getattr(s, "picture", False)]
    still = getattr(source, "still", False) if still is None else still
    if hasattr(source, "lazy_bgr"):
        # nothing downstream needs BGR pixels: the tracker reads grey crops from the video's Y plane
        # and converts only the frames it detects faces in, and the overlay and the MP4 encoder
        # take the decoder's I420 as it is (`yuv`): skip the conversion
        takes_i420 = all(getattr(s, "yuv", False) for s in sinks if getattr(s, "picture", False))
        source.lazy_bgr = (not reads_pixels(sinks) and takes_i420
                           and (not pictures or overlay is None or getattr(overlay, "yuv", False)))
    prefetch = threads and getattr(source, "prefetch", False)
    ahead = getattr(tracker, "read_ahead", None)  # work that does not depend on what is tracked
    # done in the reading thread when there is one (its seconds added to their stages at the end),
    # else by the loop itself
    ahead_st: defaultdict[str, float] = defaultdict(float)
    if prefetch:
        it = _Prefetch(_read_ahead(source, ahead, still, ahead_st) if ahead else source)
    else:
        it = iter(source)
    t_start = time.perf_counter()
    try:
        _loop(it, tracker, res, data, pictures, overlay, still, max_frames, stop, progress, on_events,
              None if prefetch else ahead)
    finally:
        if prefetch:
            it.close()
        for k, v in ahead_st.items():
            st[k] += v
        res.beside.update(ahead_st)
        t0 = time.perf_counter()
        try:
            for w in writers:
                if isinstance(w, _Writer):
                    w.close()  # the frames still queued are written before the sinks close
        finally:
            st["write"] += time.perf_counter() - t0
            res.seconds = time.perf_counter() - t_start
    return res


def _read_ahead(source: Iterable, read_ahead: Callable, still: bool, stages) -> Iterator:
    """Frames with the work that does not depend on tracking done (`Tracker.read_ahead`): in the
    reading thread, the grey picture and a still picture's detection (MediaPipe and OpenCV release
    the GIL) run beside the model on the frame before. Its seconds count in their stages ("grey",
    "detect"), which the result marks as spent beside the loop (`RunResult.beside`)."""
    for frame in source:
        for k, v in read_ahead(frame, still).items():
            stages[k] += v
        yield frame


def _loop(it, tracker, res, data, pictures, overlay, still, max_frames, stop, progress, on_events,
          read_ahead=None) -> None:
    """read_ahead: `Tracker.read_ahead`, called here on each frame when no reading thread did."""
    st = res.stage_seconds
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
        frame.taken = t1 = time.perf_counter()
        st["decode"] += t1 - t0
        if read_ahead is not None:
            for k, v in read_ahead(frame, still).items():
                st[k] += v
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
            res.quit |= bool(getattr(s, "stop_requested", False))
        st["write"] += time.perf_counter() - t2
        res.frames += 1
        res.faces += len(faces)
        res.frames_with_face += bool(faces)
        res.ids.update(f.id for f in faces)
        if progress is not None:
            progress(res, len(faces))
        if res.quit:
            break
