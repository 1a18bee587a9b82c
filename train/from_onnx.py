"""An exported model back into a training checkpoint, so that a shipped model can be trained on.

The ONNX exporter folds each BatchNorm into the convolution before it, so the graph holds only
convolutions with biases. Reading them back into the training network, every BatchNorm is set
so that in evaluation mode it adds the folded bias and nothing else, and, so that training mode
(batch statistics) starts from the same function, its running statistics and scale are those of
its convolution's output on real crops: weight = std, bias = mean + folded bias, running mean =
mean, running var = std^2 - eps. The checkpoint then reads exactly as the ONNX file does.
"""
from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import save_atomic, task_of
from .data import DataError
from .tasks import Task


def task_of_card(card: dict, where: str) -> Task:
    """The training task a model card records (card['training']['task'])."""
    try:
        d = dict(card["training"]["task"])
    except (KeyError, TypeError):
        raise DataError(f"{where}: the card holds no training task (training.task), so the network "
                        "to read the weights into is unknown") from None
    return task_of({"task": d}, where)


def _execution_order(model: nn.Module, task: Task) -> list[nn.Module]:
    """Conv2d and Linear modules in the order a forward pass runs them (the graph's node order)."""
    seen: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(m))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    w, h = task.size
    with torch.no_grad():
        model.eval()(torch.zeros(1, task.channels, h, w))
    for hk in hooks:
        hk.remove()
    return seen


def _batchnorm_after(model: nn.Module) -> dict[nn.Module, nn.BatchNorm2d]:
    """Each convolution followed by a BatchNorm (in a Sequential, or as cN/bN of a block)."""
    pairs = {}
    for m in model.modules():
        kids = list(m.named_children())
        for (_, a), (_, b) in zip(kids, kids[1:]):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                pairs[a] = b
        names = dict(kids)
        for name, a in kids:
            if isinstance(a, nn.Conv2d) and name.startswith("c") and isinstance(names.get("b" + name[1:]), nn.BatchNorm2d):
                pairs[a] = names["b" + name[1:]]
    return pairs


