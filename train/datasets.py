"""From files on disk to batches: load a task's samples, split them, and augment on the fly."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fkp_live import schemas

from .augment import NO_AUGMENT, AugmentConfig, make_example
from .data import DataError, Sample, SkipReport
from .tasks import Task


# Inputs are pixels/255, then (x - 0.5) / 0.5 per channel; export writes these into the card.
MEAN, STD = 0.5, 0.5


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 images (B, H, W) or (B, H, W, C) -> normalised float tensor (B, C, H, W)."""
    x = images if images.ndim == 4 else images[..., None]
    x = (x.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _hash_frac(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def load_split(task: Task, data: str | Path, split: str, skip_bad: bool = False,
               extra: list[str] | None = None) -> tuple[list[Sample], SkipReport]:
    """The samples of one split ('train', 'val', 'test' or 'all') of a task's data."""
    grey = task.channels == 1
    data = Path(data)
    if task.reader == "300w":
        from .data import ibug

        roots = [p for p in sorted(data.iterdir()) if p.is_dir()] if data.is_dir() else [data]
        if not roots or (data.is_dir() and any(data.glob("*.pts"))):
            roots = [data]
        samples, skipped = [], []
        for r in roots:
            s, rep = ibug.load_dir(r, grey=grey, skip_bad=skip_bad)
            samples += s
            skipped += rep.skipped
        if split != "all":
            samples = [s for s in samples if ibug.split_of(s.source) == split]
        if split == "train":
            for e in extra or []:
                s, rep = ibug.load_dir(e, grey=grey, skip_bad=True)
                samples += s
                skipped += rep.skipped
        report = SkipReport(skipped)
    elif task.reader == "imm":
        from .data import imm

        which = {"train": "train", "val": "val", "test": "val", "all": None}[split]
        samples, report = imm.load_dir(data, grey=grey, skip_bad=skip_bad, split=which)
    elif task.reader == "kaggle":
        from .data import kaggle

        samples, report = kaggle.read_training(data, skip_bad=skip_bad)
        samples = _hash_split(samples, split)
    elif task.reader == "csv":
        from .data import generic

        samples, report = generic.read_csv(data, schema_name=task.schema, grey=grey, skip_bad=skip_bad)
        samples = _hash_split(samples, split)
    else:
        raise ValueError(f"unknown reader {task.reader!r}")
    if task.map_from is not None:
        groups = schemas.MAPPINGS[(task.map_from, task.schema)]
        mapped = []
        for s in samples:
            pts, m = schemas.map_points(np.nan_to_num(s.points), s.mask, groups)
            mapped.append(Sample(s.image, pts, m, s.source, task.schema))
        samples = mapped
    if task.points is not None:
        keep = list(task.points)
        samples = [Sample(s.image, s.points[keep], s.mask[keep], s.source, task.schema) for s in samples]
    if task.complete_only:
        samples = [s for s in samples if s.mask.all()]
    if task.label_subset is not None:
        keep = np.zeros(len(samples[0].mask) if samples else 0, bool)
        keep[list(task.label_subset)] = True
        samples = [Sample(s.image, s.points, s.mask & keep, s.source, s.schema) for s in samples]
        samples = [s for s in samples if s.mask.any()]
    if not samples:
        raise DataError(f"{data}: no samples in the {split!r} split")
    return samples, report


def _hash_split(samples: list[Sample], split: str, val_frac: float = 0.1) -> list[Sample]:
    """A fixed split for single-file datasets: 10% of rows (by a hash of their source) validate."""
    if split == "all":
        return samples
    want_val = split in ("val", "test")
    # hash the file name and line, not the folder: the split must not move with the data
    return [s for s in samples if (_hash_frac(Path(s.source).name) < val_frac) == want_val]


class KeypointDataset(Dataset):
    def __init__(self, samples: list[Sample], task: Task, augment: AugmentConfig | None, seed: int = 0):
        self.samples = samples
        self.task = task
        self.schema = schemas.get(task.schema)
        self.augment = augment or NO_AUGMENT
        self.seed = seed
        self.epoch = 0
        # (N, K, 2) image pixels: the net's own reading of each sample, for augment.self_crop
        self.crop_points: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def example(self, i: int):
        s = self.samples[i]
        # a generator per (seed, epoch, index): reproducible whatever the worker or process count
        rng = np.random.default_rng([self.seed, self.epoch, i])
        crop_pts = None
        if self.augment.self_crop and self.crop_points is not None and rng.random() < self.augment.self_crop:
            crop_pts = self.crop_points[i]
        return make_example(
            s.image, s.points, s.mask, self.schema, self.task.size, rng, self.augment,
            mode=self.task.mode, crop_scale=self.task.crop_scale, crop_rotate=self.task.crop_rotate,
            crop_pts=crop_pts,
        )

    def __getitem__(self, i: int):
        ex = self.example(i)
        return {
            "image": to_input(ex.image[None])[0],
            "points": torch.from_numpy(ex.points),
            "mask": torch.from_numpy(ex.mask),
            "present": torch.tensor(ex.present, dtype=torch.float32),
            "matrix": torch.from_numpy(ex.matrix.astype(np.float64)),
            "index": i,
        }


def to_frame(points_frac: np.ndarray, matrices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Predictions in input fractions (B, N, 2) -> original image pixels, by each example's matrix."""
    w, h = size
    px = points_frac.astype(np.float64) * np.array([w, h])
    out = np.empty_like(px)
    for b, m in enumerate(matrices):
        inv = np.linalg.inv(m)
        out[b] = px[b] @ inv[:2, :2].T + inv[:2, 2]
    return out.astype(np.float32)
