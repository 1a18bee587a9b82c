"""What goes into an exported ONNX graph: the export wrapper (normalisation in the graph), mirror
and shift averaging, ensembles with their readings, nets resized to one input, the shape
correction; and the ONNX export itself.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


from ..tasks import Task


OPSET = 17


class ExportWrapper(nn.Module):
    """What the ONNX file computes: points in crop fractions and a presence probability."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image):
        pts, logit = self.model(image)
        return pts, torch.sigmoid(logit)


class FlipAverage(nn.Module):
    """Test-time flip averaging inside the graph: the crop and its mirror image go through the
    model as one batch; the mirror's points are flipped back (mirror permutation, and x -> the
    mirrored column as `augment.flip_matrix` defines it) and the two predictions averaged.
    Twice the work per face for a lower error."""

    def __init__(self, model: nn.Module, mirror: np.ndarray, width: int, flip_shift: float = 0.0,
                 ocular: tuple | None = None, offset: int = 0):
        super().__init__()
        self.model = model
        # offset d (the X reading): the crop read moved by (+d, +d) pixels and the mirror made from
        # it moved by (-d, -d), each reading moved back: the mirror's cost, with a shift's variety
        self.offset = check_shift(offset, width, "crossed reading") if offset else 0
        self.width = int(width)
        self.register_buffer("mirror", torch.as_tensor(np.asarray(mirror), dtype=torch.long), persistent=False)
        # points are pixel / width with integer pixel centres, so column j mirrors to width-1-j
        self.x_mirror = (width - 1) / width
        # a net trained with `flip_shift` b reads the labels' own left-right offset; its reading of
        # the mirror image, mirrored back, sits 2b x IOD to the left, and is moved back as training did
        self.flip_shift = float(flip_shift)
        if self.flip_shift and ocular is None:
            raise ValueError("flip_shift needs the schema's eye corners (ocular)")
        self.ocular = [list(g) for g in ocular] if ocular is not None else None

    def forward(self, image):
        b = image.shape[0]
        if self.offset:
            d, s = self.offset, self.width
            padded = nn.functional.pad(image, (d, d, d, d), mode="replicate")
            plain, other = padded[:, :, :s, :s], padded[:, :, 2 * d:2 * d + s, 2 * d:2 * d + s]
        else:
            plain = other = image
        pts, logit = self.model(torch.cat([plain, torch.flip(other, dims=[3])], dim=0))
        back = pts[b:][:, self.mirror]
        x = self.x_mirror - back[..., 0]
        if self.flip_shift:
            left, right = back[:, self.ocular[0]].mean(dim=1), back[:, self.ocular[1]].mean(dim=1)
            iod = torch.sqrt(((right - left) ** 2).sum(dim=-1, keepdim=True))
            x = x + 2.0 * self.flip_shift * iod
        back = torch.stack([x, back[..., 1]], dim=-1)
        # with an offset, the plain reading sits d/width right of and below the crop's and the
        # mirrored one as far left and above: the two moves cancel in the mean
        return (pts[:b] + back) * 0.5, (logit[:b] + logit[b:]) * 0.5


def check_shift(pixels, size: int, what: str) -> int:
    """A reading's shift in pixels, checked against the input size (at most a quarter of it)."""
    if not 1 <= int(pixels) < size // 4:
        raise ExportError(f"{what}: {pixels} pixels must be from 1 to {size // 4 - 1} at {size}px input")
    return int(pixels)


class ShiftAverage(nn.Module):
    """Test-time shift averaging inside the graph: the crop is read twice, moved by (+d, +d) and
    by (-d, -d) pixels (the border repeated into the gap), and the two readings, moved back, are
    averaged. The net's small sensitivity to where the face sits in its crop averages out, for
    twice the work of the wrapped model (which may itself be a FlipAverage)."""

    def __init__(self, model: nn.Module, pixels: int, size: int):
        super().__init__()
        self.model = model
        self.pad = check_shift(pixels, size, "shift average")
        self.size = int(size)
        d = self.pad
        self.shifts = [(d, d), (-d, -d)]
        # a view whose content moved right by dx reads every point dx / size further right
        self.register_buffer("moves", torch.tensor([[dx / size, dy / size] for dx, dy in self.shifts],
                                                   dtype=torch.float32), persistent=False)

    def forward(self, image):
        b, s, p = image.shape[0], self.size, self.pad
        padded = nn.functional.pad(image, (p, p, p, p), mode="replicate")
        views = [padded[:, :, p - dy:p - dy + s, p - dx:p - dx + s] for dx, dy in self.shifts]
        pts, logit = self.model(torch.cat(views, dim=0))
        k = len(self.shifts)
        pts = pts.reshape(k, b, *pts.shape[1:]) - self.moves.reshape(k, 1, 1, 2)
        return pts.mean(dim=0), logit.reshape(k, b, *logit.shape[1:]).mean(dim=0)


