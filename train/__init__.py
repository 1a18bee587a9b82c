"""fkp-live's training wing: datasets, augmentation, networks, the fit loop, metrics, export."""
from __future__ import annotations

import sys


def echo(message: str = "", err: bool = False) -> None:
    """Where library functions write their progress lines by default (the CLI passes click.echo)."""
    print(message, file=sys.stderr if err else sys.stdout, flush=True)
