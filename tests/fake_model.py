"""A small but real ONNX keypoint model for plumbing tests, with its model card.

It answers the mean 300-W face shape (in the crop convention of fkp_live.crop) in every crop, and a
confidence that is the contrast of the crop's central half: high on a face, zero on a flat
background, so tracks are lost when a face leaves. Real ONNX Runtime sessions run it; its accuracy means nothing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# Mean iBUG-68 shape of 300-W (AFW, HELEN, LFPW training), made left-right symmetric, in units of
# the keypoints' box (longer edge 1) about the box centre, eye line level.
MEAN_SHAPE = np.array([
    (-0.484, -0.293), (-0.480, -0.165), (-0.466, -0.038), (-0.439, 0.086),
    (-0.389, 0.201), (-0.313, 0.302), (-0.220, 0.386), (-0.117, 0.453),
    (0.000, 0.473), (0.117, 0.453), (0.220, 0.386), (0.313, 0.302),
    (0.389, 0.201), (0.439, 0.086), (0.466, -0.038), (0.480, -0.165),
    (0.484, -0.293), (-0.391, -0.395), (-0.331, -0.447), (-0.248, -0.463),
    (-0.162, -0.451), (-0.080, -0.420), (0.080, -0.420), (0.162, -0.451),
    (0.248, -0.463), (0.331, -0.447), (0.391, -0.395), (0.000, -0.318),
    (0.000, -0.234), (0.000, -0.152), (0.000, -0.067), (-0.097, -0.010),
    (-0.051, 0.007), (0.000, 0.022), (0.051, 0.007), (0.097, -0.010),
    (-0.294, -0.305), (-0.243, -0.335), (-0.180, -0.335), (-0.127, -0.294),
    (-0.185, -0.281), (-0.247, -0.282), (0.127, -0.294), (0.180, -0.335),
    (0.243, -0.335), (0.294, -0.305), (0.247, -0.282), (0.185, -0.281),
    (-0.186, 0.148), (-0.118, 0.118), (-0.048, 0.103), (0.000, 0.115),
    (0.048, 0.103), (0.118, 0.118), (0.186, 0.148), (0.121, 0.214),
    (0.052, 0.243), (0.000, 0.248), (-0.052, 0.243), (-0.121, 0.214),
    (-0.158, 0.152), (-0.049, 0.145), (0.000, 0.150), (0.049, 0.145),
    (0.158, 0.152), (0.050, 0.180), (0.000, 0.186), (-0.050, 0.180),
], dtype=np.float64)


def template(crop_scale: float) -> np.ndarray:
    """The shape in crop fractions, normalised so crop_from_points gives back the same crop."""
    m = MEAN_SHAPE - (MEAN_SHAPE.min(0) + MEAN_SHAPE.max(0)) / 2
    m = m / (m.max(0) - m.min(0)).max()
    return (0.5 + m / crop_scale).astype(np.float32)


def build(folder, name: str = "fake68", size: int = 32, channels: int = 1, crop_scale: float = 1.3,
          contrast_gain: float = 8.0, card_kwargs: dict | None = None) -> Path:
    """Write NAME.onnx and NAME.json into `folder`; returns the .onnx path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fkp_live.card import ModelCard

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tpl = template(crop_scale)[None]  # (1, 68, 2)
    inits = [
        numpy_helper.from_array(tpl, "template"),
        numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "zero"),
        numpy_helper.from_array(np.array([contrast_gain], np.float32), "gain"),
        numpy_helper.from_array(np.array([0.0], np.float32), "lo"),
        numpy_helper.from_array(np.array([1.0], np.float32), "hi"),
        numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape3"),
        numpy_helper.from_array(np.array([size // 4, size // 4], np.int64), "starts"),
        numpy_helper.from_array(np.array([size - size // 4, size - size // 4], np.int64), "ends"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["centre"]),
        helper.make_node("ReduceMean", ["centre"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["centre", "centre"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["meansq"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "mean"], ["mean2"]),
        helper.make_node("Sub", ["meansq", "mean2"], ["var"]),
        helper.make_node("Relu", ["var"], ["var_pos"]),
        helper.make_node("Sqrt", ["var_pos"], ["std"]),
        helper.make_node("Mul", ["std", "gain"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "lo", "hi"], ["confidence"]),
        # points = template + 0 x mean, so the batch dimension comes from the input
        helper.make_node("Reshape", ["mean", "shape3"], ["mean3"]),
        helper.make_node("Mul", ["mean3", "zero"], ["zeros"]),
        helper.make_node("Add", ["template", "zeros"], ["points"]),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", channels, size, size])],
        [helper.make_tensor_value_info("points", TensorProto.FLOAT, ["batch", 68, 2]),
         helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["batch"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    kw = dict(name=name, schema="ibug68", input_size=size, channels=channels,
              mean=[0.5] * channels, std=[0.5] * channels, crop_scale=crop_scale, crop_rotate=True,
              description="test stand-in: mean shape + contrast confidence", licence="test only")
    kw.update(card_kwargs or {})
    ModelCard(**kw).save(path.with_suffix(".json"))
    return path
