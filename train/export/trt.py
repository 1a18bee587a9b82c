"""A TensorRT engine built from an exported file (where TensorRT is installed).
"""
from __future__ import annotations

import os
from pathlib import Path



from .graphs import ExportError


class TensorRTUnavailable(Exception):
    pass


def build_tensorrt(onnx_path: Path, out: Path, fp16: bool = True, max_batch: int = 8,
                   input_size: int = 128, channels: int = 1) -> None:
    """Build a TensorRT engine with the `tensorrt` Python API (needs an NVIDIA GPU)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(
            "TensorRT is not installed (pip install tensorrt, on a machine with an NVIDIA GPU and "
            "driver); the ONNX file still runs on GPUs through ONNX Runtime's CUDA or TensorRT "
            "execution provider (fkp-live --device cuda|tensorrt)"
        ) from None
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT could not parse {onnx_path}: {errs}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        shape = (channels, input_size, input_size)
        profile.set_shape("image", (1, *shape), (4, *shape), (max_batch, *shape))
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
    except (RuntimeError, TypeError) as e:  # no GPU / driver: TensorRT raises at builder creation
        raise TensorRTUnavailable(f"TensorRT could not build an engine here ({e}); it needs an NVIDIA GPU") from None
    if engine is None:
        raise ExportError("TensorRT failed to build the engine (see the messages above)")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(bytes(engine))
    os.replace(tmp, out)
