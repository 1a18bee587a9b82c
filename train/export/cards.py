"""The model card written beside an export (the contract with the runtime, fkp_live.card): licences,
the evaluation protocol, the training command chain, the variants' cards.
"""
from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path


from fkp_live.card import ModelCard

from ..datasets import MEAN, STD
from ..tasks import Task


LICENCES = {
    "300w": "Trained on 300-W (AFW, HELEN, LFPW): research use only, no commercial use "
            "(C. Sagonas et al., '300 Faces In-the-Wild Challenge', ICCV-W 2013). This model "
            "inherits those terms.",
    "imm": "Trained on the IMM Face Database: free for education and research with a reference "
           "to M. B. Stegmann, B. K. Ersboll, R. Larsen, 'FAME - A Flexible Appearance Modelling "
           "Environment', IEEE Trans. on Medical Imaging 22(10), 2003.",
    "kaggle": "Trained on a Kaggle-format dataset converted from 300-W (research use only, no "
              "commercial use; see 300-W's terms).",
    "csv": "Trained on user data: the data's own licence applies.",
}


def make_card(task: Task, name: str, metrics: dict | None = None, command: str = "",
              data: str = "", box_calibration: dict | None = None, flip_average: bool = False,
              ensemble: int = 1, shift_average: int = 0, readings: list[str] | None = None,
              shape_correction: dict | None = None) -> ModelCard:
    w, h = task.size
    parts = [f"{task.net} network, {w}x{h} {'grey' if task.channels == 1 else 'BGR'} input, {task.loss} "
             f"loss; task preset {task.name!r} ({task.mode} mode)"]
    if readings:  # what each net reads
        words = {"P": "plain", "F": "with its mirror image", "S": f"moved by +-{shift_average} px on the diagonal",
                 "FS": f"with its mirror image, each moved by +-{shift_average} px on the diagonal",
                 "X": f"moved by +{shift_average} px on the diagonal and with the mirror image of it "
                      f"moved by -{shift_average} px"}
        if len(readings) == 1:
            parts.append(f"each crop read {words[readings[0]]}, inside the graph")
        else:
            parts.append("inside the graph, " + ", ".join(f"net {i} reads each crop {words[u]}"
                                                          for i, u in enumerate(readings, 1))
                         + ", the nets weighted by their readings")
    else:  # every net reads alike
        if ensemble > 1:
            parts.append(f"the mean of {ensemble} such nets, trained apart")
        if flip_average:
            parts.append("each crop averaged with its mirror image inside the graph")
        if shift_average:
            parts.append(f"and with the crop moved by +-{shift_average} px on the diagonal, inside the graph")
    training = {"command": command, "data": data, "task": task.to_dict()}
    if shape_correction:
        parts.append("the points then corrected by a linear shape model fitted on the training split's "
                     "runtime readings (`fkp-train shape-fit`), inside the graph")
        training["shape_correction"] = shape_correction
    return ModelCard(
        name=name, schema=task.schema, input_size=w, channels=task.channels,
        mean=[MEAN] * task.channels, std=[STD] * task.channels,
        crop_scale=task.crop_scale, crop_rotate=task.crop_rotate,
        box_calibration=box_calibration or {},
        description="; ".join(parts),
        training=training,
        metrics=metrics or {},
        licence=LICENCES.get(task.reader, ""),
    )


def card_variant(card: ModelCard, name: str) -> ModelCard:
    """A copy of `card` under another name (for NAME.int8 / NAME.fp16) that shares no dict or
    list with it: changing one card's metrics never changes another's."""
    variant = copy.deepcopy(card)
    variant.name = name
    return variant


def protocol(task: Task, split: str) -> str:
    """What a card's metrics were measured on, in words."""
    where = {
        "300w": f"the fixed '{split}' split of 300-W afw + helen_train + lfpw_train (a hash of each "
                "file name, train.data.ibug.split_of: 10% test, 5% val); the test split takes no part "
                "in training or model selection",
        "imm": "IMM people 33-40 (the course projects' person split; the model was selected on it)",
        "kaggle": f"the '{split}' part of the Kaggle-format file (10% of rows by a hash of the row)",
    }.get(task.reader, split)
    crop = ("crops made from the true points with the card's crop convention (as in tracking)"
            if task.mode == "crop" else "the whole image")
    return f"{where}; input: {crop}; NME = mean point error / outer-eye-corner distance"


def read_training_command(run_dir: Path) -> tuple[str, str]:
    """The command and data a run was trained with, from its task.json.

    A fine-tuned run (`--init`) gives the commands of the whole chain, first to last, joined by &&.
    """
    p = run_dir / "task.json"
    if not p.exists():
        return "", ""
    d = json.loads(p.read_text())
    argv = d.get("argv", [])
    cmd = shlex.join(["fkp-train"] + argv[1:]) if argv else ""
    if d.get("init"):
        first, _ = read_training_command(Path(d["init"]).parent)
        if first and cmd:
            cmd = f"{first} && {cmd}"
    if d.get("before") and cmd:  # a checkpoint read from an exported model: that model's chain
        cmd = f"{d['before']} && {cmd}"
    data = d.get("data", "")
    if d.get("extra"):
        from ..pseudo_label import manifest_of

        data += " + " + " + ".join(d["extra"])
        for extra in d["extra"]:  # pseudo-labelled folders: the command that labelled them comes first
            made = manifest_of(extra)
            if made and made.get("command") and cmd:
                cmd = f"{made['command']} && {cmd}"
    return cmd, data
