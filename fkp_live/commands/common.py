"""How every fkp-live command meets its user, however it is invoked: one line per error on stderr
("fkp-live: error: ..."), exit status 2 for bad usage or input, 1 for a failure, 130 for Ctrl-C;
log lines that make room for a progress bar; the option types the commands share."""
from __future__ import annotations

import logging
import math
import sys

import click

log = logging.getLogger("fkp_live")


def fail(message: str) -> None:
    click.echo(f"fkp-live: error: {message}", err=True)


class FkpCommand(click.Command):
    """Usage errors as one line (not click's three) with a pointer to --help, and our exit codes.

    plain_errors: ClickException types whose message stands alone (bad input found while working,
    where --help would not help)."""

    plain_errors: tuple = ()

    @property
    def prog(self) -> str:
        return "fkp-live" if self.name in (None, "run") else f"fkp-live {self.name}"

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        prog = prog_name or self.prog
        try:
            rv = super().main(args, prog, complete_var, standalone_mode=False, **extra)
        except self.plain_errors as e:
            fail(e.format_message())
            rv = e.exit_code
        except click.ClickException as e:
            fail(f"{e.format_message()} (see {prog} --help)")
            rv = e.exit_code
        except click.exceptions.Abort:
            rv = 130
        if standalone_mode:
            sys.exit(rv or 0)
        return rv


class FiniteFloat(click.FloatRange):
    """A float option that must be a finite number (not nan or inf), optionally within a range."""

    name = "finite float"

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            return super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(v, param, ctx)


class _TqdmHandler(logging.Handler):
    """Log lines on stderr, printed above the progress bar when there is one. tqdm is not
    imported here: it costs 80 ms of start-up, and it is loaded only where a bar is shown."""

    def emit(self, record):
        try:
            bar = sys.modules.get("tqdm")
            if bar is not None:
                bar.tqdm.write(self.format(record), file=sys.stderr)
            else:
                sys.stderr.write(self.format(record) + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


def setup_logging(verbose: int) -> None:
    """The `fkp_live` logger: "fkp-live: ..." lines on stderr, debug lines with -v."""
    log.handlers.clear()
    h = _TqdmHandler()
    h.setFormatter(logging.Formatter("fkp-live: %(message)s"))
    log.addHandler(h)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
