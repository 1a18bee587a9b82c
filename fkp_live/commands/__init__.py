"""The `fkp-live` command line: `run` (the default command: track a source), `bench`, `morph` and
`average`, and `main`, which picks one by its first word. Each command only parses options and
reports; the work is done by the library (settings, single, batch, engine, render).

Nothing is imported here until a command is chosen, so `fkp-live --help` stays quick.
"""
from __future__ import annotations

import os
import sys


def main(argv=None, from_console: bool = False):
    """Run the command named by `argv` (default: the process's arguments); from_console: end the
    process with the command's exit status once every output is closed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("morph", "average"):
        from .morph import COMMANDS

        return COMMANDS[argv[0]].main(args=argv[1:], prog_name=f"fkp-live {argv[0]}")
    if argv and argv[0] == "bench":
        from .bench import bench

        return bench.main(args=argv[1:], prog_name="fkp-live bench", auto_envvar_prefix="FKP_LIVE_BENCH")
    from .run import run

    if not from_console:
        return run.main(args=argv, prog_name="fkp-live")
    try:
        run.main(args=argv, prog_name="fkp-live")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    # Every output is closed and renamed into place by now (the run's with-blocks have ended), so
    # the interpreter's own tear-down (freeing MediaPipe's graph, ONNX Runtime and every module:
    # about 0.1 s) is skipped, as a whole-process benchmark would otherwise pay for it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
