"""The frame type and the one pixel-format converter; the core depends on nothing else here.

    >>> import numpy as np
    >>> from fkp_live.frame import Frame, to_bgr
    >>> Frame(0, 0.0, to_bgr(np.zeros((4, 6), np.uint8))).image.shape
    (4, 6, 3)
"""
from __future__ import annotations

import time
from typing import Callable

import cv2
import numpy as np


class Frame:
    """One picture from a source: BGR uint8 (H, W, 3), its index and presentation time.

    A video source may hand over a frame whose BGR picture is made only when first asked for
    (`convert`), with the decoder's Y plane (`luma`) at once: a run that writes only data (CSV,
    JSON Lines) then never converts a frame it does not detect faces in. With the decoder's whole
    I420 picture (`i420`) too, a run whose outputs take I420 (the overlay, the MP4 encoder) keeps
    the frame in the video's own YUV from decoder to encoder and converts none of it.
    """

    __slots__ = ("index", "pts_seconds", "_image", "source", "luma", "grey", "_convert", "detections",
                 "i420", "yuv_matrix", "lazy", "captured", "taken")

    def __init__(self, index: int, pts_seconds: float | None, image: np.ndarray | None = None,
                 source: str | None = None, luma: np.ndarray | None = None,
                 convert: Callable[[], np.ndarray] | None = None, i420: np.ndarray | None = None,
                 yuv_matrix: str | None = None):
        self.index = index
        self.pts_seconds = pts_seconds  # presentation time; None for stills
        self.captured = time.perf_counter()  # when the source read it (the live outputs' latency)
        self.taken = None  # when the run engine took it up (perf_counter), after any read-ahead
        self._image = image  # BGR uint8, (H, W, 3), C-contiguous
        self.source = source  # file name, for image folders
        # The decoder's Y plane (H, W) where it has one (4:2:0 video): grey for a 1-channel model
        # without converting, and a third of the bytes to read (see grey_from_luma)
        self.luma = luma
        # The whole picture in grey (H, W), made ahead in the reading thread for a 1-channel model
        # when there is no Y plane (cameras, still pictures, the demo): each face's crop is then cut
        # from one byte per pixel instead of three, off the model's thread (Tracker.read_ahead)
        self.grey = None
        self._convert = convert
        # True: handed over as planes, its BGR picture made (if ever) only on demand
        self.lazy = image is None and convert is not None
        # The detector's faces when it ran ahead, in the reading thread (image folders: every
        # picture is detected afresh, so detection overlaps the model); None: not run yet
        self.detections = None
        # The decoder's picture as limited-range I420, (H * 3 / 2, W) uint8 (Y rows, then U and V at
        # half resolution, each packed), from which `convert` makes the BGR one; `luma` is its top
        # (H, W). It is the frame's picture until the BGR one is made (see `picture_i420`).
        # `yuv_matrix`: its colour matrix, "bt601" or "bt709"
        self.i420 = i420
        self.yuv_matrix = yuv_matrix

    @property
    def image(self) -> np.ndarray:
        if self._image is None and self._convert is not None:
            self._image = self._convert()
            self._convert = None
        return self._image

    @property
    def picture_i420(self) -> np.ndarray | None:
        """The I420 picture while it is the frame's picture (no BGR one made yet), else None. What
        is drawn on it shows in the BGR picture made later; once that exists, it is the picture."""
        return self.i420 if self._image is None else None

    @property
    def converted(self) -> bool:
        """Whether the BGR picture exists yet (False: it is made on first use of `image`)."""
        return self._image is not None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) without converting."""
        if self._image is None and self.luma is not None:
            return self.luma.shape[:2]
        return self.image.shape[:2]

    def with_image(self, image: np.ndarray) -> Frame:
        """The same frame with another picture (an overlay drawn on a copy, a morph)."""
        out = Frame(self.index, self.pts_seconds, image, self.source)
        out.captured, out.taken = self.captured, self.taken
        return out

    def __repr__(self) -> str:
        return f"Frame(index={self.index}, pts_seconds={self.pts_seconds}, source={self.source!r})"


# Limited-range luma (16..235) -> full-range grey. On BT.601 4:2:0 video this equals OpenCV's
# BGR -> grey of the decoded BGR frame within one grey level (mean difference 0.16 on s18.mp4).
LUMA_LUT = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)


def grey_from_luma(luma: np.ndarray) -> np.ndarray:
    """Limited-range Y (video luma) -> full-range grey uint8, as cv2's BGR2GRAY gives."""
    return cv2.LUT(luma, LUMA_LUT)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, grey+alpha, BGR, BGRA; 8 or 16 bit, float 0..1, bool) -> BGR uint8.

    A BGR uint8 image comes back as it is (made C-contiguous), so calling it twice costs nothing.
    """
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        elif image.dtype.kind == "f":
            image = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
        elif image.dtype == np.bool_:
            image = image.astype(np.uint8) * 255
        else:
            raise ValueError(f"unsupported image type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    c = image.shape[2]
    if c == 3:
        return np.ascontiguousarray(image)
    if c == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if c == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    if c == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"unsupported channel count {c}")


def to_channels(bgr: np.ndarray, channels: int) -> np.ndarray:
    """A BGR uint8 image -> what a model takes: grey (H, W) for 1 channel, BGR for 3."""
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if channels == 1 else bgr
