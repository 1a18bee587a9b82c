"""How every fkp-live command meets its user, however it is invoked: one line per error on stderr
("fkp-live: error: ..."), exit status 2 for bad usage or input, 1 for a failure, 130 for Ctrl-C."""
from __future__ import annotations

import sys

import click


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
