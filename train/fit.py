"""The training loop: seeded, resumable, atomic checkpoints, a CSV log, best by validation metric.

Runs on one process, or under `torchrun --nproc_per_node=N -m train.fit ...` with
DistributedDataParallel and a DistributedSampler (gloo on CPU, nccl on GPUs).
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

from . import checkpoint, losses, metrics
from .augment import AugmentConfig
from .datasets import KeypointDataset, load_split, to_frame
from .nets import build_model
from .tasks import Task


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
    raise ValueError(f"--optimizer must be adam or adamw, not {task.optimizer!r}")


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
    raise ValueError(f"--schedule must be onecycle, cosine, step, plateau or none, not {task.schedule!r}")


@torch.no_grad()
def predict_dataset(model, ds: KeypointDataset, batch: int = 64, device="cpu", loss_fn=None):
    """Run a model over a dataset: (pred px, truth px, mask, presence prob), in image pixels.

    With `loss_fn`, the same pass also gives the mean loss per sample (a fifth value).
    """
    model.eval()
    loader = DataLoader(ds, batch_size=batch, shuffle=False, num_workers=0)
    preds, confs, mats, loss = [], [], [], 0.0
    for b in loader:
        p, c = model(b["image"].to(device))
        if loss_fn is not None:
            loss += float(loss_fn(p, b["points"].to(device), b["mask"].to(device))) * len(p)
        preds.append(p.float().cpu().numpy())
        confs.append(torch.sigmoid(c).float().cpu().numpy())
        mats.append(b["matrix"].numpy())
    pred = to_frame(np.concatenate(preds), np.concatenate(mats), ds.task.size)
    truth = np.stack([np.nan_to_num(s.points) for s in ds.samples]).astype(np.float32)
    mask = np.stack([s.mask for s in ds.samples])
    out = (pred, truth, mask, np.concatenate(confs))
    return out + (loss / max(len(ds), 1),) if loss_fn is not None else out


def evaluate(model, ds: KeypointDataset, device="cpu", loss_fn=None) -> dict:
    """Metrics of a model on a dataset (plus "loss" with `loss_fn`), from one pass over it."""
    pred, truth, mask, conf, *loss = predict_dataset(model, ds, device=device, loss_fn=loss_fn)
    out = metrics.summary(pred, truth, mask, ds.schema)
    out["presence"] = float(conf.mean())
    if loss:
        out["loss"] = loss[0]
    return out


# --- the loop --------------------------------------------------------------------------------

def fit(cfg: FitConfig) -> dict:
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

    train_samples, rep = load_split(task, cfg.data, "train", cfg.skip_bad, cfg.extra)
    val_samples, rep2 = load_split(task, cfg.data, "val", cfg.skip_bad)
    if cfg.limit:
        train_samples = train_samples[: cfg.limit]
    if cfg.val_limit:
        val_samples = val_samples[: cfg.val_limit]
    if is_main() and (rep or rep2):
        print(rep.summary(), rep2.summary(), sep="\n", file=sys.stderr)
    aug = AugmentConfig(**task.augment)
    train_ds = KeypointDataset(train_samples, task, aug, seed=cfg.seed)
    val_ds = KeypointDataset(val_samples, task, None, seed=cfg.seed)

    sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=cfg.seed) if distributed else None
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        train_ds, batch_size=task.batch, shuffle=sampler is None, sampler=sampler,
        num_workers=cfg.workers, drop_last=len(train_ds) >= task.batch * world * 2, generator=gen,
        persistent_workers=cfg.workers > 0,
    )
    model = build_model(task).to(device)
    if cfg.init:
        model.load_state_dict(checkpoint.load(cfg.init, map_location=device)["model"])
        if is_main():
            print(f"initialised from {cfg.init}", file=sys.stderr)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = make_optimizer(task, model)
    sched, when = make_scheduler(task, opt, max(1, len(loader)))
    loss_fn = losses.get(task.loss)

    ckpt_last, ckpt_best = out / "last.pt", out / "best.pt"
    log_path = out / "log.csv"
    start_epoch, best, best_epoch, stale = 0, math.inf, -1, 0
    if cfg.resume and ckpt_last.exists():
        state = checkpoint.load(ckpt_last, map_location=device)
        unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        start_epoch, best, best_epoch, stale = state["epoch"] + 1, state["best"], state["best_epoch"], state["stale"]
        torch.set_rng_state(state["torch_rng"].cpu())
        gen.set_state(state["loader_rng"].cpu())
        if is_main():
            print(f"resumed from {ckpt_last} at epoch {start_epoch}", file=sys.stderr)
    elif cfg.resume and is_main():
        print(f"--resume: no checkpoint at {ckpt_last}; starting from scratch", file=sys.stderr)

    if is_main():
        (out / "task.json").write_text(json.dumps({"task": task.to_dict(), "data": cfg.data,
                                                    "extra": cfg.extra, "seed": cfg.seed, "init": cfg.init,
                                                    "argv": sys.argv}, indent=2))
    fields = None
    history = []
    for epoch in range(start_epoch, task.epochs):
        t0 = time.time()
        model.train()
        train_ds.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        total, count = 0.0, 0
        bar = None
        if is_main() and cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{task.epochs}", leave=False,
                       file=sys.stderr, dynamic_ncols=True)
        for b in loader:
            x = b["image"].to(device)
            pts, mask, present = b["points"].to(device), b["mask"].to(device), b["present"].to(device)
            pred, logit = model(x)
            point_loss = loss_fn(pred, pts, mask)
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
            if sched is not None and when == "step":
                sched.step()
            total += float(point_loss.detach()) * len(x)
            count += len(x)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
        if bar is not None:
            bar.close()
        if distributed:
            t = torch.tensor([total, count], dtype=torch.float64)
            dist.all_reduce(t)
            total, count = float(t[0]), float(t[1])
        train_loss = total / max(count, 1)

        # validation (every process computes it on the whole, small, validation split)
        val = evaluate(unwrap(model), val_ds, device, loss_fn)
        val_loss = val.pop("loss")
        score = val[task.metric]
        if not math.isfinite(score):  # e.g. no validation sample has an eye pair for NME
            score = val_loss
        if sched is not None and when == "epoch":
            sched.step()
        elif sched is not None and when == "metric":
            sched.step(score)
        improved = score < best
        if improved:
            best, best_epoch, stale = score, epoch, 0
        else:
            stale += 1
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": train_loss,
               "val_loss": val_loss, **{f"val_{k}": v for k, v in val.items()},
               "seconds": round(time.time() - t0, 1)}
        history.append(row)
        if is_main():
            state = {
                "model": unwrap(model).state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict() if sched is not None else None,
                "epoch": epoch, "best": best, "best_epoch": best_epoch, "stale": stale,
                "task": task.to_dict(), "torch_rng": torch.get_rng_state(), "loader_rng": gen.get_state(),
                "val": val,
            }
            if improved:
                checkpoint.save_atomic({"model": state["model"], "task": state["task"], "epoch": epoch, "val": val}, ckpt_best)
            checkpoint.save_atomic(state, ckpt_last)
            # the log row after the checkpoint: a crash between them never logs an epoch twice
            new = not log_path.exists() or (epoch == 0)
            if fields is None:
                fields = list(row)
            with open(log_path, "w" if new else "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)
                f.flush()
            msg = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            print(msg + ("  *best" if improved else ""), file=sys.stderr, flush=True)
        if cfg.stop_after and len(history) >= cfg.stop_after and epoch + 1 < task.epochs:
            if is_main():
                print(f"stopping after {len(history)} epoch(s) as asked; continue with --resume", file=sys.stderr)
            break
        if cfg.patience and stale >= cfg.patience:
            if is_main():
                print(f"early stop: no better {task.metric} for {stale} epochs", file=sys.stderr)
            break
    summary = {"best_" + task.metric: best, "best_epoch": best_epoch + 1, "epochs_run": len(history),
               "out": str(out)}
    if is_main():
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if distributed:
        dist.barrier()
    return summary


def main(argv=None):
    """`python -m train.fit` / `torchrun -m train.fit`: the same options as `fkp-train fit`."""
    from .cli import fit_command

    fit_command.main(args=argv, prog_name="train.fit", standalone_mode=True)


if __name__ == "__main__":
    main()
