"""The model card: the JSON beside each ONNX file, and the contract between training and runtime.

The runtime reads every model constant (schema, input size and channels, normalisation, crop
convention, output names) from here, never from code, so a newly trained model drops in.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import schemas

FORMAT_VERSION = 1


class ModelError(Exception):
    """A model file or its card is missing, corrupt or inconsistent."""


@dataclass
class ModelCard:
    name: str
    schema: str
    input_size: int
    channels: int  # 1 = greyscale, 3 = BGR
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    # crop convention (see fkp_live.crop)
    crop_scale: float = 1.3
    crop_rotate: bool = True
    # detector name -> (dx, dy, scale): how that detector's box becomes this model's crop
    box_calibration: dict[str, list[float]] = field(default_factory=dict)
    input_name: str = "image"
    points_output: str = "points"
    confidence_output: str | None = "confidence"
    description: str = ""
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    licence: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def keypoints(self) -> schemas.Schema:
        return schemas.get(self.schema)

    def to_json(self) -> dict:
        d = asdict(self)
        d["layout"] = {
            "input": f"{self.input_name}: float32 [batch, {self.channels}, {self.input_size}, "
            f"{self.input_size}], pixels/255 then (x - mean) / std",
            "points": f"{self.points_output}: float32 [batch, {self.keypoints.n}, 2], (x, y) as "
            "fractions of the crop (0..1)",
            "confidence": None if not self.confidence_output else
            f"{self.confidence_output}: float32 [batch], face presence in 0..1",
            "crop": "square centred on the keypoints' box in the eye-line frame, side = "
            "crop_scale x the box's longer edge, rotated so the eyes are level "
            "(fkp_live.crop.crop_from_points); from a detector box: box_calibration "
            "(fkp_live.crop.crop_from_box)",
        }
        return d

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelCard":
        path = Path(path)
        if not path.exists():
            raise ModelError(
                f"model card {path} is missing: every model needs its card (NAME.json beside "
                "NAME.onnx); export the model with `fkp-train export` to write one"
            )
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelError(f"model card {path} is not valid JSON ({e}); re-export the model") from e
        if not isinstance(d, dict):
            raise ModelError(f"model card {path} is not a JSON object (it holds a {type(d).__name__}); "
                             "re-export the model")
        d.pop("layout", None)
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("name", "schema", "input_size", "channels") if k not in d]
        if missing:
            raise ModelError(f"model card {path} lacks {', '.join(missing)}; re-export the model")
        bad = _type_errors(d)
        if bad:
            raise ModelError(f"model card {path}: {'; '.join(bad)}; re-export the model")
        card = cls(**{k: v for k, v in d.items() if k in known})
        if card.schema not in schemas.SCHEMAS:
            raise ModelError(
                f"model card {path} names an unknown keypoint schema {card.schema!r}; "
                f"known: {', '.join(sorted(schemas.SCHEMAS))}"
            )
        if not isinstance(card.format_version, int) or card.format_version > FORMAT_VERSION:
            raise ModelError(
                f"model card {path} has format_version {card.format_version!r}; this fkp-live reads "
                f"cards up to version {FORMAT_VERSION}: upgrade fkp-live (pip install -U fkp-live)"
            )
        if card.channels not in (1, 3):
            raise ModelError(f"model card {path}: channels must be 1 or 3, not {card.channels}")
        if len(card.mean) not in (1, card.channels) or len(card.std) not in (1, card.channels):
            raise ModelError(f"model card {path}: mean and std need 1 or {card.channels} values")
        if not all(v > 0 for v in card.std):
            raise ModelError(f"model card {path}: std values must be positive")
        return card


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _type_errors(d: dict) -> list[str]:
    """What in a card's fields has the wrong type (the runtime would fail on it later)."""
    bad = []
    for k in ("name", "schema", "input_name", "points_output", "description", "licence"):
        if k in d and not isinstance(d[k], str):
            bad.append(f"{k} must be a string")
    if "confidence_output" in d and not (d["confidence_output"] is None or isinstance(d["confidence_output"], str)):
        bad.append("confidence_output must be a string or null")
    for k in ("input_size", "channels"):
        if not (isinstance(d.get(k), int) and not isinstance(d.get(k), bool) and d[k] > 0):
            bad.append(f"{k} must be a positive whole number")
    for k in ("mean", "std"):
        if k in d and not (isinstance(d[k], list) and d[k] and all(_is_num(v) for v in d[k])):
            bad.append(f"{k} must be a list of finite numbers")
    if "crop_scale" in d and not (_is_num(d["crop_scale"]) and d["crop_scale"] > 0):
        bad.append("crop_scale must be a positive number")
    if "crop_rotate" in d and not isinstance(d["crop_rotate"], bool):
        bad.append("crop_rotate must be true or false")
    cal = d.get("box_calibration", {})
    if not (isinstance(cal, dict) and all(isinstance(v, list) and len(v) == 3 and all(_is_num(x) for x in v)
                                          for v in cal.values())):
        bad.append("box_calibration must map detector names to [dx, dy, scale]")
    for k in ("training", "metrics"):
        if k in d and not isinstance(d[k], dict):
            bad.append(f"{k} must be an object")
    return bad


def models_dir() -> Path:
    """Where shipped models live: `models/` of a source checkout, or the installed copy."""
    here = Path(__file__).resolve().parent
    checkout = here.parent / "models"
    if checkout.is_dir() and any(checkout.glob("*.onnx")):
        return checkout
    return here / "models"


# The two 68-point models by what they are for: `fast` keeps a 2-core CPU real time (the default),
# `accurate` trades speed for error. An alias names a family: its INT8 file on a CPU (as accurate
# as FP32 and 1.4-1.8x faster), its FP16 file on a GPU, the FP32 file where neither ships.
ALIASES = {"fast": "ibug68", "accurate": "ibug68-accurate"}
DEFAULT_MODEL = "fast"


def resolve(model: str | os.PathLike | None, gpu: bool = False) -> tuple[Path, Path]:
    """A model name (shipped or an alias) or a path to an .onnx file -> (onnx path, card path)."""
    model = DEFAULT_MODEL if model is None else str(model)
    if model in ALIASES:
        base = ALIASES[model]
        for variant in (f"{base}.fp16" if gpu else f"{base}.int8", base):
            if (models_dir() / f"{variant}.onnx").exists():
                model = variant
                break
    p = Path(model)
    if p.suffix != ".onnx":
        cand = models_dir() / f"{model}.onnx"
        if not cand.exists():
            names = sorted(x.stem for x in models_dir().glob("*.onnx"))
            raise ModelError(
                f"no model named {model!r}; shipped models: {', '.join(names) or 'none'} "
                f"(aliases: {', '.join(f'{a}={m}' for a, m in ALIASES.items())}); "
                "or pass the path of an .onnx file"
            )
        p = cand
    if not p.exists():
        raise ModelError(f"model file {p} does not exist; pass a shipped model name or an .onnx path")
    return p, p.with_suffix(".json")