class Ensemble(nn.Module):
    """Several nets trained for the same task, as one graph: each crop goes through every net and
    their points (and presence logits) are averaged. Independently trained nets make partly
    independent errors, so the mean sits closer to the truth than any one of them."""

    def __init__(self, models: list[nn.Module], weights: list[float] | None = None):
        super().__init__()
        self.models = nn.ModuleList(models)
        w = [1.0] * len(models) if weights is None else [float(x) for x in weights]
        self.weights = [x / sum(w) for x in w]  # each member's share (a member may read twice)

    def forward(self, image):
        outs = [m(image) for m in self.models]
        return (sum(p * w for (p, _), w in zip(outs, self.weights)),
                sum(c * w for (_, c), w in zip(outs, self.weights)))


class ShapeCorrected(nn.Module):
    """A linear shape correction (`train.shape_fit`) after the points, inside the graph: each
    reading is aligned to the mean shape by its best similarity transform, a ridge regression of
    the aligned reading gives its error in that frame, and the error, turned and scaled back, is
    added. The same arithmetic as `shape_fit.apply`, for crop fractions as for pixels."""

    def __init__(self, model: nn.Module, mean: np.ndarray, weights: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32), persistent=False)
        self.register_buffer("weights", torch.as_tensor(np.asarray(weights), dtype=torch.float32), persistent=False)

    def forward(self, image):
        pts, logit = self.model(image)
        c = pts - pts.mean(dim=1, keepdim=True)
        m = self.mean
        n = (c * c).sum(dim=(1, 2))
        a = (c * m).sum(dim=(1, 2)) / n
        b = (c[..., 0] * m[:, 1] - c[..., 1] * m[:, 0]).sum(dim=1) / n
        a, b = a[:, None], b[:, None]
        x, y = c[..., 0], c[..., 1]
        q = torch.stack([a * x - b * y - m[:, 0], b * x + a * y - m[:, 1]], dim=-1).flatten(1)
        r = (q @ self.weights[:-1] + self.weights[-1]).reshape(pts.shape)
        det = a * a + b * b
        back = torch.stack([(a * r[..., 0] + b * r[..., 1]) / det, (a * r[..., 1] - b * r[..., 0]) / det], dim=-1)
        return pts + back, logit


# --readings: what each net of an export reads, and how many readings that is
READINGS = {"P": 1, "F": 2, "S": 2, "FS": 4, "X": 2}
MIRRORED = frozenset({"F", "FS", "X"})  # read with the mirror image (FlipAverage)
SHIFT_AVERAGED = frozenset({"S", "FS"})  # read moved both ways and averaged (ShiftAverage)
MOVED = SHIFT_AVERAGED | {"X"}  # read moved by --shift-average's pixels (X: inside FlipAverage)


def parse_readings(spec: str, nets: int, shift: int) -> list[str]:
    """`--readings` ("F,P": the first net plain and mirrored, the second plain) -> one unit per
    net. Raises ExportError naming the option when it does not fit the nets or the shift."""
    units = [u.strip().upper() for u in spec.split(",")]
    bad = [u for u in units if u not in READINGS]
    if bad:
        raise ExportError(f"--readings: unknown reading {bad[0]!r}; use P (plain), F (with the mirror "
                          "image), S (shifted +-D px), FS (both) or X (with the mirror image, the two "
                          "moved +D and -D px), one per net, e.g. F,P")
    if len(units) != nets:
        raise ExportError(f"--readings: {len(units)} given for {nets} net{'s' * (nets != 1)} "
                          "(the checkpoint and each --ensemble); give one per net")
    if any(u in MOVED for u in units) and not shift:
        raise ExportError("--readings: S, FS and X read the crop shifted; give the shift with --shift-average D")
    return units


