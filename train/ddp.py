"""Distributed training entry point: the options of `fkp-train fit`, one process per device.

    torchrun --nproc_per_node=2 -m train.ddp --task ibug68 --data ../shared/data/300w --out runs/ddp

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `train.fit` then wraps the model in
DistributedDataParallel with a DistributedSampler (gloo on the CPU, nccl with --device cuda), and
rank 0 alone writes checkpoints and the log. Without torchrun (`python -m train.ddp ...`) it is
plain `fkp-train fit`.
"""
from __future__ import annotations


def main(argv=None):
    from .cli import fit_command

    fit_command.main(args=argv, prog_name="train.ddp", standalone_mode=True)


if __name__ == "__main__":
    main()
