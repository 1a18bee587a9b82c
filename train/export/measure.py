"""Checks and measures of an exported file through the runtime's own ONNX Runtime wrapper: parity
with torch on the same crops, accuracy on a split, CPU latency.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fkp_live.card import ModelCard

from ..tasks import Task
from .graphs import ExportError


class ParityError(ExportError):
    """The ONNX file's points differ from torch's by more than the tolerance; the file is removed."""


def parity(model: nn.Module, onnx_path: Path, card: ModelCard, batch: np.ndarray) -> float:
    """Largest difference in input pixels between torch and the runtime's ONNX Runtime wrapper.

    `batch` is (B, S, S, C) uint8 crops; both sides normalise them the runtime's way.
    """
    from fkp_live.track.landmarker import Landmarker

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.onnx"
        shutil.copy(onnx_path, p)
        card.save(p.with_suffix(".json"))
        lm = Landmarker(p, device="cpu")
        x = lm.normalise(batch)
        ort_pts, ort_conf = lm.run(x)
    with torch.no_grad():
        t_pts, _ = model.eval()(torch.from_numpy(x))
    diff = np.abs(t_pts.numpy() - ort_pts) * card.input_size
    return float(diff.max())


def crops_of(samples, task: Task, limit: int | None = None):
    """Evaluation crops of samples (the card's crop from the true points): (uint8 batch, matrices)."""
    from ..datasets import KeypointDataset

    ds = KeypointDataset(samples[:limit], task, None)
    exs = [ds.example(i) for i in range(len(ds))]
    imgs = [ex.image if ex.image.ndim == 3 else ex.image[:, :, None] for ex in exs]
    return np.stack(imgs), np.stack([ex.matrix for ex in exs])


def evaluate_onnx(onnx_path: Path, card: ModelCard, samples, task: Task, device: str = "cpu") -> dict:
    """Metrics of an exported model run through the runtime's wrapper, in image pixels."""
    from fkp_live.track.landmarker import Landmarker

    from .. import metrics
    from ..datasets import to_frame

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.onnx"
        shutil.copy(onnx_path, p)
        card.save(p.with_suffix(".json"))
        lm = Landmarker(p, device=device)
        batch, mats = crops_of(samples, task)
        preds, confs = [], []
        for i in range(0, len(batch), 64):
            pts, conf = lm.run(lm.normalise(batch[i : i + 64]))
            preds.append(pts)
            confs.append(conf)
    pred = to_frame(np.concatenate(preds), mats, task.size)
    truth = np.stack([np.nan_to_num(s.points) for s in samples]).astype(np.float32)
    mask = np.stack([s.mask for s in samples])
    out = metrics.summary(pred, truth, mask, lm.schema)
    out["presence_mean"] = float(np.concatenate(confs).mean())
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def latency_ms(onnx_path: Path, batch: int, size: int, channels: int, provider: str = "CPUExecutionProvider",
               threads: int = 1, runs: int = 200, warmup: int = 20) -> float:
    """Median milliseconds per call at a batch size, after warm-up."""
    import time

    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    s = ort.InferenceSession(str(onnx_path), o, providers=[provider])
    if s.get_providers()[0] != provider:
        raise RuntimeError(f"{provider} could not be loaded here")
    x = np.random.default_rng(0).standard_normal((batch, channels, size, size)).astype(np.float32)
    for _ in range(warmup):
        s.run(None, {"image": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {"image": x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000)


def cpu_latency(path: Path, size: int, channels: int) -> dict:
    """ms per call on one CPU thread at batch 1 and 4, as the card records it."""
    return {"batch1": round(latency_ms(path, 1, size, channels), 3),
            "batch4": round(latency_ms(path, 4, size, channels), 3)}