def flip_shift_of(task: Task) -> float:
    """The labels' left-right offset a net was trained to keep (`augment.flip_shift`; 0: none)."""
    return float(task.augment.get("flip_shift", 0.0) or 0.0)


def read_as(model: nn.Module, unit: str, task: Task, size: int, shift: int) -> nn.Module:
    """One net wrapped to read each crop as `unit` says (P, F, S, FS or X) at crop size `size`:
    the mirror image (F, FS), then two shifted views of that (S, FS); X moves the mirror's own
    two views instead."""
    from fkp_live import schemas

    if unit in MIRRORED:
        sch = schemas.get(task.schema)
        model = FlipAverage(model, sch.mirror_array(), size, flip_shift_of(task), sch.ocular,
                            offset=shift if unit == "X" else 0)
    if unit in SHIFT_AVERAGED:
        model = ShiftAverage(model, shift, size)
    return model.eval()


class Resized(nn.Module):
    """A net trained at another input size, in an ensemble: it reads the ensemble's crop resized
    to its own size (bilinear, inside the graph), and its points are moved to the ensemble's
    pixel grid. Both crops span the same square with integer pixel centres, so resizing from
    `size` to `own` moves content by half a pixel of each grid: fraction u of the small crop is
    u + 0.5 / own - 0.5 / size of the large one."""

    def __init__(self, model: nn.Module, own: int, size: int):
        super().__init__()
        self.model = model
        self.own = int(own)
        self.offset = 0.5 / own - 0.5 / size

    def forward(self, image):
        small = nn.functional.interpolate(image, size=(self.own, self.own), mode="bilinear",
                                          align_corners=False)
        pts, logit = self.model(small)
        return pts + self.offset, logit


def same_input(task: Task, other: Task, where: str) -> None:
    """Raise ExportError unless two tasks read the same crops (the same square, at any square
    input size) and predict the same points."""
    if tuple(task.size) != tuple(other.size) and (len(set(other.size)) != 1 or len(set(task.size)) != 1):
        raise ExportError(f"{where}: an ensemble of input sizes needs square inputs")
    for field in ("schema", "channels", "mode", "crop_scale", "crop_rotate"):
        a, b = getattr(task, field), getattr(other, field)
        if (tuple(a) if isinstance(a, (list, tuple)) else a) != (tuple(b) if isinstance(b, (list, tuple)) else b):
            raise ExportError(f"{where}: its {field} is {b!r} where the first checkpoint's is {a!r}; "
                              "an ensemble's nets must read the same crops and predict the same points")


def load_members(task: Task, checkpoints) -> list[tuple[str, nn.Module, Task]]:
    """An ensemble's other nets: (checkpoint, net in eval mode, its task), each checked against the
    first net's task; one trained at another input size reads the first one's crop `Resized`."""
    from ..checkpoint import load_model

    out = []
    for ck in checkpoints:
        m, t = load_model(ck)
        same_input(task, t, str(ck))
        m = m.eval()
        if tuple(t.size) != tuple(task.size):
            m = Resized(m, t.size[0], task.size[0])
        out.append((str(ck), m, t))
    return out


class ExportError(Exception):
    """An export that cannot be made (bad arguments, a model TensorRT cannot build)."""


def export_onnx(model: nn.Module, task: Task, out: Path, opset: int = OPSET) -> None:
    w, h = task.size
    if w != h and task.mode == "crop":
        raise ExportError("crop-mode models must have a square input")
    dummy = torch.zeros(2, task.channels, h, w)
    tmp = out.with_name(out.name + ".tmp")
    # the TorchScript exporter gives a small plain graph of convs, resizes and a softmax that every
    # ONNX Runtime provider runs; torch deprecates it in favour of torch.export, which needs more
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            ExportWrapper(model.eval()), (dummy,), str(tmp), input_names=["image"],
            output_names=["points", "confidence"], opset_version=opset,
            dynamic_axes={"image": {0: "batch"}, "points": {0: "batch"}, "confidence": {0: "batch"}},
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(tmp))
    os.replace(tmp, out)
