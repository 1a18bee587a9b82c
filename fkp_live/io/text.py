"""The data files: CSV (OpenFace-style columns) and JSON Lines, one frame's lines at a time.

Both are staged (see `outputs`): written as NAME.partial.EXT, each frame's lines in one flushed
write, and put in place of NAME.EXT when they close holding a frame.

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
import os

import numpy as np

from .outputs import Staged, check_output_path, open_text, removed_error, write_error
from .sinks import Sink, SinkError


class _TextSink(Sink):
    """A text file written line by line under NAME.partial.EXT, each frame's lines in one flushed
    write; closing it (also on error) puts it in place of NAME.EXT when it holds a frame. A write
    error cuts the file back to its last whole frame and ends the run (SinkError, exit 1)."""

    def __init__(self, path: str | os.PathLike, what: str, staged: bool = True):
        self.path = check_output_path(path, what)
        self._what = what
        self._stage = Staged(self.path, what, staged)
        self._f = open_text(self._stage.tmp, what)
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
            self.failed = write_error(self._what, self.path, e, self.frames)
            self._cut()
            raise self.failed from None
        self._good = self._f.tell()
        self.frames += frame
        if not self._stage.direct and os.fstat(self._f.fileno()).st_nlink == 0:
            self.failed = removed_error(self._what, self.path, self._stage.tmp)
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
                    self.failed = write_error(self._what, self.path, e, self.frames)
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


def face_json(f, scale: np.ndarray | None = None, digits: int = 2) -> dict:
    """One face as a JSON Lines line (and a live message) holds it: id, confidence, box, points,
    raw, the points' confidence where read and the analysis' answers. `scale`: divide the
    coordinates by it (the frame's width and height, for 0..1 fractions)."""
    def at(p):
        return p if scale is None else np.asarray(p, np.float64).reshape(-1, 2) / scale

    box = f.box if scale is None else at(f.box).ravel().tolist()
    d = {"id": f.id, "confidence": round(float(f.confidence), 4),
         "box": [round(v, digits) for v in box],
         "points": np.round(at(f.points), digits).tolist(),
         "raw": np.round(at(f.raw), digits).tolist()}
    pc = getattr(f, "point_confidence", None)
    if pc is not None:
        d["point_confidence"] = np.round(np.asarray(pc, np.float64), 4).tolist()
    a = getattr(f, "analysis", None)
    if a is not None:
        d.update(a.to_json())
    return d


def frame_json(index: int, timestamp, source, faces, scale: np.ndarray | None = None, digits: int = 2,
               **extra) -> dict:
    """One frame as a JSON Lines line (and a live message) holds it: "frame", "timestamp",
    "source" where there is one, the `extra` fields, then "faces" (see `face_json`)."""
    rec = {"frame": index, "timestamp": timestamp}
    if source is not None:
        rec["source"] = source
    rec.update(extra)
    rec["faces"] = [face_json(f, scale, digits) for f in faces]
    return rec


class JsonlSink(_TextSink):
    """One JSON object per frame: {"frame", "timestamp", "source"?, "faces": [{"id", "confidence",
    "box", "points", "raw", ...}]}; coordinates in frame pixels. A face read with its points'
    confidence adds "point_confidence" (N values, 0..1). A face with an analysis adds its
    answers: "pose": {"Tx", "Ty", "Tz" (mm), "Rx", "Ry", "Rz" (degrees)}, "ear_l", "ear_r",
    "blink", "mouth_open". Lines are flushed as written."""

    def __init__(self, path: str | os.PathLike, what: str = "--jsonl", staged: bool = True):
        super().__init__(path, what, staged)

    def write(self, frame, faces) -> None:
        rec = frame_json(frame.index, frame.pts_seconds, frame.source, faces)
        self._emit(json.dumps(rec, separators=(",", ":")) + "\n")


