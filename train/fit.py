"""The training loop: seeded, resumable, atomic checkpoints, a CSV log, best by validation metric.

`fit` = `setup` (data, model, optimiser, scheduler, resume) + per epoch `train_one_epoch` and
`validate_and_checkpoint`. Runs on one process, or under
`torchrun --nproc_per_node=N -m train.ddp ...` with DistributedDataParallel and a
DistributedSampler (gloo on CPU, nccl on GPUs).
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from . import checkpoint, losses
from .augment import AugmentConfig
from .datasets import KeypointDataset, load_split
from .evaluate import evaluate
from .nets import build_model, count_params
from .tasks import Task, TaskError


@dataclass
class FitConfig:
    task: Task
    data: str
    out: str
    extra: list[str] = field(default_factory=list)
    seed: int = 0
    patience: int = 0  # early stopping: epochs without improvement (0 = off)
    resume: bool = False
    skip_bad: bool = False
    workers: int = 0
    threads: int | None = None
    limit: int | None = None  # use only the first N training samples (smoke tests, overfitting)
    val_limit: int | None = None
    device: str = "cpu"
    progress: bool = True
    stop_after: int | None = None  # run at most this many epochs now (resume later with --resume)
    init: str | None = None  # start from this checkpoint's weights (fine-tuning), fresh optimiser
    oversample: int = 1  # rare faces (open mouth, turned head) seen this many times per epoch


# --- distributed helpers ---------------------------------------------------------------------

def dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def unwrap(model):
    return model.module if hasattr(model, "module") else model


# --- building blocks -------------------------------------------------------------------------

def make_optimizer(task: Task, model) -> torch.optim.Optimizer:
    if task.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=task.lr, weight_decay=task.weight_decay)
    if task.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=task.lr, weight_decay=task.weight_decay)
    raise ValueError(f"unknown optimizer {task.optimizer!r}; choose adam or adamw")


def make_scheduler(task: Task, opt, steps_per_epoch: int):
    """Returns (scheduler, when): when is 'step' (every batch), 'epoch' or 'metric'."""
    if task.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            # one step more than are taken: after the last batch the rate sits at its minimum
            # (with exactly as many, OneCycleLR's last step extrapolates past the end and rises)
            opt, max_lr=task.lr, total_steps=task.epochs * steps_per_epoch + 1, pct_start=0.15), "step"
    if task.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=task.epochs), "epoch"
    if task.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, task.epochs // 3), gamma=0.1), "epoch"
    if task.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3), "metric"
    if task.schedule == "none":
        return None, "epoch"
    raise ValueError(f"unknown schedule {task.schedule!r}; choose onecycle, cosine, step, plateau or none")


# --- the loop --------------------------------------------------------------------------------

@dataclass
class Run:
    """What a training run carries from epoch to epoch (built by `setup`)."""

    cfg: FitConfig
    out: Path
    device: torch.device
    distributed: bool
    train_ds: KeypointDataset
    val_ds: KeypointDataset
    sampler: DistributedSampler | None
    loader: DataLoader
    gen: torch.Generator  # the training loader's shuffling
    model: torch.nn.Module  # DistributedDataParallel-wrapped when distributed
    opt: torch.optim.Optimizer
    sched: object  # an LR scheduler or None
    when: str  # when the scheduler steps: 'step', 'epoch' or 'metric'
    loss_fn: object
    start_epoch: int = 0
    best: float = math.inf
    best_epoch: int = -1
    stale: int = 0  # epochs since the best
    log_fields: list[str] | None = None

    @property
    def task(self) -> Task:
        return self.cfg.task


def setup(cfg: FitConfig) -> Run:
    """Process group, threads and seeds; data, loader, model (from `cfg.init`), optimiser and
    scheduler; with `cfg.resume` the state of OUT/last.pt. Writes OUT/task.json."""
    rank, world, local = dist_env()
    distributed = world > 1
    if distributed and not dist.is_initialized():
        backend = "nccl" if cfg.device == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    device = torch.device(f"cuda:{local}" if cfg.device == "cuda" else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    task = cfg.task
    out = Path(cfg.out)
    if is_main():
        out.mkdir(parents=True, exist_ok=True)

    train_ds, val_ds = _datasets(cfg)
    sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=cfg.seed) if distributed else None
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        train_ds, batch_size=task.batch, shuffle=sampler is None, sampler=sampler,
        num_workers=cfg.workers, drop_last=len(train_ds) >= task.batch * world * 2, generator=gen,
        # workers start afresh each epoch: a persistent worker keeps the copy of the dataset it was
        # given, so it would never see set_epoch and would repeat the first epoch's augmentation
        persistent_workers=False,
    )
    model = build_model(task).to(device)
    if (task.heatmap_weight or task.loss in losses.READS_HEATMAPS) and not hasattr(model, "heat"):
        needs = " and ".join(["--heatmap-weight"] + [f"--loss {x}" for x in sorted(losses.READS_HEATMAPS)])
        raise TaskError(f"{needs} need a heatmap net; the {task.net!r} net regresses points directly "
                        "(use --net mobile)")
    if cfg.init:
        model.load_state_dict(checkpoint.load(cfg.init, map_location=device)["model"])
        if is_main():
            print(f"initialised from {cfg.init}", file=sys.stderr)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = make_optimizer(task, model)
    sched, when = make_scheduler(task, opt, max(1, len(loader)))
    run = Run(cfg, out, device, distributed, train_ds, val_ds, sampler, loader, gen, model, opt, sched,
              when, losses.get(task.loss))
    if cfg.resume:
        _resume(run)
    if is_main():
        print(f"{task.name}: {task.net} network, {count_params(unwrap(model)):,} parameters; "
              f"{len(train_ds)} training and {len(val_ds)} validation samples", file=sys.stderr)
        (out / "task.json").write_text(json.dumps({"task": task.to_dict(), "data": cfg.data,
                                                    "extra": cfg.extra, "seed": cfg.seed, "init": cfg.init,
                                                    "oversample": cfg.oversample,
                                                    "argv": sys.argv}, indent=2))
    return run


def _datasets(cfg: FitConfig) -> tuple[KeypointDataset, KeypointDataset]:
    task = cfg.task
    train_samples, rep = load_split(task, cfg.data, "train", cfg.skip_bad, cfg.extra)
    val_samples, rep2 = load_split(task, cfg.data, "val", cfg.skip_bad)
    if cfg.limit:
        train_samples = train_samples[: cfg.limit]
    if cfg.oversample > 1:
        from .oversample import oversampled

        train_samples, n_rare = oversampled(train_samples, cfg.oversample)
        if is_main():
            print(f"{n_rare} faces with an open mouth or a turned head seen {cfg.oversample} times per epoch",
                  file=sys.stderr)
    if cfg.val_limit:
        val_samples = val_samples[: cfg.val_limit]
    if is_main() and (rep or rep2):
        print(rep.summary(), rep2.summary(), sep="\n", file=sys.stderr)
    aug = AugmentConfig(**task.augment)
    return (KeypointDataset(train_samples, task, aug, seed=cfg.seed),
            KeypointDataset(val_samples, task, None, seed=cfg.seed))


def _resume(run: Run) -> None:
    """Model, optimiser, scheduler, counters and RNG states from OUT/last.pt, when there is one."""
    last = run.out / "last.pt"
    if not last.exists():
        if is_main():
            print(f"nothing to resume: no checkpoint at {last}; starting from scratch", file=sys.stderr)
        return
    state = checkpoint.load(last, map_location=run.device)
    unwrap(run.model).load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    if run.sched is not None and state.get("scheduler"):
        run.sched.load_state_dict(state["scheduler"])
    run.start_epoch, run.best = state["epoch"] + 1, state["best"]
    run.best_epoch, run.stale = state["best_epoch"], state["stale"]
    torch.set_rng_state(state["torch_rng"].cpu())
    run.gen.set_state(state["loader_rng"].cpu())
    if is_main():
        print(f"resumed from {last} at epoch {run.start_epoch}", file=sys.stderr)


def own_points(model, ds: KeypointDataset, device) -> np.ndarray:
    """The net's reading of every sample of `ds` from its true points' crop, unaugmented: (N, K, 2)
    image pixels, the points augment.self_crop cuts crops from."""
    from .evaluate import predict_dataset

    with torch.no_grad():
        return predict_dataset(model, KeypointDataset(ds.samples, ds.task, None), device=device)[0]


def train_one_epoch(run: Run, epoch: int) -> float:
    """One pass over the training loader; the mean point loss per sample (over all processes)."""
    task, model, opt, device = run.task, run.model, run.opt, run.device
    if run.train_ds.augment.self_crop:
        run.train_ds.crop_points = own_points(unwrap(model), run.train_ds, device)
    model.train()
    run.train_ds.set_epoch(epoch)
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    total, count = 0.0, 0
    bar = None
    if is_main() and run.cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(run.loader), desc=f"epoch {epoch + 1}/{task.epochs}", leave=False,
                   file=sys.stderr, dynamic_ncols=True)
    for b in run.loader:
        x = b["image"].to(device)
        pts, mask, present = b["points"].to(device), b["mask"].to(device), b["present"].to(device)
        pred, logit = model(x)
        maps = (unwrap(model).heatmaps,) if task.loss in losses.READS_HEATMAPS else ()
        point_loss = run.loss_fn(pred, pts, mask, *maps)
        if task.presence_weight:
            pres = torch.nn.functional.binary_cross_entropy_with_logits(logit, present)
            loss = point_loss + task.presence_weight * pres
        else:
            loss = point_loss + 0.0 * logit.sum()  # keep every parameter in the graph for DDP
        if task.heatmap_weight:
            loss = loss + task.heatmap_weight * losses.heatmap_ce(unwrap(model).heatmaps, pts, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if run.sched is not None and run.when == "step":
            run.sched.step()
        total += float(point_loss.detach()) * len(x)
        count += len(x)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
    if bar is not None:
        bar.close()
    if run.distributed:
        t = torch.tensor([total, count], dtype=torch.float64)
        dist.all_reduce(t)
        total, count = float(t[0]), float(t[1])
    return total / max(count, 1)


def validate_and_checkpoint(run: Run, epoch: int, train_loss: float, t0: float) -> tuple[dict, bool]:
    """Validation metrics, the epoch's scheduler step, the best-so-far bookkeeping; on the main
    process OUT/last.pt (and OUT/best.pt when better), then the log row. -> (log row, improved)."""
    task, model, opt = run.task, run.model, run.opt
    # every process computes it on the whole, small, validation split
    val = evaluate(unwrap(model), run.val_ds, run.device, run.loss_fn)
    val_loss = val.pop("loss")
    score = val[task.metric]
    if not math.isfinite(score):  # e.g. no validation sample has an eye pair for NME
        score = val_loss
    if run.sched is not None and run.when == "epoch":
        run.sched.step()
    elif run.sched is not None and run.when == "metric":
        run.sched.step(score)
    improved = score < run.best
    if improved:
        run.best, run.best_epoch, run.stale = score, epoch, 0
    else:
        run.stale += 1
    row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": train_loss,
           "val_loss": val_loss, **{f"val_{k}": v for k, v in val.items()},
           "seconds": round(time.time() - t0, 1)}
    if is_main():
        _save_checkpoints(run, epoch, val, improved)
        # the log row after the checkpoint: a crash between them never logs an epoch twice
        _append_log(run, epoch, row)
        msg = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        print(msg + ("  *best" if improved else ""), file=sys.stderr, flush=True)
    return row, improved


def _save_checkpoints(run: Run, epoch: int, val: dict, improved: bool) -> None:
    model_state, task_dict = unwrap(run.model).state_dict(), run.task.to_dict()
    if improved:
        checkpoint.save_atomic({"model": model_state, "task": task_dict, "epoch": epoch, "val": val},
                               run.out / "best.pt")
    checkpoint.save_atomic({
        "model": model_state, "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict() if run.sched is not None else None,
        "epoch": epoch, "best": run.best, "best_epoch": run.best_epoch, "stale": run.stale,
        "task": task_dict, "torch_rng": torch.get_rng_state(), "loader_rng": run.gen.get_state(),
        "val": val,
    }, run.out / "last.pt")


def _append_log(run: Run, epoch: int, row: dict) -> None:
    log_path = run.out / "log.csv"
    new = not log_path.exists() or (epoch == 0)
    if run.log_fields is None:
        run.log_fields = list(row)
    with open(log_path, "w" if new else "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=run.log_fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()


def fit(cfg: FitConfig) -> dict:
    """Train as `cfg` says; returns (and writes to OUT/summary.json) the best metric and epochs."""
    run = setup(cfg)
    task = run.task
    history = []
    for epoch in range(run.start_epoch, task.epochs):
        t0 = time.time()
        train_loss = train_one_epoch(run, epoch)
        row, _ = validate_and_checkpoint(run, epoch, train_loss, t0)
        history.append(row)
        if cfg.stop_after and len(history) >= cfg.stop_after and epoch + 1 < task.epochs:
            if is_main():
                print(f"stopping after {len(history)} epoch(s) as asked; resume to continue", file=sys.stderr)
            break
        if cfg.patience and run.stale >= cfg.patience:
            if is_main():
                print(f"early stop: no better {task.metric} for {run.stale} epochs", file=sys.stderr)
            break
    summary = {"best_" + task.metric: run.best, "best_epoch": run.best_epoch + 1, "epochs_run": len(history),
               "out": str(run.out)}
    if is_main():
        (run.out / "summary.json").write_text(json.dumps(summary, indent=2))
    if run.distributed:
        dist.barrier()
    return summary


if __name__ == "__main__":
    sys.exit("train.fit is the training loop's module; run `python -m train.ddp ...` or "
             "`torchrun --nproc_per_node=N -m train.ddp ...` (the options of `fkp-train fit`)")
