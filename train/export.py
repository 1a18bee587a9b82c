"""Export a checkpoint to ONNX (+ its model card), INT8, FP16 and TensorRT.

The ONNX export is checked for parity: the same crops go through torch and through the
runtime's own ONNX Runtime wrapper (`fkp_live.Landmarker`), and the export fails when they differ
by more than `tolerance` pixels at the model's input size. `export_checkpoint` is the whole of
`fkp-train export`; the functions below it are its steps.
"""
from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fkp_live.card import ModelCard

from . import echo as _echo
from .datasets import MEAN, STD
from .tasks import Task

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
    from .checkpoint import load_model

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


class ParityError(ExportError):
    """The ONNX file's points differ from torch's by more than the tolerance; the file is removed."""


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


def parity(model: nn.Module, onnx_path: Path, card: ModelCard, batch: np.ndarray) -> float:
    """Largest difference in input pixels between torch and the runtime's ONNX Runtime wrapper.

    `batch` is (B, S, S, C) uint8 crops; both sides normalise them the runtime's way.
    """
    from fkp_live.track.landmarker import Landmarker

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.onnx"
        shutil.copy(onnx_path, p)
        card.save(p.with_suffix(".json"))
        lm = Landmarker(p, device="cpu")
        x = lm.normalise(batch)
        ort_pts, ort_conf = lm.run(x)
    with torch.no_grad():
        t_pts, _ = model.eval()(torch.from_numpy(x))
    diff = np.abs(t_pts.numpy() - ort_pts) * card.input_size
    return float(diff.max())


