"""`fkp-train export` as one function, `export_checkpoint`, in named steps."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fkp_live.card import ModelCard

from .. import echo as _echo
from .cards import card_variant, make_card, protocol, read_training_command
from .graphs import (READINGS, Ensemble, ExportError, ShapeCorrected, export_onnx, flip_shift_of, load_members,
                     parse_readings, read_as)
from .measure import ParityError, cpu_latency, crops_of, evaluate_onnx, parity
from .quantise import convert_fp16, quantize_int8
from .trt import build_tensorrt


def export_checkpoint(checkpoint, out, data=None, metrics_split: str = "test", calibration=None,
                      tolerance: float = 0.05, int8: bool = False, fp16: bool = False,
                      tensorrt: bool = False, flip_average: bool = False, ensemble=(), shift_average: int = 0,
                      readings: str | None = None, shape_correction=None, point_confidence: bool = False,
                      echo=_echo) -> ModelCard:
    """Export a checkpoint to OUT (NAME.onnx) and its card NAME.json, checked for parity.

    `data`: the task's dataset, for parity on real crops, the card's metrics on `metrics_split`
    and INT8 calibration. `calibration`: a box calibration file (`train.calibrate`); without one,
    an existing NAME.json's calibration is kept. `int8`, `fp16`: also NAME.int8.onnx and
    NAME.fp16.onnx, each with its own card. `ensemble`: more checkpoints of the same task, averaged
    with the first inside the graph (the card records every net's command chain); a net trained
    at another input size reads the first one's crop resized (`Resized`). `shift_average`
    d: each crop read moved by (+d, +d) and by (-d, -d) pixels, averaged (2x the work).
    `readings` ("F,P"): what each net reads instead (P plain, F and its mirror, S shifted by
    +-`shift_average`, FS both, X the crop moved by +`shift_average` and its mirror by -), the
    nets weighted by their readings. `shape_correction`: a file from `fkp-train shape-fit`, applied
    to the points inside the graph (`ShapeCorrected`). `point_confidence`: the graph also gives
    each point's confidence from its heatmap (`train.point_confidence`). `tensorrt`: also NAME.engine, built last (raises
    `TensorRTUnavailable` after everything else is written). Progress lines go to `echo`.
    Raises `ParityError` (the file removed) when torch and ONNX Runtime differ by more than
    `tolerance` pixels. Returns the FP32 card.
    """
    from ..checkpoint import load_model
    from ..datasets import load_split

    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: the file name must end in .onnx")
    if int8 and not data:
        raise ExportError("INT8 export needs the task's data: INT8 is calibrated on training crops")
    model, task = load_model(checkpoint)
    members = load_members(task, ensemble)
    # read before anything is written: a bad calibration leaves the old export as it was
    box_cal = _box_calibration(calibration, out)
    corr = _shape_correction(shape_correction, task)
    out.parent.mkdir(parents=True, exist_ok=True)
    units = _reading_units(readings, flip_average, shift_average, task, members)
    nets = [read_as(m, u, t, task.size[0], shift_average)
            for (m, t), u in zip([(model.eval(), task)] + [(m, t) for _, m, t in members], units)]
    model = nets[0] if len(nets) == 1 else Ensemble(nets, [READINGS[u] for u in units])
    corr_info = None
    if corr is not None:
        model = ShapeCorrected(model, corr["mean"], corr["weights"]).eval()
        corr_info = {"file": Path(shape_correction).name,
                     **{k: v for k, v in corr.items() if k not in ("mean", "weights")}}
    export_onnx(model, task, out)
    if point_confidence:  # before INT8 and FP16, which are made from this file
        from fkp_live import schemas

        from ..point_confidence import add_point_confidence
        add_point_confidence(out, out, schemas.get(task.schema).n)
    cmd, train_data = _command_chain(checkpoint, ensemble)
    card = make_card(task, out.stem, command=cmd, data=train_data, box_calibration=box_cal,
                     flip_average=flip_average, ensemble=1 + len(members), shift_average=shift_average,
                     readings=units if readings else None, shape_correction=corr_info)
    _check_parity(model, out, card, task, data, tolerance, echo)
    test = None
    if data:
        test, _ = load_split(task, data, metrics_split)
        m = evaluate_onnx(out, card, test, task)
        card.metrics.update({"split": metrics_split, "data": str(data), "protocol": protocol(task, metrics_split),
                             "fp32": m})
        echo(f"{metrics_split} metrics (ONNX Runtime, fp32): {json.dumps(m)}")
    size, ch = task.size[0], task.channels
    card.metrics["latency_ms_cpu_1thread"] = cpu_latency(out, size, ch)
    if int8:
        _int8_variant(out, card, task, data, test, echo)
    if fp16:
        f = out.with_name(out.stem + ".fp16.onnx")
        convert_fp16(out, f)
        card_variant(card, f.stem).save(f.with_suffix(".json"))
        echo(f"fp16: {f} (for GPU execution providers)")
    card.save(out.with_suffix(".json"))
    echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json')}")
    if tensorrt:
        build_tensorrt(out, out.with_suffix(".engine"), input_size=size, channels=ch)
        echo(f"tensorrt: wrote {out.with_suffix('.engine')}")
    return card


def _box_calibration(calibration, out: Path) -> dict:
    """The detector box calibration for the card: from `calibration` (a `train.calibrate` file),
    else the one in an existing OUT card, else none."""
    from ..calibrate import from_card, read as read_calibration

    if calibration:
        return read_calibration(calibration)
    if out.with_suffix(".json").exists():
        return from_card(out.with_suffix(".json"))
    return {}


def _shape_correction(path, task) -> dict | None:
    """The `fkp-train shape-fit` file to put into the graph, read and checked (None: none)."""
    if not path:
        return None
    from fkp_live import schemas

    from ..shape_fit import ShapeFitError, read as read_correction

    try:
        return read_correction(path, points=schemas.get(task.schema).n)
    except ShapeFitError as e:
        raise ExportError(f"--shape-correction {e}") from None


def _reading_units(readings, flip_average: bool, shift_average: int, task, members) -> list[str]:
    """What each net reads (READINGS' letters): as --readings says, else every net alike by
    --flip-average and --shift-average."""
    if readings:
        if flip_average:
            raise ExportError("--readings says what each net reads; leave out --flip-average")
        return parse_readings(readings, 1 + len(members), shift_average)
    if flip_average:
        for other, _, t2 in members:
            if flip_shift_of(t2) != flip_shift_of(task):
                raise ExportError(f"{other}: trained with flip_shift {flip_shift_of(t2)} where the first "
                                  f"checkpoint has {flip_shift_of(task)}; a mirror-averaged ensemble needs one")
    return [("F" if flip_average else "") + ("S" if shift_average else "") or "P"] * (1 + len(members))


def _command_chain(checkpoint, ensemble) -> tuple[str, str | None]:
    """The training commands behind the export (every net's, for an ensemble) and the data."""
    cmd, train_data = read_training_command(Path(checkpoint).parent)
    for i, other in enumerate(ensemble, 2):
        c2, _ = read_training_command(Path(other).parent)
        cmd += f" ; ensemble net {i}: {c2 or other}"
    return cmd, train_data


def _check_parity(model, out: Path, card, task, data, tolerance: float, echo) -> None:
    """torch against ONNX Runtime on the same crops (real validation faces with `data`, else
    synthetic ones); over `tolerance` px the export is removed (ParityError). Sets card.metrics."""
    from ..datasets import load_split

    if data:
        val, _ = load_split(task, data, "val")
        crops, _ = crops_of(val, task, limit=32)
    else:
        rng = np.random.default_rng(0)
        w, h = task.size
        crops = rng.integers(0, 256, (8, h, w, task.channels), dtype=np.uint8)
    diff = parity(model, out, card, crops)
    echo(f"parity: largest torch/ONNX Runtime difference {diff:.5f} px at {task.size[0]}px input "
         f"({len(crops)} crops{' of real faces' if data else ', synthetic'})")
    if diff > tolerance:
        out.unlink()
        raise ParityError(f"parity check failed: {diff:.4f} px > {tolerance} px; export removed")
    card.metrics = {"parity_max_px": round(diff, 5)}


def _int8_variant(out: Path, card, task, data, test, echo) -> None:
    """NAME.int8.onnx, calibrated on training crops, with its card; its metrics and speed-up go
    into the FP32 card too."""
    from ..datasets import load_split, to_input

    train, _ = load_split(task, data, "train")
    calib, _ = crops_of(train, task, limit=256)
    q = out.with_name(out.stem + ".int8.onnx")
    quantize_int8(out, q, to_input(calib).numpy())
    qm = evaluate_onnx(q, card, test, task)
    size, ch = task.size[0], task.channels
    lat = cpu_latency(q, size, ch)
    f32 = card.metrics["latency_ms_cpu_1thread"]
    card.metrics["int8"] = {"file": q.name, **qm, "latency_ms_cpu_1thread": lat,
                            "speedup_batch1": round(f32["batch1"] / lat["batch1"], 2),
                            "speedup_batch4": round(f32["batch4"] / lat["batch4"], 2)}
    card_variant(card, q.stem).save(q.with_suffix(".json"))
    echo(f"int8: {q} metrics {json.dumps(qm)} latency {lat} "
         f"(fp32 {f32}, speed-up x{card.metrics['int8']['speedup_batch1']} at batch 1)")
