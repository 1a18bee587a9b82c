"""Eye-aligned face pictures, one PNG per face per frame (`--crops DIR`)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .sinks import Sink, SinkError


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

