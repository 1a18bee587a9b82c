"""Where results go: an annotated MP4, a CSV or JSON Lines file, a window.

Every sink is a `Sink`: `write(frame, faces)` for each frame, and a context manager whose exit
always leaves a complete file: the MP4 is finalised (playable) and the text files hold every frame
written so far, whether the run ended, failed or was interrupted. Each checks its path when it is
created, before any frame is processed. Sinks that show pictures (`picture = True`: MP4, window)
are given frames whose image already carries the overlay; the others get the frame as decoded.

    >>> import numpy as np, tempfile, os
    >>> from fkp_live.frame import Frame
    >>> path = os.path.join(tempfile.mkdtemp(), "out.csv")
    >>> with CsvSink(path, n_points=68) as sink:
    ...     sink.write(Frame(0, 0.0, np.zeros((8, 8, 3), np.uint8)), [])
    >>> open(path).read().splitlines()[1][:20]
    '0,-1,0.000,0.000,0,,'
"""
from __future__ import annotations

import json
import logging
import os
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("fkp_live")


class SinkError(Exception):
    """An output cannot be written; the message names the path and what to do."""


def check_output_path(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise SinkError(f"{what} {p} is a folder; give a file name, e.g. {p / ('out' + _suffix(what))}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise SinkError(f"cannot write {what} {p}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise SinkError(f"cannot write {what} {p}: {parent} is not a folder")
    return p


def _suffix(what: str) -> str:
    return {"--output": ".mp4", "--csv": ".csv", "--jsonl": ".jsonl"}.get(what, "")


def _open_text(path: Path, what: str):
    try:
        return open(path, "w", newline="", encoding="utf-8")
    except OSError as e:
        raise SinkError(f"cannot write {what} {path}: {e.strerror or e}; choose a writable path") from None


# ----------------------------------------------------------------------------------------------
class Sink:
    """Base of every output: `write(frame, faces)`; closing (also on error) finalises the file."""

    picture = False  # True: wants frames with the overlay drawn (the run engine draws it once)
    stop_requested = False  # set by a sink that asks the run to end (a window closed by the user)

    def write(self, frame, faces) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Mp4Sink(Sink):
    """H.264 (libx264, yuv420p) MP4 at the source's frame rate and timestamps, with the source's
    audio stream copied (not re-encoded) alongside. Frame sizes are made even by padding; frames of
    another size than the first (image folders) are letterboxed to it."""

    TIME_BASE = Fraction(1, 90000)
    picture = True
    threaded = True  # the run engine may encode it in its own thread (one writer at a time)

    def __init__(self, path: str | os.PathLike, fps: float | None = None, audio_from: str | os.PathLike | None = None,
                 crf: int = 20, preset: str = "veryfast", what: str = "--output"):
        import av

        self.path = check_output_path(path, what)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self._what = what
        try:
            self._out = av.open(str(self.path), mode="w", format="mp4")
        except (av.error.FFmpegError, OSError) as e:
            raise SinkError(f"cannot write {what} {self.path}: {getattr(e, 'strerror', None) or e}; "
                            "choose a writable path") from None
        self._opts = {"crf": str(crf), "preset": preset}
        self._video = None
        self._size: tuple[int, int] | None = None  # (w, h) as given by the first frame
        self._last_pts = -1
        self._last_t = 0.0
        self.frames = 0
        self._closed = False
        self._audio_in = self._audio_out = None
        self._pending = None
        self._audio_iter = None
        if audio_from is not None:
            self._open_audio(audio_from)

    def _open_audio(self, src) -> None:
        import av

        try:
            inp = av.open(str(src), mode="r")
        except av.error.FFmpegError:
            return
        if not inp.streams.audio:
            inp.close()
            return
        self._audio_in = inp
        self._audio_template = inp.streams.audio[0]  # its output stream follows the video's
        vs = inp.streams.video
        # the source's video starts at t = 0 in our frames; shift the audio by the same amount
        start = vs[0].start_time * vs[0].time_base if vs and vs[0].start_time is not None else 0
        self._audio_shift = float(start)
        self._audio_iter = inp.demux(self._audio_template)

    def _start(self, w: int, h: int) -> None:
        self._size = (w, h)
        ew, eh = w + (w & 1), h + (h & 1)
        v = self._out.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(100000))
        v.width, v.height, v.pix_fmt = ew, eh, "yuv420p"
        v.time_base = self.TIME_BASE
        v.codec_context.time_base = self.TIME_BASE
        v.options = self._opts
        self._video = v
        if self._audio_in is not None:
            self._audio_out = self._out.add_stream_from_template(self._audio_template)

    def _fit(self, image: np.ndarray) -> np.ndarray:
        w, h = self._size
        ih, iw = image.shape[:2]
        if (iw, ih) != (w, h):
            k = min(w / iw, h / ih)
            nw, nh = max(1, round(iw * k)), max(1, round(ih * k))
            small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
            out = np.zeros((h, w, 3), np.uint8)
            y, x = (h - nh) // 2, (w - nw) // 2
            out[y:y + nh, x:x + nw] = small
            image = out
        if (w | h) & 1:
            image = cv2.copyMakeBorder(image, 0, h & 1, 0, w & 1, cv2.BORDER_REPLICATE)
        return image

    def write(self, frame, faces=()) -> None:
        """Encode `frame.image` at `frame.pts_seconds` (the faces are already drawn on it)."""
        self.write_image(frame.image, frame.pts_seconds)

    def write_image(self, image: np.ndarray, pts_seconds: float | None = None) -> None:
        import av

        if self._video is None:
            self._start(image.shape[1], image.shape[0])
        t = pts_seconds if pts_seconds is not None else self.frames / self.fps
        pts = int(round(t / self.TIME_BASE))
        if pts <= self._last_pts:  # timestamps must rise; a repeated or reordered one is nudged
            pts = self._last_pts + 1
        # OpenCV's BGR -> I420 (limited-range BT.601, what H.264 players assume untagged) is ~3x
        # faster than swscale's default and keeps greys grey
        yuv = cv2.cvtColor(self._fit(image), cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts, frame.time_base = pts, self.TIME_BASE
        for packet in self._video.encode(frame):
            self._out.mux(packet)
        self._last_pts, self._last_t = pts, float(pts * self.TIME_BASE)
        self.frames += 1
        self._mux_audio(self._last_t)

    def _mux_audio(self, until: float) -> None:
        if self._audio_iter is None:
            return
        while True:
            if self._pending is None:
                try:
                    pkt = next(self._audio_iter)
                except StopIteration:
                    self._audio_iter = None
                    return
                if pkt.dts is None or pkt.pts is None:  # the demuxer's final empty packet
                    continue
                shift = int(round(self._audio_shift / pkt.time_base))
                pkt.pts -= shift
                pkt.dts -= shift
                if pkt.pts < 0:
                    continue
                self._pending = pkt
            if float(self._pending.pts * self._pending.time_base) > until:
                return
            self._pending.stream = self._audio_out
            self._out.mux(self._pending)
            self._pending = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._video is not None:
                for packet in self._video.encode(None):
                    self._out.mux(packet)
                # audio up to the end of the last frame shown, so an interrupted run stays in sync
                self._mux_audio(self._last_t + 1.0 / self.fps)
        finally:
            try:
                self._out.close()
            finally:
                if self._audio_in is not None:
                    self._audio_in.close()
            if self._video is None:
                # nothing was written: no MP4 without a video stream is left behind
                try:
                    self.path.unlink()
                except OSError:
                    pass


# ----------------------------------------------------------------------------------------------
class _TextSink(Sink):
    """A text file written line by line; closing it (also on error) keeps what was written."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = check_output_path(path, what)
        self._f = _open_text(self.path, what)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class CsvSink(_TextSink):
    """One row per face per frame, OpenFace's column names and order without its leading spaces:
    frame,face_id,timestamp,confidence,success,x_0..x_{N-1},y_0..y_{N-1}[,analysis...][,source]

    `analysis` (any of 'pose', 'eyes', 'mouth') adds pose_Tx,pose_Ty,pose_Tz (mm),
    pose_Rx,pose_Ry,pose_Rz (degrees), ear_l,ear_r,blink and mouth_open, read from each face's
    `analysis` (see fkp_live.analysis); empty where a face has no answer. A frame without a face
    gets one row with face_id -1, success 0 and empty fields, so every processed frame is in the
    file. Rows are flushed frame by frame."""

    def __init__(self, path: str | os.PathLike, n_points: int, with_source: bool = False, what: str = "--csv",
                 analysis=()):
        super().__init__(path, what)
        from ..analysis.analyser import columns, parse_kinds

        self.n = int(n_points)
        self.with_source = with_source
        self.analysis = parse_kinds(analysis)
        extra = columns(self.analysis)
        cols = ["frame", "face_id", "timestamp", "confidence", "success"]
        cols += [f"x_{i}" for i in range(self.n)] + [f"y_{i}" for i in range(self.n)] + extra
        if with_source:
            cols.append("source")
        self._f.write(",".join(cols) + "\n")
        self._f.flush()
        self._empty = "," * (2 * self.n + len(extra))
        self._blank = [""] * len(extra)

    def write(self, frame, faces) -> None:
        ts = "" if frame.pts_seconds is None else f"{frame.pts_seconds:.3f}"
        tail = ""
        if self.with_source:
            tail = "," + _csv_field(frame.source or "")
        lines = []
        for f in faces:
            p = f.points
            coords = ",".join(f"{v:.2f}" for v in np.concatenate([p[:, 0], p[:, 1]]).tolist())
            if self.analysis:
                a = getattr(f, "analysis", None)
                coords += "," + ",".join(a.values(self.analysis) if a is not None else self._blank)
            lines.append(f"{frame.index},{f.id},{ts},{f.confidence:.3f},1,{coords}{tail}\n")
        if not faces:
            lines.append(f"{frame.index},-1,{ts},0.000,0{self._empty}{tail}\n")
        self._f.write("".join(lines))
        self._f.flush()


def _csv_field(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n\r') else s


class JsonlSink(_TextSink):
    """One JSON object per frame: {"frame", "timestamp", "source"?, "faces": [{"id", "confidence",
    "box", "points", "raw", ...}]}; coordinates in frame pixels. A face with an analysis adds its
    answers: "pose": {"Tx", "Ty", "Tz" (mm), "Rx", "Ry", "Rz" (degrees)}, "ear_l", "ear_r",
    "blink", "mouth_open". Lines are flushed as written."""

    def __init__(self, path: str | os.PathLike, what: str = "--jsonl"):
        super().__init__(path, what)

    def write(self, frame, faces) -> None:
        rec = {"frame": frame.index, "timestamp": frame.pts_seconds}
        if frame.source is not None:
            rec["source"] = frame.source
        rec["faces"] = []
        for f in faces:
            d = {
                "id": f.id, "confidence": round(f.confidence, 4),
                "box": [round(v, 2) for v in f.box],
                "points": np.round(f.points, 2).tolist(),
                "raw": np.round(f.raw, 2).tolist(),
            }
            a = getattr(f, "analysis", None)
            if a is not None:
                d.update(a.to_json())
            rec["faces"].append(d)
        self._f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._f.flush()



# ----------------------------------------------------------------------------------------------
class CropSink(Sink):
    """Each face as a PNG, similarity-aligned on its eyes (see fkp_live.analysis.align): the eye
    centres always on the same pixels of a `size` x `size` image. One file per face per frame, or
    per face every `every` frames (frame index divisible by it), named `f{frame:06d}_id{face_id}.png`
    after the CSV row it belongs to (the CSV's `frame` and `face_id`). The folder is created."""

    threaded = True  # PNG encoding may run beside the model (the engine decides)

    def __init__(self, folder: str | os.PathLike, schema, size: int = 112, every: int = 1, what: str = "--crops"):
        if size < 8:
            raise SinkError(f"{what}: crop size {size} is too small (8 pixels at least)")
        if every < 1:
            raise SinkError(f"{what}: every must be >= 1, not {every}")
        if schema.eye_centres(np.zeros((schema.n, 2))) is None:
            raise SinkError(f"{what}: the {schema.name} points have no eyes to align crops on")
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise SinkError(f"{what} {self.folder} is a file; give a folder for the crops")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"cannot create {what} folder {self.folder}: {e.strerror or e}") from None
        if not os.access(self.folder, os.W_OK):
            raise SinkError(f"cannot write {what} folder {self.folder}: permission denied")
        self.schema, self.size, self.every, self._what = schema, int(size), int(every), what
        self.written = 0

    @staticmethod
    def name(frame_index: int, face_id: int) -> str:
        return f"f{frame_index:06d}_id{face_id}.png"

    def write(self, frame, faces) -> None:
        if frame.index % self.every or not faces:
            return
        from ..analysis.align import aligned_crop

        for f in faces:
            crop, _ = aligned_crop(frame.image, self.schema.eye_centres(f.points), self.size)
            path = self.folder / self.name(frame.index, f.id)
            if not cv2.imwrite(str(path), crop):
                raise SinkError(f"cannot write {self._what} file {path}; check the folder and free space")
            self.written += 1


# ----------------------------------------------------------------------------------------------
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