def _graph_layers(onnx_path: Path) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(op, weight, bias) of each Conv and Gemm node in graph order; Gemm weights as (out, in)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(onnx_path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:  # weights written as Constant nodes rather than initialisers
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            init[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    layers = []
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm") or n.input[1] not in init:
            continue
        w = init[n.input[1]]
        b = init.get(n.input[2]) if len(n.input) > 2 else None
        if n.op_type == "Gemm":
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            w = w if trans_b else w.T
        layers.append((n.op_type, w, b))
    return layers


def load_onnx_weights(model: nn.Module, task: Task, onnx_path: Path) -> None:
    """The graph's weights into `model`; each BatchNorm made a pure bias (statistics 0 and 1)."""
    order = _execution_order(model, task)
    layers = _graph_layers(onnx_path)
    if len(order) != len(layers):
        raise DataError(f"{onnx_path}: {len(layers)} convolution/linear layers in the graph, but the "
                        f"{task.net} network of its card has {len(order)}; not a graph of that network")
    bns = _batchnorm_after(model)
    with torch.no_grad():
        for i, (m, (op, w, b)) in enumerate(zip(order, layers)):
            if tuple(m.weight.shape) != w.shape or (op == "Gemm") != isinstance(m, nn.Linear):
                raise DataError(f"{onnx_path}: layer {i} is {op} {w.shape} in the graph but "
                                f"{type(m).__name__} {tuple(m.weight.shape)} in the network")
            m.weight.copy_(torch.from_numpy(np.array(w)))
            bias = torch.zeros(w.shape[0]) if b is None else torch.from_numpy(b.copy())
            bn = bns.get(m)
            if bn is not None:
                bn.weight.fill_(1.0)
                bn.bias.copy_(bias)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
            elif m.bias is not None:
                m.bias.copy_(bias)
            elif b is not None and np.any(b):
                raise DataError(f"{onnx_path}: layer {i} has a bias the network has no place for")


def recalibrate(model: nn.Module, batches) -> int:
    """Give each pure-bias BatchNorm the statistics of its input on `batches` (an iterable of
    normalised input tensors), keeping the evaluation-mode function. Returns the images seen."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums = {bn: [0.0, 0.0, 0] for bn in bns}

    def hook(bn, inp, out):
        # in eval mode with mean 0 and var 1-eps the input is the convolution's output itself
        x = inp[0].double()
        s = sums[bn]
        s[0] = s[0] + x.sum(dim=(0, 2, 3))
        s[1] = s[1] + (x * x).sum(dim=(0, 2, 3))
        s[2] += x.numel() // x.shape[1]

    hooks = [bn.register_forward_hook(hook) for bn in bns]
    seen = 0
    model.eval()
    with torch.no_grad():
        for x in batches:
            model(x)
            seen += len(x)
    for h in hooks:
        h.remove()
    if not seen:
        return 0
    with torch.no_grad():
        for bn in bns:
            s1, s2, n = sums[bn]
            mean = s1 / n
            var = (s2 / n - mean * mean).clamp_min(1e-6)
            std = var.sqrt()
            bn.bias.add_(mean.float())  # the folded bias was in bias already
            bn.weight.copy_(std.float())
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_((var - bn.eps).clamp_min(1e-8).float())
    return seen


def checkpoint_from_onnx(onnx_path: str | Path, out: str | Path, data: str | Path | None = None,
                         limit: int = 512, command: str = "") -> dict:
    """Read an exported model (ONNX + its card) into a checkpoint at `out` that `fkp-train fit
    --init` takes. With `data` (the task's dataset) the BatchNorms get the statistics of up to
    `limit` training crops. Returns a report: layers read, images seen, largest difference (input
    pixels) between the checkpoint and the ONNX file on those crops. OUT's folder gets a task.json
    naming the model's own training chain and `command` (how this was run), so that a model
    fine-tuned from the checkpoint carries the whole chain on its card."""
    import json

    import onnxruntime as ort

    from .datasets import KeypointDataset, load_split
    from .nets import build_model

    onnx_path, out = Path(onnx_path), Path(out)
    card_path = onnx_path.with_suffix(".json")
    if not card_path.exists():
        raise DataError(f"{onnx_path}: no model card beside it ({card_path.name})")
    card = json.loads(card_path.read_text())
    task = task_of_card(card, str(card_path))
    model = build_model(task)
    load_onnx_weights(model, task, onnx_path)

    crops = None
    if data is not None:
        samples, _ = load_split(task, data, "train")
        ds = KeypointDataset(samples[:limit], task, None)
        crops = torch.stack([ds[i]["image"] for i in range(len(ds))])
    seen = recalibrate(model, crops.split(64)) if crops is not None else 0

    # what the checkpoint reads against what the ONNX file reads (the bare net, before any
    # averaging or correction the graph adds around it, cannot be compared; the whole graph can)
    probe = crops[:32] if crops is not None else torch.rand(4, task.channels, task.size[1], task.size[0]) * 2 - 1
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph_pts = sess.run([card.get("points_output", "points")], {sess.get_inputs()[0].name: probe.numpy()})[0]
    with torch.no_grad():
        net_pts = model.eval()(probe)[0].numpy()
    diff_px = float(np.abs(graph_pts - net_pts).max() * task.size[0])
    state = {"model": model.state_dict(), "task": task.to_dict(), "epoch": -1, "val": {},
             "from_onnx": {"file": str(onnx_path), "bn_images": seen}}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(state, out)
    chain = card.get("training", {}).get("command", "")
    (out.parent / "task.json").write_text(json.dumps({
        "task": task.to_dict(), "data": card.get("training", {}).get("data", ""),
        "argv": shlex.split(command) if command else [], "before": chain}, indent=2))
    report = {"onnx": str(onnx_path), "out": str(out), "net": task.net, "size": list(task.size),
              "bn_images": seen, "max_diff_px_vs_graph": round(diff_px, 4),
              "graph_wraps_net": bool(card.get("description", "").count("inside the graph"))}
    return report
