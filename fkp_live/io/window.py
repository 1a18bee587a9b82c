"""The live window (cv2.imshow): shows the annotated frames; q, Esc or closing it ends the run."""
from __future__ import annotations

import logging
import os
import sys

import cv2
import numpy as np

from .sinks import Sink

log = logging.getLogger("fkp_live")


def display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink(Sink):
    """A live window (cv2.imshow); q or Esc, or closing the window, asks to stop."""

    picture = True

    def __init__(self, title: str = "fkp-live"):
        self.title = title
        self.enabled = display_available()
        if not self.enabled:
            log.info("no display found: not opening a window (use --no-display to say so)")
            return
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            log.warning("cannot open a window (%s); going on without one", str(e).strip().splitlines()[-1])
            self.enabled = False

    def write(self, frame, faces=()) -> None:
        if not self.show(frame.image):
            self.stop_requested = True

    def show(self, image: np.ndarray) -> bool:
        """Show a frame; False when the user asked to quit."""
        if not self.enabled:
            return True
        cv2.imshow(self.title, image)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:
            return False

    def close(self) -> None:
        if self.enabled:
            try:
                cv2.destroyWindow(self.title)
            except cv2.error:
                pass
