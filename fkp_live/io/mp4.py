"""The annotated video: H.264 MP4 (PyAV, libx264) with the source's audio copied alongside.

While recording, the file is a fragmented MP4 (NAME.partial.mp4); closing it remuxes it with its
index at the front and renames it into place (see `outputs` for the staging rules).
"""
from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from . import DEFAULT_PRESET, SMALL_FRAME, X264_OPTIONS
from .outputs import Staged, check_output_path, removed_error, unlink_quietly, write_error
from .planes import video_frame_of
from .sinks import Sink, SinkError

log = logging.getLogger("fkp_live")


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
        self._stage = Staged(self.path, what, staged)
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
        fed after a failed write: it can crash on close)."""
        import av

        if self.failed is not None:
            raise self.failed
        try:
            self._out.mux(packet)
            self._muxed = True
        except (av.error.FFmpegError, OSError) as e:
            self.failed = write_error(self._what, self.path, e, self.frames)
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
                self.failed = removed_error(self._what, self.path, self._stage.tmp)
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
                self.failed = write_error(self._what, self.path, e, self.frames)

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
                remux_faststart(stage.tmp, plain, self._first_t)
        except BaseException:  # a second Ctrl-C while remuxing: the fragmented file goes in place
            unlink_quietly(plain)
            stage.commit(True)
            raise
        if plain_ok:
            try:
                stage.commit(True, plain)
            except SinkError:
                unlink_quietly(plain)
                raise
            if stage.tmp != stage.target:  # (unstaged: the remuxed file has just replaced it)
                unlink_quietly(stage.tmp)
            return
        unlink_quietly(plain)
        if self.failed is not None and trim_fragments(stage.tmp) == 0:
            # a write cut short drops the fragment it left half-written; none left: not one frame
            # made it to the file, so the file already at the target (if any) stays as it was
            log.warning("%s %s: no whole frame reached the file before the write error; nothing written",
                        self._what, self.path)
            stage.commit(False)
            return
        stage.commit(True)  # the fragmented file is playable as it is


def trim_fragments(path: Path) -> int:
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


def remux_faststart(src: Path, dst: Path, first_t: float = 0.0) -> bool:
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

