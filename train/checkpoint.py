"""Checkpoints: written atomically, read back without running any code that a file carries.

A checkpoint is a plain dict of tensors, numbers, strings, lists, tuples and dicts: the model's
state dict and its `Task` (best.pt), plus the optimiser, scheduler, RNG states and counters that
resume a run (last.pt). `load` reads one with PyTorch's weights-only unpickler, which builds only
those types (and the numpy scalars older runs wrote into the validation metrics); any other
pickled object (a class instance, a `__reduce__` payload) is refused before it is built.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import torch


class CheckpointError(Exception):
    """A checkpoint file is missing, unreadable, unsafe or not one of fkp-train's; names the file."""


def _numpy_scalar_globals() -> list:
    """What a pickled numpy scalar needs: the scalar constructor and its dtype."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import scalar
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32,
                                          np.int16, np.int8, np.uint8, np.bool_)]
    return [scalar, np.dtype, *dtypes]


# Everything a checkpoint may hold beyond PyTorch's own weights-only types (tensors, dicts,
# OrderedDicts, lists, tuples, str, int, float, bool, None): numpy scalars in the "val" metrics of
# checkpoints written before `save_atomic` made them plain floats.
SAFE_GLOBALS = _numpy_scalar_globals()


def plain(obj):
    """`obj` with numpy scalars turned into Python numbers, inside dicts, lists and tuples.

    Containers without numpy scalars are returned as they are (the same object), so a state dict
    keeps its type and `_metadata`.
    """
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        items = {k: plain(v) for k, v in obj.items()}
        if all(items[k] is v for k, v in obj.items()):
            return obj
        new = type(obj)(items)
        if hasattr(obj, "_metadata"):
            new._metadata = obj._metadata
        return new
    if isinstance(obj, (list, tuple)):
        items = [plain(v) for v in obj]
        if all(a is b for a, b in zip(items, obj)):
            return obj
        return type(obj)(items)
    return obj


def save_atomic(obj, path: str | Path) -> None:
    """Write `obj` (numpy scalars made plain) to a temporary file, then rename it over `path`:
    a crash never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(plain(obj), tmp)
    os.replace(tmp, path)


def load(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint's dict, read weights-only: no object the file names is ever constructed
    unless it is a tensor, a plain container, a number, a string or a numpy scalar."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `fkp-train fit`")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # the weights-only unpickler stops at the first thing it does not build itself, before
        # calling anything: name that thing
        text = str(e)
        m = re.search(r"GLOBAL (\S+)", text)
        r = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", text)
        detail = f"it holds a pickled {m.group(1)}" if m else (r.group(1) if r else text.splitlines()[0])
        raise CheckpointError(
            f"{path}: not a plain fkp-train checkpoint ({detail}); refused without unpickling it, "
            "since arbitrary pickled objects can run code (fkp-train checkpoints hold only tensors, "
            "numbers, strings, lists and dicts)"
        ) from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways inside the unpickler
        first = f"{type(e).__name__}: {str(e).splitlines()[0]}" if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a checkpoint of fkp-train (unreadable: {first})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not a checkpoint of fkp-train (no model state in it)")
    return state


def task_of(state: dict, path: str | Path = "checkpoint"):
    """The `Task` a checkpoint was trained with."""
    from .tasks import Task

    try:
        d = dict(state["task"])
        d["size"] = tuple(d["size"])
        for k in ("points", "label_subset"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return Task(**d)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: not a checkpoint of fkp-train (no usable task in it: {e})") from None


def load_model(path: str | Path):
    """A best.pt or last.pt -> (model in eval mode on the CPU, Task)."""
    from .nets import build_model

    state = load(path)
    task = task_of(state, path)
    model = build_model(task)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the weights do not fit the {task.net} network of its task ({e})") from None
    return model.eval(), task
