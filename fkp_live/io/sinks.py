"""Where results go: an annotated MP4, a CSV or JSON Lines file, a window.

Every sink is a `Sink`: `write(frame, faces)` for each frame, and a context manager whose exit
always leaves a complete file: the MP4 is finalised (playable) and the text files hold every frame
written so far, whether the run ended, failed or was interrupted. Each checks its path when it is
created (a probe file beside it), before any frame is processed.

Nothing is lost: MP4, CSV and JSONL are written as NAME.partial.EXT beside NAME.EXT and renamed
over it when they close holding at least one frame; with none, the partial file is removed and a
file already at NAME.EXT is left as it was. After a hard kill the partial files stay, playable
(fragmented MP4) and parseable (whole lines). Special files (/dev/null) are written straight to.
A write error (full disk, size limit, the folder removed) is a `SinkError` with exit_code 1. Sinks that show pictures (`picture = True`: MP4, window)
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
import stat
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from . import DEFAULT_PRESET, SMALL_FRAME, X264_OPTIONS, Closing
from .planes import video_frame_of

log = logging.getLogger("fkp_live")


class SinkError(Exception):
    """An output cannot be written; the message names the path and what to do.

    exit_code: 2 for a bad output named on the command line (found before any frame), 1 for a
    failure while running (a full disk, a file-size limit, the folder removed)."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def is_special(path: str | os.PathLike) -> bool:
    """An existing file that is neither a regular file nor a folder (/dev/null, /dev/full, a FIFO):
    written straight to, never renamed over or removed."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def partial_path(path: str | os.PathLike) -> Path:
    """Where an output is written while the run lasts: NAME.partial.EXT beside NAME.EXT."""
    p = Path(path)
    return p.with_name(f"{p.stem}.partial{p.suffix}") if p.suffix else p.with_name(p.name + ".partial")


def check_output_path(path: str | os.PathLike, what: str) -> Path:
    """Fail early (before any frame) for an output that cannot be written: a folder, a missing or
    read-only folder, a file system that takes no files (/proc). A probe file is created beside the
    target and removed again; an existing target is never touched."""
    p = Path(path)
    if is_special(p):
        if not os.access(p, os.W_OK):
            raise SinkError(f"cannot write {what} {p}: permission denied; choose a writable path")
        return p
    if p.is_dir():
        raise SinkError(f"{what} {p} is a folder; give a file name, e.g. {p / ('out' + _suffix(what))}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise SinkError(f"cannot write {what} {p}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise SinkError(f"cannot write {what} {p}: {parent} is not a folder")
    probe = parent / f".{p.name}.fkp-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return p
    except OSError as e:
        raise SinkError(f"cannot write {what} {p}: cannot create files in {parent} "
                        f"({e.strerror or e}); choose a writable path") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return p


def _suffix(what: str) -> str:
    return {"--output": ".mp4", "--csv": ".csv", "--jsonl": ".jsonl"}.get(what, "")


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class _Staged:
    """An output written under NAME.partial.EXT and put in place of NAME.EXT when it closes with
    at least one frame; with none, the partial file is removed and NAME.EXT left as it was. A
    special file (/dev/null) is written straight to. Only files this run created are removed.

    staged=False: the caller stages the file itself (a batch's NAME.csv.part): written straight to
    `path`, removed when it holds no frame."""

    def __init__(self, path: Path, what: str, staged: bool = True):
        self.target = path
        self.what = what
        self.direct = is_special(path)
        self.tmp = path if self.direct or not staged else partial_path(path)

    def commit(self, keep: bool, source: Path | None = None) -> bool:
        """Rename `source` (default: the partial file) into place when `keep`, else remove it."""
        src = self.tmp if source is None else source
        if self.direct:
            return keep
        if not keep:
            _unlink(src)
            return False
        if src == self.target:
            return True
        try:
            os.replace(src, self.target)
            return True
        except OSError as e:
            folder = self.target.parent
            if not folder.is_dir():
                raise SinkError(f"cannot put {self.what} {self.target} in place: its folder {folder} was removed "
                                f"during the run ({e.strerror or e}); its frames are lost", exit_code=1) from None
            raise SinkError(f"cannot put {self.what} {self.target} in place ({e.strerror or e}); its frames are "
                            f"kept as {src}", exit_code=1) from None


def _write_error(what: str, path: Path, e: BaseException, frames: int) -> SinkError:
    why = getattr(e, "strerror", None) or str(e).strip() or type(e).__name__
    return SinkError(f"cannot write {what} {path}: {why} after {frames} frame{'s' * (frames != 1)}; "
                     f"the frames before it are kept (check free space and the folder)", exit_code=1)


def _removed(what: str, path: Path, tmp: Path) -> SinkError:
    folder = path.parent
    where = f"its folder {folder} was removed" if not folder.is_dir() else f"{tmp} was deleted"
    return SinkError(f"cannot write {what} {path}: {where} during the run; stopping (its frames are lost)",
                     exit_code=1)


def _open_text(path: Path, what: str):
    try:
        return open(path, "w", newline="", encoding="utf-8")
    except OSError as e:
        raise SinkError(f"cannot write {what} {path}: {e.strerror or e}; choose a writable path") from None


# ----------------------------------------------------------------------------------------------
class Sink(Closing):
    """Base of every output: `write(frame, faces)`; closing (also on error) finalises the file."""

    picture = False  # True: wants frames with the overlay drawn (the run engine draws it once)
    pixels = False  # True: reads the frame's own pixels (so a video source must make them)
    stop_requested = False  # set by a sink that asks the run to end (a window closed by the user)

    def write(self, frame, faces) -> None:
        raise NotImplementedError


class Mp4Sink(Sink):
    """H.264 (libx264, yuv420p) MP4 at the source's frame rate and timestamps, with the source's
    audio stream copied (not re-encoded) alongside. Frame sizes are made even by padding; frames of
    another size than the first (image folders) are letterboxed to it.

    While recording, the file is NAME.partial.mp4, a fragmented MP4 (a fragment about every
    second), so a hard-killed run leaves a playable file up to about a second before the kill.
    Closing it (end, Ctrl-C or error, with at least one frame) remuxes it without re-encoding into a
    plain MP4 with its index at the front and renames that over NAME.mp4. A write error (full disk,
    size limit) stops all muxing at once: the file stays valid up to the failure."""

    TIME_BASE = Fraction(1, 90000)
    FRAGMENT_SECONDS = 1.0
    picture = True
    threaded = True  # the run engine may encode it in its own thread (one writer at a time)
    yuv = True  # takes a frame's I420 picture as it is (`Frame.picture_i420`): no BGR needed

    def __init__(self, path: str | os.PathLike, fps: float | None = None, audio_from: str | os.PathLike | None = None,
                 crf: int = 20, preset: str = DEFAULT_PRESET, what: str = "--output", staged: bool = True,
                 threads: int | None = None):
        import av

        self.path = check_output_path(path, what)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self._what = what
        self._stage = _Staged(self.path, what, staged)
        frag = {"movflags": "+frag_keyframe+empty_moov+default_base_moof",
                "frag_duration": str(int(self.FRAGMENT_SECONDS * 1e6))}
        try:
            self._out = av.open(str(self._stage.tmp), mode="w", format="mp4", container_options=frag)
        except (av.error.FFmpegError, OSError) as e:
            raise SinkError(f"cannot write {what} {self._stage.tmp}: {getattr(e, 'strerror', None) or e}; "
                            "choose a writable path") from None
        self._opts = {"crf": str(crf), **X264_OPTIONS.get(preset, {"preset": preset})}
        # x264's threads; None: one for small frames, where its own choice (about 1.5 per core)
        # fights the model for the CPU, and x264's choice for large ones (measured, see DEFAULT_PRESET)
        self._threads = threads
        self._video = None
        self._size: tuple[int, int] | None = None  # (w, h) as given by the first frame
        self._matrix = "bt601"  # the stream's colour matrix, from the first frame (see write)
        self._last_pts = -1
        self._last_t = 0.0
        self._first_t = 0.0
        self._checked_t = 0.0
        self._muxed = False
        self.frames = 0
        self._closed = False
        self.failed: SinkError | None = None  # the write error that stopped muxing
        self._audio_in = self._audio_out = None
        self._pending = None
        self._audio_iter = None
        if audio_from is not None:
            self._open_audio(audio_from)

    def _mux(self, packet) -> None:
        """Mux one packet; the first write error stops every later one (FFmpeg's muxer must not be
        fed after a failed write: it crashed on close before)."""
        import av

        if self.failed is not None:
            raise self.failed
        try:
            self._out.mux(packet)
            self._muxed = True
        except (av.error.FFmpegError, OSError) as e:
            self.failed = _write_error(self._what, self.path, e, self.frames)
            raise self.failed from None

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

    def _start(self, w: int, h: int, matrix: str = "bt601") -> None:
        self._size = (w, h)
        self._matrix = matrix
        ew, eh = w + (w & 1), h + (h & 1)
        v = self._out.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(100000))
        v.width, v.height, v.pix_fmt = ew, eh, "yuv420p"
        v.time_base = self.TIME_BASE
        v.codec_context.time_base = self.TIME_BASE
        v.options = self._opts
        threads = self._threads or (1 if ew * eh <= SMALL_FRAME else None)
        if threads:
            v.codec_context.thread_count = int(threads)
        if matrix == "bt709":  # as the source was tagged: players then show its colours
            cc = v.codec_context
            cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709
            cc.color_range = 1  # limited ("MPEG")
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
        """Encode the frame's picture at `frame.pts_seconds` (the faces are already drawn on it):
        its I420 planes as they are while they are its picture, else `frame.image`.

        The stream's colour matrix follows the first frame: where frames come as planes (a lazy
        source, whose frames mostly reach the encoder unconverted), that of their planes, so BT.709
        video stays BT.709 (tagged so, as its source was); else BT.601 (untagged), into which
        OpenCV converts BGR fastest."""
        matrix = getattr(frame, "yuv_matrix", None) or "bt601"
        if self._video is None:
            h, w = frame.shape
            self._start(w, h, matrix if getattr(frame, "lazy", False) else "bt601")
        shown = getattr(frame, "picture_i420", None)
        if shown is not None and matrix == self._matrix and frame.shape == self._size[::-1]:
            self._encode(shown, frame.pts_seconds)
        else:
            self.write_image(frame.image, frame.pts_seconds)

    def write_image(self, image: np.ndarray, pts_seconds: float | None = None) -> None:
        """Encode a BGR `image` (letterboxed to the first frame's size, converted by the stream's
        colour matrix)."""
        if self._video is None:
            self._start(image.shape[1], image.shape[0])
        image = self._fit(image)
        if self._matrix == "bt709":
            import av
            from av.video.reformatter import Colorspace

            yuv = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709)
        else:
            # OpenCV's BGR -> I420 (limited-range BT.601, what H.264 players assume untagged) is ~3x
            # faster than swscale's default and keeps greys grey
            yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        self._encode(yuv, pts_seconds)

    def _encode(self, yuv, pts_seconds: float | None) -> None:
        """Encode limited-range I420 planes ((H * 3 / 2, W) uint8 of the stream's size) or a
        yuv420p VideoFrame of the stream's matrix."""
        import av

        t = pts_seconds if pts_seconds is not None else self.frames / self.fps
        pts = int(round(t / self.TIME_BASE))
        if pts <= self._last_pts:  # timestamps must rise; a repeated or reordered one is nudged
            pts = self._last_pts + 1
        frame = yuv if isinstance(yuv, av.VideoFrame) else video_frame_of(yuv)
        frame.pts, frame.time_base = pts, self.TIME_BASE
        if self.failed is not None:
            raise self.failed
        for packet in self._video.encode(frame):
            self._mux(packet)
        self._last_pts, self._last_t = pts, float(pts * self.TIME_BASE)
        if self.frames == 0:
            self._first_t = self._last_t
        self.frames += 1
        if self._muxed and not self._stage.direct and self._last_t >= self._checked_t + 1.0:
            self._checked_t = self._last_t  # about once a second of video: is the file still there?
            if not self._stage.tmp.exists():
                self.failed = _removed(self._what, self.path, self._stage.tmp)
                raise self.failed
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
            self._mux(self._pending)
            self._pending = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._video is not None and self.failed is None:
                try:
                    for packet in self._video.encode(None):
                        self._mux(packet)
                    # audio up to the end of the last frame shown, so an interrupted run stays in sync
                    self._mux_audio(self._last_t + 1.0 / self.fps)
                except SinkError:
                    pass  # reported by the next close step's caller through self.failed
        finally:
            try:
                self._close_container()
            finally:
                if self._audio_in is not None:
                    self._audio_in.close()
                self._finish()
        if self.failed is not None:
            raise self.failed

    def _close_container(self) -> None:
        import av

        try:
            self._out.close()
        except (av.error.FFmpegError, OSError) as e:
            if self.failed is None:
                self.failed = _write_error(self._what, self.path, e, self.frames)

    def _finish(self) -> None:
        """Put the finished file in place (remuxed with the index at the front), or remove the
        partial file when no frame was written."""
        stage = self._stage
        if self._video is None or self.frames == 0:
            stage.commit(False)
            return
        if stage.direct:
            return
        plain = stage.tmp.with_name(stage.tmp.stem + ".faststart" + stage.tmp.suffix)
        try:
            plain_ok = self.failed is None and stage.tmp.parent.is_dir() and \
                _remux_faststart(stage.tmp, plain, self._first_t)
        except BaseException:  # a second Ctrl-C while remuxing: the fragmented file goes in place
            _unlink(plain)
            stage.commit(True)
            raise
        if plain_ok:
            try:
                stage.commit(True, plain)
            except SinkError:
                _unlink(plain)
                raise
            if stage.tmp != stage.target:  # (unstaged: the remuxed file has just replaced it)
                _unlink(stage.tmp)
            return
        _unlink(plain)
        if self.failed is not None and _trim_fragments(stage.tmp) == 0:
            # a write cut short drops the fragment it left half-written; none left: not one frame
            # made it to the file, so the file already at the target (if any) stays as it was
            log.warning("%s %s: no whole frame reached the file before the write error; nothing written",
                        self._what, self.path)
            stage.commit(False)
            return
        stage.commit(True)  # the fragmented file is playable as it is


def _trim_fragments(path: Path) -> int:
    """Cut a fragmented MP4 after its last whole fragment (moof + mdat), so every packet left in it
    decodes. Boxes are walked by their headers; nothing is rewritten. Returns the fragments kept
    (-1 when the file could not be read: it is then kept as it is)."""
    whole = 0
    try:
        with open(path, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            pos, keep, moof = 0, 0, False
            while pos + 8 <= size:
                f.seek(pos)
                head = f.read(16)
                n, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if n == 1 and len(head) == 16:
                    n = int.from_bytes(head[8:16], "big")
                elif n == 0:
                    n = size - pos
                if n < 8 or pos + n > size:
                    break
                pos += n
                if kind == b"moof":
                    moof = True
                elif kind == b"mdat" or not moof:
                    whole += kind == b"mdat" and moof
                    keep, moof = pos, False
            if keep < size:
                f.truncate(keep)
    except OSError as e:
        log.warning("could not trim %s after its last whole fragment (%s)", path, e.strerror or e)
        return -1
    return whole


def _remux_faststart(src: Path, dst: Path, first_t: float = 0.0) -> bool:
    """Copy every packet of `src` into a plain MP4 `dst` with the index (moov) at the front.

    A fragmented MP4 has no edit list, so its timeline starts at the first decode time (B-frames
    delay the first picture); every stream is shifted back so the first picture is at `first_t`."""
    import av

    try:
        with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4",
                                               container_options={"movflags": "+faststart"}) as out:
            streams = {}
            for s in inp.streams:
                if s.type in ("video", "audio"):
                    streams[s.index] = out.add_stream_from_template(s)
            shift = 0.0
            v = inp.streams.video[0] if inp.streams.video else None
            if v is not None:
                for pkt in inp.demux(v):
                    if pkt.pts is not None:
                        shift = float(pkt.pts * pkt.time_base) - first_t
                        break
                inp.seek(0, any_frame=True)
            for pkt in inp.demux(*[inp.streams[i] for i in streams]):
                if pkt.dts is None:
                    continue
                d = int(round(shift / pkt.time_base))
                pkt.dts -= d
                if pkt.pts is not None:
                    pkt.pts -= d
                pkt.stream = streams[pkt.stream.index]
                out.mux(pkt)
        return True
    except (av.error.FFmpegError, OSError, ValueError) as e:
        log.warning("could not rewrite %s with its index at the front (%s); keeping it fragmented",
                    src, getattr(e, "strerror", None) or e)
        return False


# ----------------------------------------------------------------------------------------------
class _TextSink(Sink):
    """A text file written line by line under NAME.partial.EXT, each frame's lines in one flushed
    write; closing it (also on error) puts it in place of NAME.EXT when it holds a frame. A write
    error cuts the file back to its last whole frame and ends the run (SinkError, exit 1)."""

    def __init__(self, path: str | os.PathLike, what: str, staged: bool = True):
        self.path = check_output_path(path, what)
        self._what = what
        self._stage = _Staged(self.path, what, staged)
        self._f = _open_text(self._stage.tmp, what)
        self.frames = 0
        self.failed: SinkError | None = None
        self._good = 0  # bytes of whole frames (and header) written

    def _emit(self, text: str, frame: bool = True) -> None:
        if self.failed is not None:
            raise self.failed
        try:
            self._f.write(text)
            self._f.flush()
        except OSError as e:
            self.failed = _write_error(self._what, self.path, e, self.frames)
            self._cut()
            raise self.failed from None
        self._good = self._f.tell()
        self.frames += frame
        if not self._stage.direct and os.fstat(self._f.fileno()).st_nlink == 0:
            self.failed = _removed(self._what, self.path, self._stage.tmp)
            raise self.failed

    def _cut(self) -> None:
        """After a failed write: drop the unwritten buffer and any part of a row on disk."""
        try:
            os.ftruncate(self._f.fileno(), self._good)
        except (OSError, ValueError):
            pass
        try:
            fd = os.dup(self._f.fileno())
            self._f.close()  # may fail again flushing what is left: it is cut below anyway
        except (OSError, ValueError):
            fd = None
        if fd is not None:
            try:
                os.ftruncate(fd, self._good)
            except OSError:
                pass
            os.close(fd)

    def close(self) -> None:
        if self._f.closed and getattr(self, "_done", False):
            return
        self._done = True
        if not self._f.closed:
            try:
                self._f.close()
            except OSError as e:
                if self.failed is None:
                    self.failed = _write_error(self._what, self.path, e, self.frames)
        try:
            self._stage.commit(self.frames > 0)
        except SinkError as e:
            if self.failed is None:
                self.failed = e
        if self.failed is not None:
            raise self.failed


class CsvSink(_TextSink):
    """One row per face per frame, OpenFace's column names and order without its leading spaces:
    frame,face_id,timestamp,confidence,success,x_0..x_{N-1},y_0..y_{N-1}[,c_0..c_{N-1}][,analysis...][,source]

    `point_confidence` adds each point's confidence c_0..c_{N-1} (`Face.point_confidence`).
    `analysis` (any of 'pose', 'eyes', 'mouth') adds pose_Tx,pose_Ty,pose_Tz (mm),
    pose_Rx,pose_Ry,pose_Rz (degrees), ear_l,ear_r,blink and mouth_open, read from each face's
    `analysis` (see fkp_live.analysis); empty where a face has no answer. A frame without a face
    gets one row with face_id -1, success 0 and empty fields, so every processed frame is in the
    file. Rows are flushed frame by frame."""

    def __init__(self, path: str | os.PathLike, n_points: int, with_source: bool = False, what: str = "--csv",
                 analysis=(), staged: bool = True, point_confidence: bool = False):
        super().__init__(path, what, staged)
        from ..analysis.analyser import columns, parse_kinds

        self.n = int(n_points)
        self.with_source = with_source
        self.analysis = parse_kinds(analysis)
        extra = columns(self.analysis)
        cols = ["frame", "face_id", "timestamp", "confidence", "success"]
        cols += [f"x_{i}" for i in range(self.n)] + [f"y_{i}" for i in range(self.n)]
        self.point_confidence = bool(point_confidence)
        if self.point_confidence:
            cols += [f"c_{i}" for i in range(self.n)]
        cols += extra
        if with_source:
            cols.append("source")
        self._emit(",".join(cols) + "\n", frame=False)
        self._empty = "," * ((3 if self.point_confidence else 2) * self.n + len(extra))
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
            if self.point_confidence:
                pc = f.point_confidence
                coords += "," + (",".join(f"{v:.3f}" for v in pc.tolist()) if pc is not None else "," * (self.n - 1))
            if self.analysis:
                a = getattr(f, "analysis", None)
                coords += "," + ",".join(a.values(self.analysis) if a is not None else self._blank)
            lines.append(f"{frame.index},{f.id},{ts},{f.confidence:.3f},1,{coords}{tail}\n")
        if not faces:
            lines.append(f"{frame.index},-1,{ts},0.000,0{self._empty}{tail}\n")
        self._emit("".join(lines))


def _csv_field(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n\r') else s


class JsonlSink(_TextSink):
    """One JSON object per frame: {"frame", "timestamp", "source"?, "faces": [{"id", "confidence",
    "box", "points", "raw", ...}]}; coordinates in frame pixels. A face with an analysis adds its
    answers: "pose": {"Tx", "Ty", "Tz" (mm), "Rx", "Ry", "Rz" (degrees)}, "ear_l", "ear_r",
    "blink", "mouth_open". Lines are flushed as written."""

    def __init__(self, path: str | os.PathLike, what: str = "--jsonl", staged: bool = True):
        super().__init__(path, what, staged)

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
            pc = getattr(f, "point_confidence", None)
            if pc is not None:
                d["point_confidence"] = np.round(np.asarray(pc, np.float64), 4).tolist()
            a = getattr(f, "analysis", None)
            if a is not None:
                d.update(a.to_json())
            rec["faces"].append(d)
        self._emit(json.dumps(rec, separators=(",", ":")) + "\n")



# ----------------------------------------------------------------------------------------------
class CropSink(Sink):
    """Each face as a PNG, similarity-aligned on its eyes (see fkp_live.analysis.align): the eye
    centres always on the same pixels of a `size` x `size` image. One file per face per frame, or
    per face every `every` frames (frame index divisible by it), named `f{frame:06d}_id{face_id}.png`
    after the CSV row it belongs to (the CSV's `frame` and `face_id`). The folder is created."""

    threaded = True  # PNG encoding may run beside the model (the engine decides)
    pixels = True  # reads the frame's picture (not the overlay's)

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
