"""Shipped models: NAME.onnx with its card NAME.json (installed as fkp_live.models)."""