def quantize_int8(onnx_path: Path, out: Path, calibration: np.ndarray) -> None:
    """Static INT8 quantisation with ONNX Runtime, calibrated on normalised training crops."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, x):
            self.it = iter([{"image": x[i : i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    import onnx

    # The heatmap logits and the soft-argmax stay in float: 8-bit logits flatten the softmax and
    # the expected position collapses towards the crop centre (38% NME instead of 4.7% measured).
    # So does everything computed from them (a flip-averaged graph's averaging of the points).
    # Read from the graph as pre-processed: its optimiser fuses nodes (a MatMul and its Add into a
    # Gemm, named anew), and a fused node missing from this list would be quantised.
    with tempfile.TemporaryDirectory() as d:
        pre = Path(d) / "pre.onnx"
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        keep_float, tainted = [], set()
        for n in graph.node:  # ONNX keeps nodes in topological order
            if (n.op_type == "Conv" and "/heat" in n.name) or tainted.intersection(n.input):
                keep_float.append(n.name)
                tainted.update(n.output)
        keep_float += leading_thin_convs(graph)
        tmp = out.with_name(out.name + ".tmp")
        quantize_static(
            str(pre), str(tmp), Reader(calibration.astype(np.float32)),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
        )
        os.replace(tmp, out)


def leading_thin_convs(graph) -> list[str]:
    """The convolutions a network starts with that read at most 3 channels per group (the stem on
    the grey or colour picture, then a depthwise one), up to the first ordinary convolution on
    each path. ONNX Runtime's 8-bit kernels run these at a fraction of their float speed (the
    160 px net's stem and first depthwise layer: 0.89 ms in INT8, about 0.3 in float, measured
    per node), and they hold few weights: in float, each INT8 read of `fast` and `accurate` is
    10-16 % faster for the same points (val NME within 0.004)."""
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    thin, past = [], set()  # past: tensors downstream of an ordinary convolution
    for n in graph.node:
        downstream = bool(past.intersection(n.input))
        if n.op_type == "Conv" and not downstream:
            w = shapes.get(n.input[1]) if len(n.input) > 1 else None
            if w is not None and len(w) == 4 and w[1] <= 3:
                thin.append(n.name)
                continue
            downstream = True
        if downstream:
            past.update(n.output)
    return thin


def convert_fp16(onnx_path: Path, out: Path) -> None:
    """FP16 weights and activations for GPUs; inputs and outputs stay float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    m = onnx.load(str(onnx_path))
    m16 = convert_float_to_float16(m, keep_io_types=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(m16, str(tmp))
    os.replace(tmp, out)


class TensorRTUnavailable(Exception):
    pass


def build_tensorrt(onnx_path: Path, out: Path, fp16: bool = True, max_batch: int = 8,
                   input_size: int = 128, channels: int = 1) -> None:
    """Build a TensorRT engine with the `tensorrt` Python API (needs an NVIDIA GPU)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(
            "TensorRT is not installed (pip install tensorrt, on a machine with an NVIDIA GPU and "
            "driver); the ONNX file still runs on GPUs through ONNX Runtime's CUDA or TensorRT "
            "execution provider (fkp-live --device cuda|tensorrt)"
        ) from None
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(Path(onnx_path).read_bytes()):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"TensorRT could not parse {onnx_path}: {errs}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        shape = (channels, input_size, input_size)
        profile.set_shape("image", (1, *shape), (4, *shape), (max_batch, *shape))
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
    except (RuntimeError, TypeError) as e:  # no GPU / driver: TensorRT raises at builder creation
        raise TensorRTUnavailable(f"TensorRT could not build an engine here ({e}); it needs an NVIDIA GPU") from None
    if engine is None:
        raise ExportError("TensorRT failed to build the engine (see the messages above)")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(bytes(engine))
    os.replace(tmp, out)


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
        from .pseudo_label import manifest_of

        data += " + " + " + ".join(d["extra"])
        for extra in d["extra"]:  # pseudo-labelled folders: the command that labelled them comes first
            made = manifest_of(extra)
            if made and made.get("command") and cmd:
                cmd = f"{made['command']} && {cmd}"
    return cmd, data


def crops_of(samples, task: Task, limit: int | None = None):
    """Evaluation crops of samples (the card's crop from the true points): (uint8 batch, matrices)."""
    from .datasets import KeypointDataset

    ds = KeypointDataset(samples[:limit], task, None)
    exs = [ds.example(i) for i in range(len(ds))]
    imgs = [ex.image if ex.image.ndim == 3 else ex.image[:, :, None] for ex in exs]
    return np.stack(imgs), np.stack([ex.matrix for ex in exs])


def evaluate_onnx(onnx_path: Path, card: ModelCard, samples, task: Task, device: str = "cpu") -> dict:
    """Metrics of an exported model run through the runtime's wrapper, in image pixels."""
    from fkp_live.track.landmarker import Landmarker

    from . import metrics
    from .datasets import to_frame

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.onnx"
        shutil.copy(onnx_path, p)
        card.save(p.with_suffix(".json"))
        lm = Landmarker(p, device=device)
        batch, mats = crops_of(samples, task)
        preds, confs = [], []
        for i in range(0, len(batch), 64):
            pts, conf = lm.run(lm.normalise(batch[i : i + 64]))
            preds.append(pts)
            confs.append(conf)
    pred = to_frame(np.concatenate(preds), mats, task.size)
    truth = np.stack([np.nan_to_num(s.points) for s in samples]).astype(np.float32)
    mask = np.stack([s.mask for s in samples])
    out = metrics.summary(pred, truth, mask, lm.schema)
    out["presence_mean"] = float(np.concatenate(confs).mean())
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def latency_ms(onnx_path: Path, batch: int, size: int, channels: int, provider: str = "CPUExecutionProvider",
               threads: int = 1, runs: int = 200, warmup: int = 20) -> float:
    """Median milliseconds per call at a batch size, after warm-up."""
    import time

    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.log_severity_level = 3
    s = ort.InferenceSession(str(onnx_path), o, providers=[provider])
    if s.get_providers()[0] != provider:
        raise RuntimeError(f"{provider} could not be loaded here")
    x = np.random.default_rng(0).standard_normal((batch, channels, size, size)).astype(np.float32)
    for _ in range(warmup):
        s.run(None, {"image": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, {"image": x})
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000)


def _latency(path: Path, size: int, channels: int) -> dict:
    return {"batch1": round(latency_ms(path, 1, size, channels), 3),
            "batch4": round(latency_ms(path, 4, size, channels), 3)}


def export_checkpoint(checkpoint, out, data=None, metrics_split: str = "test", calibration=None,
                      tolerance: float = 0.05, int8: bool = False, fp16: bool = False,
                      tensorrt: bool = False, flip_average: bool = False, ensemble=(), shift_average: int = 0,
                      readings: str | None = None, shape_correction=None, echo=_echo) -> ModelCard:
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
    to the points inside the graph (`ShapeCorrected`). `tensorrt`: also NAME.engine, built last (raises
    `TensorRTUnavailable` after everything else is written). Progress lines go to `echo`.
    Raises `ParityError` (the file removed) when torch and ONNX Runtime differ by more than
    `tolerance` pixels. Returns the FP32 card.
    """
    from .calibrate import from_card, read as read_calibration
    from .checkpoint import load_model
    from .datasets import load_split, to_input

    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: the file name must end in .onnx")
    if int8 and not data:
        raise ExportError("INT8 export needs the task's data: INT8 is calibrated on training crops")
    model, task = load_model(checkpoint)
    members = load_members(task, ensemble)
    # read before anything is written: a bad calibration leaves the old export as it was
    if calibration:
        box_cal = read_calibration(calibration)
    elif out.with_suffix(".json").exists():
        box_cal = from_card(out.with_suffix(".json"))
    else:
        box_cal = {}
    corr = None
    if shape_correction:
        from fkp_live import schemas

        from .shape_fit import ShapeFitError, read as read_correction
        try:
            corr = read_correction(shape_correction, points=schemas.get(task.schema).n)
        except ShapeFitError as e:
            raise ExportError(f"--shape-correction {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if readings:
        if flip_average:
            raise ExportError("--readings says what each net reads; leave out --flip-average")
        units = parse_readings(readings, 1 + len(members), shift_average)
    else:  # --flip-average and --shift-average: every net reads alike
        if flip_average:
            for other, _, t2 in members:
                if flip_shift_of(t2) != flip_shift_of(task):
                    raise ExportError(f"{other}: trained with flip_shift {flip_shift_of(t2)} where the first "
                                      f"checkpoint has {flip_shift_of(task)}; a mirror-averaged ensemble needs one")
        units = [("F" if flip_average else "") + ("S" if shift_average else "") or "P"] * (1 + len(members))
    nets = [read_as(m, u, t, task.size[0], shift_average)
            for (m, t), u in zip([(model.eval(), task)] + [(m, t) for _, m, t in members], units)]
    model = nets[0] if len(nets) == 1 else Ensemble(nets, [READINGS[u] for u in units])
    corr_info = None
    if corr is not None:
        model = ShapeCorrected(model, corr["mean"], corr["weights"]).eval()
        corr_info = {"file": Path(shape_correction).name,
                     **{k: v for k, v in corr.items() if k not in ("mean", "weights")}}
    export_onnx(model, task, out)
    cmd, train_data = read_training_command(Path(checkpoint).parent)
    for i, other in enumerate(ensemble, 2):
        c2, _ = read_training_command(Path(other).parent)
        cmd += f" ; ensemble net {i}: {c2 or other}"
    card = make_card(task, out.stem, command=cmd, data=train_data, box_calibration=box_cal,
                     flip_average=flip_average, ensemble=1 + len(members), shift_average=shift_average,
                     readings=units if readings else None, shape_correction=corr_info)
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
    if data:
        test, _ = load_split(task, data, metrics_split)
        m = evaluate_onnx(out, card, test, task)
        card.metrics.update({"split": metrics_split, "data": str(data), "protocol": protocol(task, metrics_split),
                             "fp32": m})
        echo(f"{metrics_split} metrics (ONNX Runtime, fp32): {json.dumps(m)}")
    size, ch = task.size[0], task.channels
    card.metrics["latency_ms_cpu_1thread"] = _latency(out, size, ch)
    if int8:
        train, _ = load_split(task, data, "train")
        calib, _ = crops_of(train, task, limit=256)
        q = out.with_name(out.stem + ".int8.onnx")
        quantize_int8(out, q, to_input(calib).numpy())
        qm = evaluate_onnx(q, card, test, task)
        lat = _latency(q, size, ch)
        f32 = card.metrics["latency_ms_cpu_1thread"]
        card.metrics["int8"] = {"file": q.name, **qm, "latency_ms_cpu_1thread": lat,
                                "speedup_batch1": round(f32["batch1"] / lat["batch1"], 2),
                                "speedup_batch4": round(f32["batch4"] / lat["batch4"], 2)}
        card_variant(card, q.stem).save(q.with_suffix(".json"))
        echo(f"int8: {q} metrics {json.dumps(qm)} latency {lat} "
             f"(fp32 {f32}, speed-up x{card.metrics['int8']['speedup_batch1']} at batch 1)")
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
