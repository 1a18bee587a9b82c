"""Experiment presets: which data, schema, network, input and loss each task starts from.

Every field can be overridden from `fkp-train fit`; the preset is only the well-measured default.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from fkp_live.schemas import IMM_NOSE_TIP


class TaskError(ValueError):
    """Task options that cannot train together (the message names them)."""


@dataclass
class Task:
    name: str
    schema: str
    reader: str  # 300w | imm | kaggle | csv
    net: str
    size: tuple[int, int]  # (width, height) of the network input
    channels: int = 1
    mode: str = "crop"  # crop: the runtime's face crop; full: the whole image resized
    crop_scale: float = 1.3
    crop_rotate: bool = True
    loss: str = "wing"
    epochs: int = 30
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    metric: str = "nme_io"  # the validation metric that picks the best checkpoint (lower is better)
    augment: dict = field(default_factory=dict)
    net_args: dict = field(default_factory=dict)
    presence_weight: float = 0.0  # weight of the face-presence loss (needs negatives)
    heatmap_weight: float = 0.0  # weight of the auxiliary heatmap loss (heatmap nets only)
    points: tuple[int, ...] | None = None  # keep only these source points (e.g. the nose tip)
    # the seeds' two-model Kaggle approach: train on these labels only / on complete rows only
    label_subset: tuple[int, ...] | None = None
    complete_only: bool = False
    # read 68-point data and map it to this task's schema (fkp_live.schemas.MAPPINGS)
    map_from: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def with_(self, **kw) -> "Task":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


# The jitter of runtime-style crops: small shifts and scales, rolls the eye-line correction may miss,
# occluders (the 68-point presets add no-face crops for the presence head).
CROP_JITTER = dict(shift=0.03, scale=(0.95, 1.1), rotate_deg=20, occlude=0.15)

TASKS = {
    # 1. the nose tip on IMM, whole image at 80x60 as in the seeds
    "nose": Task(
        "nose", "nose1", "imm", "nose", (80, 60), mode="full", loss="l1", metric="mean_px",
        epochs=60, batch=16, lr=1e-3, points=(IMM_NOSE_TIP,),
        augment=dict(rotate_deg=12, scale=(0.9, 1.1), shift=0.04, flip=0.5, occlude=0.0),
    ),
    # 1b. the same whole image through the heatmap net: a soft-argmax over 1/4-resolution maps
    "nose-hm": Task(
        "nose-hm", "nose1", "imm", "mobile", (192, 144), mode="full", loss="wing", metric="mean_px",
        epochs=60, batch=16, lr=1e-3, points=(IMM_NOSE_TIP,),
        augment=dict(rotate_deg=12, scale=(0.9, 1.1), shift=0.04, flip=0.5, occlude=0.0),
    ),
    # 2. all 58 IMM points, whole image at 240x180
    "imm58": Task(
        "imm58", "imm58", "imm", "imm", (240, 180), mode="full", loss="wing", metric="nme_io",
        epochs=80, batch=16, lr=1e-3,
        augment=dict(rotate_deg=12, scale=(0.9, 1.1), shift=0.04, flip=0.5, occlude=0.1),
    ),
    # 2a. the same whole image through the heatmap net
    "imm58-hm": Task(
        "imm58-hm", "imm58", "imm", "mobile", (192, 144), mode="full", loss="wing", metric="nme_io",
        epochs=80, batch=16, lr=2e-3,
        augment=dict(rotate_deg=12, scale=(0.9, 1.1), shift=0.04, flip=0.5, occlude=0.1),
    ),
    # 2b. IMM 58 on the runtime's face crop (what ships for `--model imm58`)
    "imm58-crop": Task(
        "imm58-crop", "imm58", "imm", "mobile", (128, 128), mode="crop", crop_scale=1.35,
        loss="wing", epochs=80, batch=16, lr=2e-3, presence_weight=0.1,
        augment={**CROP_JITTER, "negative": 0.1},
    ),
    # 3. 300-W 68 points: the real-time heatmap net (the default runtime model) and ResNet-18
    "ibug68": Task(
        "ibug68", "ibug68", "300w", "mobile", (128, 128), mode="crop", crop_scale=1.3,
        loss="wing", epochs=60, batch=32, lr=2e-3, presence_weight=0.1,
        # jitter kept small enough that points stay inside the crop: soft-argmax cannot
        # reach outside it (with shift 0.08, 40% of crops lost a point over the edge)
        augment={**CROP_JITTER, "negative": 0.1},
    ),
    "ibug68-resnet": Task(
        "ibug68-resnet", "ibug68", "300w", "resnet18", (128, 128), mode="crop", crop_scale=1.3,
        loss="wing", epochs=12, batch=32, lr=1e-3,
        augment=dict(CROP_JITTER),
    ),
    # 4. Kaggle 15 points, 96x96 greyscale, single model with the masked loss
    "kaggle15": Task(
        "kaggle15", "kaggle15", "kaggle", "kaggle", (96, 96), mode="full", loss="mse",
        metric="rmse_px", epochs=25, batch=32, lr=1e-3,
        augment=dict(rotate_deg=15, scale=(0.92, 1.08), shift=0.03, flip=0.5, occlude=0.0),
    ),
    # 4b. the seeds' two-model approach: one net on the 4 points every image has, one on the
    # ~30% of images with all 15; `fkp-train eval A.pt --two-model B.pt` combines them
    "kaggle15-big4": Task(
        "kaggle15-big4", "kaggle15", "kaggle", "kaggle", (96, 96), mode="full", loss="mse",
        metric="rmse_px", epochs=15, batch=32, lr=1e-3, label_subset=(0, 1, 10, 14),
        augment=dict(rotate_deg=15, scale=(0.92, 1.08), shift=0.03, flip=0.5, occlude=0.0),
    ),
    "kaggle15-complete": Task(
        "kaggle15-complete", "kaggle15", "kaggle", "kaggle", (96, 96), mode="full", loss="mse",
        metric="rmse_px", epochs=15, batch=32, lr=1e-3, complete_only=True,
        augment=dict(rotate_deg=15, scale=(0.92, 1.08), shift=0.03, flip=0.5, occlude=0.0),
    ),
    # 4c. Kaggle's 15 points on the runtime's face crop, from 300-W's 68 points mapped to 15
    # (what ships for `--model kaggle15`: every point labelled, crops like the runtime's)
    "kaggle15-crop": Task(
        "kaggle15-crop", "kaggle15", "300w", "mobile", (96, 96), mode="crop", crop_scale=1.6,
        loss="wing", epochs=60, batch=32, lr=2e-3, presence_weight=0.1, map_from="ibug68",
        net_args=dict(width=0.75, decoder=32),
        augment={**CROP_JITTER, "negative": 0.1},
    ),
    # a user's own CSV (image,x_0,y_0,...): whole image at 128x128
    "csv": Task(
        "csv", "ibug68", "csv", "mobile", (128, 128), mode="crop", loss="wing", epochs=30,
    ),
}


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None
