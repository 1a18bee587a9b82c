"""Export a checkpoint to ONNX (+ its model card), INT8, FP16 and TensorRT.

The ONNX export is checked for parity: the same crops go through torch and through the
runtime's own ONNX Runtime wrapper (`fkp_live.Landmarker`), and the export fails when they differ
by more than `tolerance` pixels at the model's input size. `export_checkpoint` (`pipeline`) is the
whole of `fkp-train export`; its steps live in one module per concern: `graphs` (what goes into the
ONNX graph, and the export), `measure` (parity, accuracy, latency), `quantise` (INT8, FP16), `trt`
(a TensorRT engine) and `cards` (the model card). Every public name is here too.
"""
from .cards import LICENCES, card_variant, make_card, protocol, read_training_command
from .graphs import (MIRRORED, MOVED, OPSET, READINGS, SHIFT_AVERAGED, Ensemble, ExportError, ExportWrapper,
                     FlipAverage, Resized, ShapeCorrected, ShiftAverage, check_shift, export_onnx, flip_shift_of,
                     load_members, parse_readings, read_as, same_input)
from .measure import ParityError, cpu_latency, crops_of, evaluate_onnx, latency_ms, parity
from .pipeline import export_checkpoint
from .quantise import convert_fp16, leading_thin_convs, quantize_int8
from .trt import TensorRTUnavailable, build_tensorrt

__all__ = ["LICENCES", "card_variant", "make_card", "protocol", "read_training_command", "MIRRORED", "MOVED", "OPSET",
           "READINGS", "SHIFT_AVERAGED", "Ensemble", "ExportError", "ExportWrapper", "FlipAverage", "Resized",
           "ShapeCorrected", "ShiftAverage", "check_shift", "export_onnx", "flip_shift_of", "load_members",
           "parse_readings", "read_as", "same_input", "ParityError", "cpu_latency", "crops_of", "evaluate_onnx",
           "latency_ms", "parity", "export_checkpoint", "convert_fp16", "leading_thin_convs", "quantize_int8",
           "TensorRTUnavailable", "build_tensorrt"]
