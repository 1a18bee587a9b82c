"""Keypoint inference through ONNX Runtime, driven entirely by the model card."""
from __future__ import annotations

import contextlib
import io
import logging
import os

import cv2
import numpy as np

from ..card import ModelCard, ModelError, resolve
from ..crop import Crop, prefetch, warp
from ..frame import LUMA_LUT, Frame, to_bgr, to_channels

log = logging.getLogger("fkp_live")

_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class DeviceError(Exception):
    """The requested execution provider cannot run here."""


def gpu_driver_present() -> bool:
    """Is there an NVIDIA driver (libcuda) to run CUDA/TensorRT providers on at all?"""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


# the optional output of a heatmap model: each point's confidence in 0..1, float32 [batch, N]
# (`python -m train.point_confidence` adds it to an exported graph)
POINT_CONFIDENCE = "point_confidence"

# from this many faces in one frame on, inference runs over every core (see Landmarker.__init__)
WIDE_BATCH = 3


def _session(paths: dict[str, str], device: str, threads: int | None):
    """The first execution provider that loads -> (session, device). `paths[device]` is the file
    for each device tried (an alias's FP16 file for a GPU, its INT8 file for the CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # ONNX Runtime's pool threads spin between runs by default: with a ~1 ms model per frame that
    # burns a core waiting (measured: `fkp-live --video d3.mp4 --csv x --no-display`, user CPU
    # 3.15 s spinning vs 2.3 s one thread); off unless FKP_LIVE_ORT_SPIN=1 asks for it
    spin = os.environ.get("FKP_LIVE_ORT_SPIN", "0")
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin == "1" else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin == "1" else "0")
    available = ort.get_available_providers()
    if device not in ("auto", *_PROVIDERS):
        raise DeviceError(f"device must be auto, cpu, cuda or tensorrt, not {device!r}")
    # auto: GPU providers only where a driver exists; ONNX Runtime lists them whenever the
    # onnxruntime-gpu wheel is installed and prints pages of errors when they fail to load.
    # cuda / tensorrt: the GPU providers asked for, then the CPU (the caller warns about it)
    if device == "auto":
        order = ["tensorrt", "cuda", "cpu"] if gpu_driver_present() else ["cpu"]
    elif device == "cpu":
        order = ["cpu"]
    else:
        order = ["tensorrt", "cuda", "cpu"] if device == "tensorrt" else ["cuda", "cpu"]
    why: list[str] = []
    for dev in order:
        wanted = _PROVIDERS[dev]
        if wanted[0] not in available:
            why.append(f"{wanted[0]} is not in this onnxruntime build")
            continue
        path = paths[dev]
        try:
            sess = ort.InferenceSession(path, sess_options=opts, providers=wanted)
        except Exception as e:  # a provider listed but its libraries missing, a bad file
            if "INVALID_PROTOBUF" in str(e) or "Protobuf parsing failed" in str(e):
                raise ModelError(f"model file {path} is not a valid ONNX model ({e}); re-export it") from e
            why.append(f"{wanted[0]}: {str(e).splitlines()[0][:200]}")
            continue
        # ONNX Runtime silently falls back to CPU when a GPU provider's libraries are missing.
        if sess.get_providers()[0] == wanted[0]:
            return sess, dev, "; ".join(why)
        why.append(f"{wanted[0]} could not be loaded (its CUDA/cuDNN/TensorRT libraries are missing or "
                   "do not match this onnxruntime-gpu)" + ("" if gpu_driver_present() else "; no NVIDIA driver found"))
    raise DeviceError(f"no ONNX Runtime execution provider could load {paths['cpu']}: {'; '.join(why)}")


@contextlib.contextmanager
def _quiet_probe(enabled: bool):
    """Keep ONNX Runtime's provider probing off the terminal: on a machine without CUDA/TensorRT
    libraries, trying them prints pages of errors (stdout, and fd 2 from native code)."""
    if not enabled:
        yield
        return
    import onnxruntime as ort

    from .detect import quiet_stderr

    ort.set_default_logger_severity(4)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured), quiet_stderr():
            yield
    finally:
        ort.set_default_logger_severity(3)
        if captured.getvalue().strip():
            log.debug("ONNX Runtime: %s", captured.getvalue().strip())


class Landmarker:
    """An ONNX keypoint model and its card: batches of crops in, keypoints (crop fractions) out.

        >>> import numpy as np
        >>> from fkp_live.crop import Crop
        >>> lm = Landmarker("fast", device="cpu")
        >>> pts, conf = lm.run(lm.prepare(np.zeros((200, 200, 3), np.uint8), [Crop(100, 100, 120)]))
        >>> pts.shape, conf.shape
        ((1, 68, 2), (1,))

    `model`: an alias, a shipped model's name or an .onnx path (its card NAME.json beside it).
    Every card the device choice may need is read once, before any session is made.
    `point_confidence`: also read each point's confidence (`run_all`); the model must have the
    output `point_confidence` (ModelError otherwise).
    """

    def __init__(self, model: str | os.PathLike | None = None, device: str = "auto",
                 threads: int | None = None, quiet: bool = True, point_confidence: bool = False):
        paths = {dev: resolve(model, gpu=dev != "cpu") for dev in ("cpu", "cuda", "tensorrt")}
        cards = {card: ModelCard.load(card) for _, card in {p[1]: p for p in paths.values()}.values()}
        # On the CPU with no thread count given, one face runs on ONE thread (a ~1 ms model gains
        # nothing from a second thread but pays for waking it, and the decode thread wants that
        # core), while a batch of several faces gets a session over every core, built on first use.
        # Measured: 1713 frames of 512x512 video, whole process 3.7-3.9 s on one thread against
        # 4.1-4.4 s on two; a batch of 20 crops 23 ms on one thread, 13.8 ms on two.
        one = 1 if threads is None and device in ("cpu", "auto") else threads
        with _quiet_probe(quiet and device != "cpu"):
            self.session, self.device, why = _session({d: str(p[0]) for d, p in paths.items()}, device, one)
        self._may_widen = threads is None and self.device == "cpu" and (os.cpu_count() or 1) > 1
        self._wide = None
        self.requested_device = device
        self.provider = self.session.get_providers()[0]
        if device in ("cuda", "tensorrt") and self.device != device:
            # the complaint about other tools: a GPU asked for, the CPU used, and nobody told
            log.warning("WARNING: the %s device was asked for but ONNX Runtime could not use it (%s); "
                        "running on %s instead, much slower. Install the CUDA and cuDNN versions this "
                        "onnxruntime-gpu needs, or ask for the cpu device to silence this.",
                        device, why or "unavailable", self.provider)
        self.onnx_path, card_path = paths[self.device]
        self.card = cards[card_path]
        self.schema = self.card.keypoints
        inp = self.session.get_inputs()[0]
        shape = inp.shape
        expect = [self.card.channels, self.card.input_size, self.card.input_size]
        if len(shape) != 4 or [s for s in shape[1:]] != expect:
            raise ModelError(
                f"model {self.onnx_path} takes input {shape} but its card says "
                f"[batch, {', '.join(map(str, expect))}]; the card does not belong to this model"
            )
        # a model exported with a fixed batch (often 1) takes exactly that many crops per call:
        # run the faces in chunks of it (the last one padded), not all at once
        b = shape[0]
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        if self.fixed_batch is not None:
            log.warning("model %s was exported with a fixed batch of %d: faces are run %s (slower with "
                        "several faces); export it with a dynamic batch axis to run them together",
                        self.onnx_path, b, "one by one" if b == 1 else f"{b} at a time")
        outs = {o.name: o for o in self.session.get_outputs()}
        if self.card.points_output not in outs:
            raise ModelError(
                f"model {self.onnx_path} has no output {self.card.points_output!r} (has "
                f"{', '.join(outs)}); the card does not belong to this model"
            )
        n_out = outs[self.card.points_output].shape[1]
        if isinstance(n_out, int) and n_out != self.schema.n:
            raise ModelError(
                f"model {self.onnx_path} predicts {n_out} points but its card's schema "
                f"{self.schema.name!r} has {self.schema.n}"
            )
        self._outputs = [self.card.points_output]
        self._has_presence = bool(self.card.confidence_output and self.card.confidence_output in outs)
        if self._has_presence:
            self._outputs.append(self.card.confidence_output)
        self.point_confidence = bool(point_confidence)
        if self.point_confidence:
            if POINT_CONFIDENCE not in outs:
                raise ModelError(
                    f"model {self.onnx_path} gives no per-point confidence (no output {POINT_CONFIDENCE!r}); "
                    f"add it with `python -m train.point_confidence {self.onnx_path} NEW.onnx` and run NEW.onnx, "
                    "or leave out the point confidence option")
            self._outputs.append(POINT_CONFIDENCE)
        mean = np.asarray(self.card.mean, dtype=np.float64).reshape(1, -1, 1, 1)
        std = np.asarray(self.card.std, dtype=np.float64).reshape(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply-add per pixel, tabled for the 256 grey levels of
        # each channel: one cv2.LUT pass turns the uint8 crops into the model's input
        scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(-1)
        shift = (-mean / std).astype(np.float32).reshape(-1)
        levels = np.arange(256, dtype=np.float32)[:, None]
        self._lut = (levels * scale + shift).astype(np.float32).reshape(1, 256, -1)  # (1, 256, C)
        # a video's limited-range Y plane -> grey -> input, in one table (grey models)
        self._luma_lut = self._lut[:, LUMA_LUT]

    @property
    def size(self) -> int:
        return self.card.input_size

    def prepare(self, image: np.ndarray, crops: list[Crop]) -> np.ndarray:
        """Cut, convert and normalise crops from one frame: (B, C, S, S) float32."""
        channels = self.card.channels
        # cut first, convert the small crop: cheaper than converting the whole frame
        return self._cut(image, crops, lambda crop: to_channels(to_bgr(crop), channels))

    def prepare_frame(self, frame: Frame, crops: list[Crop]) -> np.ndarray:
        """`prepare` from a Frame: a grey model's crops are cut from the video's Y plane where the
        frame has one (a third of the bytes to read, no colour conversion, and the frame's BGR
        picture need not be made at all), or from the grey picture made ahead (`Frame.grey`)."""
        if self.card.channels == 1:
            if frame.luma is not None:
                return self._cut_plane(frame.luma, crops, self._luma_lut)
            if frame.grey is not None:
                return self._cut_plane(frame.grey, crops, self._lut)
        return self.prepare(frame.image, crops)

    def _cut_plane(self, plane: np.ndarray, crops: list[Crop], lut: np.ndarray) -> np.ndarray:
        """A grey model's crops, each warped straight into one uint8 batch, then normalised through
        `lut` (the luma table turns the Y plane's levels to grey on the way)."""
        s = self.size
        batch = np.empty((len(crops), s, s, 1), dtype=np.uint8)
        prefetch(plane, crops)
        for i, c in enumerate(crops):
            warp(plane, c, s, dst=batch[i, :, :, 0])
        return self.normalise(batch, lut)

    def _cut(self, plane: np.ndarray, crops: list[Crop], convert) -> np.ndarray:
        s, ch = self.size, self.card.channels
        batch = np.empty((len(crops), s, s, ch), dtype=np.uint8)
        prefetch(plane, crops)
        for i, c in enumerate(crops):
            batch[i] = convert(warp(plane, c, s)).reshape(s, s, ch)
        return self.normalise(batch)

    def normalise(self, batch_u8: np.ndarray, lut: np.ndarray | None = None) -> np.ndarray:
        """(B, S, S, C) uint8 -> (B, C, S, S) normalised float32, by one table look-up (`lut`:
        (1, 256, C), default the card's normalisation)."""
        lut = self._lut if lut is None else lut
        b, s, _, ch = batch_u8.shape
        x = cv2.LUT(np.ascontiguousarray(batch_u8).reshape(b * s, s, ch), lut if ch > 1 else lut[..., 0])
        return np.ascontiguousarray(x.reshape(b, s, s, ch).transpose(0, 3, 1, 2))

    def run(self, batch: np.ndarray, wide: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Normalised batch -> (points in crop fractions (B, N, 2), confidence (B,)).

        `wide`: run over every core (None: from WIDE_BATCH crops on; the tracker decides by faces,
        so that a new face's extra reads do not count as more faces)."""
        return self.run_all(batch, wide)[:2]

    def run_all(self, batch: np.ndarray, wide: bool | None = None):
        """`run` and each point's confidence: (points, confidence, point confidence (B, N) or None
        when the Landmarker was made without `point_confidence`)."""
        b = self.fixed_batch
        if b is not None and len(batch) != b:
            n = self.schema.n
            if not len(batch):
                return (np.zeros((0, n, 2), np.float32), np.zeros(0, np.float32),
                        np.zeros((0, n), np.float32) if self.point_confidence else None)
            parts = [self.run_all(_pad(batch[i:i + b], b), wide) for i in range(0, len(batch), b)]
            pts = np.concatenate([p[0] for p in parts])[:len(batch)]
            conf = np.concatenate([p[1] for p in parts])[:len(batch)]
            pc = np.concatenate([p[2] for p in parts])[:len(batch)] if self.point_confidence else None
            return pts, conf, pc
        session = self.session
        if wide is None:
            wide = len(batch) >= WIDE_BATCH
        if self._may_widen and wide:
            if self._wide is None:  # ONNX Runtime's default thread count: the physical cores
                self._wide, _, _ = _session({"cpu": str(self.onnx_path)}, "cpu", None)
            session = self._wide
        out = session.run(self._outputs, {self.card.input_name: batch})
        pts = out[0].reshape(len(batch), self.schema.n, 2)
        conf = out[1].reshape(len(batch)) if self._has_presence else np.ones(len(batch), np.float32)
        pc = out[-1].reshape(len(batch), self.schema.n) if self.point_confidence else None
        return pts, conf, pc


def _pad(chunk: np.ndarray, b: int) -> np.ndarray:
    """A chunk of crops filled up to the model's fixed batch with copies of its first crop."""
    if len(chunk) == b:
        return chunk
    return np.concatenate([chunk, np.repeat(chunk[:1], b - len(chunk), axis=0)])
