"""Frame sources: camera, video file, image folder and the built-in demo.

Every source yields `Frame`s whose image is BGR uint8 whatever the input was (greyscale, BGRA,
16-bit, odd sizes), so nothing downstream converts twice.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..frame import Frame, to_bgr
from . import ONE_DECODE_THREAD, Closing
from .planes import i420_of

log = logging.getLogger("fkp_live")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}


class SourceError(Exception):
    """A source cannot be opened or read; the message names it and says what to do.

    exit_code: 2 for bad input (a missing or broken file), 1 for a failure while running (a camera
    that goes away). hint: a key for the caller's own advice ('images', 'video', 'camera',
    'camera_other', 'one_source'): the CLI turns it into the option to use, so nothing here names one."""

    def __init__(self, message: str, exit_code: int = 2, hint: str | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.hint = hint


class Source(Closing):
    """Base: iterate for frames; a context manager that releases the device or file."""

    name: str = "source"
    fps: float | None = None
    size: tuple[int, int] | None = None  # (width, height) when fixed
    length: int | None = None  # frame count when known
    path: Path | None = None  # the media file, for copying its audio
    still: bool = False  # frames are unrelated pictures: no tracking between them
    live: bool = False  # a camera: frames may be dropped, no end
    prefetch: bool = True  # the run engine may read it ahead in a thread (not the camera: it has its own)

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------------
class VideoSource(Source):
    """A video file decoded by PyAV; timestamps are the stream's pts x time_base."""

    def __init__(self, path: str | os.PathLike):
        import av

        self.path = Path(path)
        self.name = str(self.path)
        p = self.path
        if not p.exists():
            raise SourceError(f"video file {p} does not exist; check the path")
        if p.is_dir():
            raise SourceError(f"{p} is a folder, not a video file; read it as a folder of images", hint="images")
        if p.stat().st_size == 0:
            raise SourceError(f"video file {p} is empty (0 bytes); re-copy or re-record it")
        try:
            self._container = av.open(str(p), mode="r")
        except av.error.FFmpegError as e:
            raise SourceError(
                f"{p} is not a video FFmpeg can read ({_av_reason(e)}); it may be truncated or "
                "not a video: re-download or re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise SourceError(f"{p} has no video stream; pass a video file (mp4, mkv, avi, mov, ...)")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame threads: decoding runs beside our processing
        cc = self._stream.codec_context
        self.size = (cc.width, cc.height)
        if 0 < cc.width * cc.height <= ONE_DECODE_THREAD:
            cc.thread_count = 1  # the read-ahead thread is the decoder's one thread
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.time_base = self._stream.time_base
        n = self._stream.frames
        if not n and self._stream.duration and self.time_base and self.fps:
            n = int(round(float(self._stream.duration * self.time_base) * self.fps))
        self.length = n or None
        self.has_audio = bool(self._container.streams.audio)
        self._start = self._stream.start_time
        self.frames_read: int | None = None
        # True: frames come with their Y plane and make their BGR picture only when asked (the run
        # engine sets it when no output shows pictures: a CSV-only run converts detection frames only)
        self.lazy_bgr = False

    def __iter__(self) -> Iterator[Frame]:
        import av

        i = 0
        tb = self.time_base
        start = self._start or 0
        turn = -1  # not known yet: read from the first frame's display matrix
        bad_packets: list = []  # decoder errors of skipped packets
        try:
            for frame in self._decoded(bad_packets):
                if frame.pts is not None and tb is not None:
                    t = float((frame.pts - start) * tb)
                elif self.fps:
                    t = i / self.fps
                else:
                    t = None
                if turn == -1:
                    turn = self._rotation(frame)
                convert, luma, i420, matrix = _converter(frame)
                if turn is not None:
                    yield Frame(i, t, cv2.rotate(convert(), turn))
                elif self.lazy_bgr:
                    yield Frame(i, t, luma=luma, convert=convert, i420=i420, yuv_matrix=matrix)
                else:
                    yield Frame(i, t, convert(), luma=luma, i420=i420, yuv_matrix=matrix)
                i += 1
        except av.error.FFmpegError as e:
            raise SourceError(
                f"video file {self.path} is truncated or corrupt: decoding failed after {i} frames "
                f"({_av_reason(e)}); re-download or re-encode it"
            ) from None
        why = _av_reason(bad_packets[-1]) if bad_packets else ""
        if i == 0:
            raise SourceError(
                f"video file {self.path} has no decodable frames (truncated or empty stream"
                + (f"; {why}" if why else "") + "); re-download or re-encode it"
            )
        if bad_packets:
            log.warning("video file %s: %d packet(s) could not be decoded (%s) and were skipped; it is "
                        "corrupt or cut short", self.path, len(bad_packets), why)
        n = self.length
        if n and i < n - max(2, n // 100):  # the header promised more: the file was cut short
            log.warning("video file %s ended after %d of the %d frames its header promises: it is cut short "
                        "(truncated); the outputs hold the %d frames read", self.path, i, n, i)
        self.frames_read = i

    def _decoded(self, bad: list) -> Iterator:
        """The stream's frames, packet by packet: a packet the decoder rejects (a file cut inside a
        packet, corrupt data) is skipped and noted in `bad`, as players do, so the frames before and
        after it are kept. A container that cannot be read further still raises."""
        import av

        for packet in self._container.demux(self._stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as e:
                bad.append(e)
                continue
            yield from frames

    def _rotation(self, frame) -> int | None:
        """The cv2.rotate code that shows the frame the way players do (its display matrix), or None."""
        try:
            deg = int(round(frame.rotation or 0))
        except (AttributeError, TypeError, ValueError):
            return None
        k = round(deg / 90) % 4  # quarter turns counter-clockwise
        if not k:
            return None
        w, h = frame.width, frame.height
        if k % 2:
            self.size = (h, w)
        log.info("video %s is stored %dx%d with a display rotation of %d degrees: frames are turned to "
                 "%dx%d as players show them, and points are given in that picture",
                 self.path, w, h, deg, *(self.size if k % 2 else (w, h)))
        return {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}[k]

    def close(self) -> None:
        self._container.close()


_BT601 = {2, 5, 6}  # unspecified, BT470BG, SMPTE170M: the matrix OpenCV's I420 conversion uses
_BT709 = 1


def _converter(frame) -> tuple[Callable[[], np.ndarray], np.ndarray | None, np.ndarray | None, str | None]:
    """A decoded frame -> (a function making its BGR image, its limited-range Y plane or None,
    its I420 planes or None, their matrix: "bt601", "bt709" or None).

    The planes are read out now (one copy of them); the BGR picture can wait. The Y plane comes for
    4:2:0 video of even size. The I420 planes come where their matrix is known and the range is
    limited (BT.601 or untagged, as OpenCV converts it; BT.709, as most HD video is tagged): the
    overlay and the MP4 encoder then take them as they are (`Frame.i420`)."""
    def swscale() -> np.ndarray:
        return to_bgr(frame.to_ndarray(format="bgr24"))

    if frame.format.name != "yuv420p" or (frame.width | frame.height) & 1 or frame.color_range == 2:
        return swscale, None, None, None
    i420 = i420_of(frame)
    luma = i420[:frame.height]
    if frame.colorspace in _BT601:
        # OpenCV's I420 conversion is ~2.5x faster than swscale's default path and rounds better;
        # it applies to the common case (limited-range BT.601 4:2:0)
        return (lambda: cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)), luma, i420, "bt601"
    if frame.colorspace == _BT709:
        return swscale, luma, i420, "bt709"  # swscale converts by the frame's own matrix
    return swscale, luma, None, None


def _av_reason(e: Exception) -> str:
    s = getattr(e, "strerror", None) or str(e)
    return s.split(":")[0].strip() if "No such file" in s else s.strip()


# ----------------------------------------------------------------------------------------------
class ImageFolderSource(Source):
    """Every image of a folder, sorted by name, one frame each; unreadable files are skipped."""

    still = True

    def __init__(self, folder: str | os.PathLike):
        self.path = None
        self.folder = Path(folder)
        self.name = str(self.folder)
        if not self.folder.exists():
            raise SourceError(f"image folder {self.folder} does not exist; check the path")
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder} is not a folder; read a video file as a video", hint="video")
        self.files = sorted(
            p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not self.files:
            raise SourceError(
                f"image folder {self.folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        self.length = len(self.files)
        self.skipped: list[tuple[str, str]] = []  # (file name, reason)

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        for p in self.files:
            try:
                img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
                why = "not a readable image" if img is None else None
            except cv2.error as e:
                img, why = None, str(e).strip().splitlines()[-1]
            if img is None:
                self.skipped.append((p.name, why))
                log.warning("skipped %s: %s", p, why)
                continue
            yield Frame(i, None, to_bgr(img), source=p.name)
            i += 1
        if i == 0:
            raise SourceError(f"none of the {len(self.files)} images in {self.folder} could be read")


# ----------------------------------------------------------------------------------------------
class CameraSource(Source):
    """A camera read by its own thread into a small queue that drops the oldest frame, so a slow
    frame downstream never stalls capture and the newest picture is processed next."""

    live = True
    prefetch = False

    def __init__(self, index: int, queue_size: int = 2, capture=None, open_timeout: float = 5.0):
        self.index = index
        self.name = f"camera {index}"
        self.path = None
        cap = capture if capture is not None else _open_camera(index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"camera {index} could not be opened: it does not exist, is in use, or access is "
                "denied; try another camera number, the demo or a video file", hint="camera"
            )
        self._cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and math.isfinite(fps) else None
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (w, h) if w > 0 and h > 0 else None
        self._q: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self.dropped = 0
        self._open_timeout = open_timeout
        self._thread = threading.Thread(target=self._reader, name=f"camera-{index}", daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _reader(self) -> None:
        t0 = None
        n = 0
        while not self._stop.is_set():
            ok, img = self._cap.read()
            if not ok or img is None:
                if self._stop.is_set():
                    break
                self._put(SourceError(
                    f"camera {self.index} stopped delivering frames after {n} frames (unplugged or "
                    "taken by another program); reconnect it and start again", exit_code=1)
                    if n else SourceError(
                    f"camera {self.index} opened but delivers no frames; check that no other "
                    "program uses it, or try another camera number", hint="camera_other"))
                return
            now = time.monotonic()
            t0 = now if t0 is None else t0
            self._put((now - t0, img))
            n += 1

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            try:
                item = self._q.get(timeout=self._open_timeout if i == 0 else 2.0)
            except queue.Empty:
                raise SourceError(
                    f"camera {self.index} delivered no frame for "
                    f"{self._open_timeout if i == 0 else 2.0:.0f} s; check the camera and start again",
                    exit_code=1 if i else 2) from None
            if isinstance(item, Exception):
                raise item
            t, img = item
            yield Frame(i, t, to_bgr(img))
            i += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._cap.release()


def _open_camera(index: int):
    # OpenCV prints backend warnings for a missing device; our SourceError says it better.
    prev = cv2.getLogLevel()
    try:
        cv2.setLogLevel(0)  # silent
        return cv2.VideoCapture(index)
    finally:
        cv2.setLogLevel(prev)


# ----------------------------------------------------------------------------------------------
def grace_hopper() -> np.ndarray:
    """matplotlib's sample portrait (BGR), shipped with matplotlib, so the demo needs no download.

    Found without importing matplotlib (0.1 s, a fifth of the demo's time to its first frame):
    its data folder sits beside its `__init__`, where `matplotlib.get_data_path()` looks too."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        raise SourceError("the demo needs matplotlib's sample portrait: pip install matplotlib")
    p = Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise SourceError(f"the demo picture {p} is missing from matplotlib's sample data; reinstall matplotlib")
    return img


@dataclass(frozen=True)
class Motion:
    """A pose of the demo face: translation (px), roll (radians), scale, about the picture's centre."""
    tx: float = 0.0
    ty: float = 0.0
    angle: float = 0.0
    scale: float = 1.0


def smooth_motion(t: float, amplitude: float = 1.0) -> Motion:
    """The demo's default path: a slow, smooth figure with a small roll and zoom (~10 s loop)."""
    tau = 2 * math.pi
    return Motion(
        tx=amplitude * 60 * math.sin(tau * t / 10.0),
        ty=amplitude * 25 * math.sin(tau * t / 5.0),
        angle=amplitude * math.radians(10) * math.sin(tau * t / 7.5 + 0.3),
        scale=1.0 + amplitude * 0.12 * math.sin(tau * t / 10.0 + 1.0),
    )


# the head in grace_hopper.jpg (x0, y0, x1, y1), with a margin around BlazeFace's box
TIGHT = (121, 97, 416, 392)


class DemoSource(Source):
    """Grace Hopper's portrait moving smoothly on a canvas, with its exact motion known.

    `faces` copies are laid out on a grid (one per cell, each moving within it, phases differing),
    which gives tests two faces side by side or a crowd. `motion(t)` may replace the default path.
    `tight` uses only the head of the portrait (for crowds). `transform(index, k)` is the 2x3 matrix from the portrait's pixels to canvas pixels for copy k
    at that frame: push any point of the portrait through it to know where it truly is.
    """

    def __init__(self, frames: int | None = 300, size: tuple[int, int] = (640, 480), fps: float = 30.0,
                 faces: int = 1, motion: Callable[[float], Motion] | None = None, face_px: float | None = None,
                 background: int = 96, tight: bool = False):
        self.name = "demo"
        self.path = None
        self.length = frames
        self.size = (int(size[0]), int(size[1]))
        self.fps = float(fps)
        self.faces = int(faces)
        self.motion = motion or smooth_motion
        self.background = background
        self._portrait = grace_hopper()
        if tight:  # just the head, so many copies still fill their cells with face
            self._portrait = np.ascontiguousarray(self._portrait[TIGHT[1]:TIGHT[3], TIGHT[0]:TIGHT[2]])
        ph, pw = self._portrait.shape[:2]
        self.cols = min(self.faces, max(1, round(math.sqrt(self.faces * self.size[0] / self.size[1]))))
        self.rows = math.ceil(self.faces / self.cols)
        cw, ch = self.size[0] / self.cols, self.size[1] / self.rows
        # the portrait's height fits ~75% of a cell, leaving room for the motion
        self.base_scale = (face_px / ph) if face_px else 0.75 * min(ch / ph, cw / pw)
        self._cells = [((k % self.cols + 0.5) * cw, (k // self.cols + 0.5) * ch) for k in range(self.faces)]

    def transform(self, index: int, k: int = 0) -> np.ndarray:
        t = index / self.fps
        m = self.motion(t + 1.7 * k)  # each copy at its own phase of the path
        ph, pw = self._portrait.shape[:2]
        cx, cy = self._cells[k]
        cell_k = 1.0 if self.faces == 1 else 1.0 / max(self.cols, self.rows)
        s = self.base_scale * m.scale
        c, sn = math.cos(m.angle) * s, math.sin(m.angle) * s
        a = np.array([[c, -sn], [sn, c]])
        t_ = np.array([cx + m.tx * cell_k, cy + m.ty * cell_k]) - a @ np.array([pw / 2, ph / 2])
        return np.hstack([a, t_[:, None]])

    def render(self, index: int) -> np.ndarray:
        w, h = self.size
        canvas = np.full((h, w, 3), self.background, np.uint8)
        for k in range(self.faces):
            cv2.warpAffine(self._portrait, self.transform(index, k), (w, h), dst=canvas,
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        return canvas

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while self.length is None or i < self.length:
            yield Frame(i, i / self.fps, self.render(i))
            i += 1


def open_source(camera: int | None = None, video: str | None = None, images: str | None = None,
                demo: bool = False, demo_frames: int | None = 300) -> Source:
    given = [x is not None and x is not False for x in (camera, video, images, demo)]
    if sum(given) != 1:
        raise SourceError("give exactly one source: a camera, a video file, an image folder or the demo",
                          hint="one_source")
    if camera is not None:
        return CameraSource(camera)
    if video is not None:
        return VideoSource(video)
    if images is not None:
        return ImageFolderSource(images)
    return DemoSource(frames=demo_frames)
