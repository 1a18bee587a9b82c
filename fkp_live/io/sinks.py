"""The sink interface: what every output of a run is, and the error it raises.

A sink is a context manager with `write(frame, faces)`, called once per frame by the run engine
(`fkp_live.engine.run`) in frame order; closing it (also on error or Ctrl-C) finalises what it
wrote. Four class attributes tell the engine how to feed it:

    picture         True: it wants the frame with the overlay drawn (the engine draws it once per
                    frame, for every such sink); False: the frame as decoded
    pixels          True: it reads the frame's own undrawn picture (so the source must make BGR
                    pixels and the overlay draws on a copy)
    threaded        True: the engine may call `write` from a writer thread of its own, through a
                    bounded queue (one thread per sink; a failure is raised at the next write)
    yuv             True (picture sinks): it takes a frame's I420 planes as they are
                    (`Frame.picture_i420`), so the source may leave BGR unmade
    stop_requested  set by a sink that asks the run to end (a window closed by the user)

The outputs of the command line, one module each: `mp4` (annotated H.264 video), `text` (CSV and
JSON Lines), `crops` (eye-aligned face pictures), `window` (a live window); `outputs` holds the
path rules they share (early checks, NAME.partial.EXT staging, the rename into place). A new
output is a subclass of `Sink` with `write` and `close`, added to the list `RunSettings.open_sinks`
builds (fkp_live.settings).
"""
from __future__ import annotations

from . import Closing


class SinkError(Exception):
    """An output cannot be written; the message names the path and what to do.

    exit_code: 2 for a bad output named on the command line (found before any frame), 1 for a
    failure while running (a full disk, a file-size limit, the folder removed)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class Sink(Closing):
    """Base of every output: `write(frame, faces)`; closing (also on error) finalises the file."""

    picture = False  # True: wants frames with the overlay drawn (the run engine draws it once)
    pixels = False  # True: reads the frame's own pixels (so a video source must make them)
    stop_requested = False  # set by a sink that asks the run to end (a window closed by the user)

    def write(self, frame, faces) -> None:
        raise NotImplementedError

