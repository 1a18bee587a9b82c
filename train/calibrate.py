"""Box calibration: how each runtime detector's box maps to a model's crop.

`measure` compares, for every face of a dataset, the crop made from its true points (the model's
convention) with the box the runtime's detector finds; the medians of the centre offset (in box
sizes, in the eye-levelled frame) and of the size ratio become (dx, dy, scale) in the model card.
`read` loads such a file back for export, and refuses one that is not a calibration.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from . import echo as _echo

DETECTORS = ("blazeface", "blazeface-full", "haar")


class CalibrationError(Exception):
    """A box calibration file (or card) that cannot be read or is not a calibration; names the file."""


def measure(data, task_name: str = "ibug68", crop_scale: float | None = None, split: str = "train",
            limit: int | None = None, echo=_echo) -> dict[str, list[float]]:
    """Detector name -> [dx, dy, scale] over a split's faces; one summary line per detector."""
    import numpy as np
    from tqdm import tqdm

    from fkp_live import schemas
    from fkp_live.crop import crop_from_points, roll_from_eyes
    from fkp_live.track.detect import make_detector

    from .datasets import load_split
    from .tasks import get

    task = get(task_name).with_(channels=3)
    crop_scale = crop_scale or task.crop_scale
    samples, _ = load_split(task, data, split)
    samples = samples[:limit]
    schema = schemas.get(task.schema)
    result = {}
    for name in DETECTORS:
        det = make_detector(name)
        rows, missed = [], 0
        for smp in tqdm(samples, desc=name, leave=False):
            crop = crop_from_points(smp.points, schema, crop_scale, task.crop_rotate, mask=smp.mask)
            dets = det(smp.image)
            best, best_d = None, math.inf
            for d in dets:
                bx, by = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
                dist = math.hypot(bx - crop.cx, by - crop.cy)
                if dist < best_d and dist < 0.5 * crop.side:
                    best, best_d = d, dist
            if best is None:
                missed += 1
                continue
            # at run time the roll comes from the detector's eyes (BlazeFace) or is 0 (Haar)
            ang = 0.0 if best.eyes is None else roll_from_eyes(best.eyes[0], best.eyes[1])
            size = best.size
            ox, oy = crop.cx - (best.box[0] + best.box[2]) / 2, crop.cy - (best.box[1] + best.box[3]) / 2
            c, s_ = math.cos(ang), math.sin(ang)
            rows.append(((c * ox + s_ * oy) / size, (-s_ * ox + c * oy) / size, crop.side / size))
        det.close()
        if not rows:
            echo(f"{name}: found no face; not calibrated", err=True)
            continue
        med = np.median(np.array(rows), axis=0)
        spread = np.percentile(np.array(rows), [25, 75], axis=0)
        result[name] = [round(float(v), 4) for v in med]
        echo(f"{name}: dx={med[0]:.3f} dy={med[1]:.3f} scale={med[2]:.3f} over {len(rows)} faces "
             f"({missed} missed); IQR of scale {spread[0, 2]:.3f}..{spread[1, 2]:.3f}")
    return result


def save(calibration: dict, out) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(calibration, indent=2) + "\n")


def check(calibration, where) -> dict[str, list[float]]:
    """`calibration` if it maps detector names to [dx, dy, scale] (scale > 0); else CalibrationError."""
    if not isinstance(calibration, dict):
        raise CalibrationError(f"{where}: not a box calibration: expected a JSON object of "
                               f"detector name -> [dx, dy, scale], got {type(calibration).__name__}")
    for name, v in calibration.items():
        ok = (isinstance(v, list) and len(v) == 3
              and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))
        if not ok or v[2] <= 0:
            raise CalibrationError(f"{where}: not a box calibration: detector {name!r} has {v!r}, "
                                   "expected [dx, dy, scale] with scale > 0")
    return calibration


def read(path) -> dict[str, list[float]]:
    """A calibration file written by `save` (`fkp-train calibrate`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"{path}: cannot read the box calibration ({e})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{path}: not a box calibration: not valid JSON ({e}); "
                               "measure it again with `fkp-train calibrate`") from None
    return check(d, path)


def from_card(card_path) -> dict[str, list[float]]:
    """The box calibration of an existing model card (kept when a model is exported again)."""
    from fkp_live.card import ModelCard, ModelError

    try:
        card = ModelCard.load(card_path)
    except (ModelError, OSError, TypeError) as e:
        raise CalibrationError(f"{card_path}: cannot keep the box calibration of this existing card "
                               f"({e}); give a calibration file or delete the card") from None
    return check(card.box_calibration, f"{card_path} (box_calibration)")
