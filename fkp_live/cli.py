"""The `fkp-live` executable (`python -m fkp_live.cli` alike): stop handling from the very start,
then the command line (`fkp_live.commands`).

A Ctrl-C or SIGTERM while Python, click or ONNX Runtime is still importing is noted (not raised
inside an import) and ends the run with exit 130. Installed only when this module is the
command itself, never when a program or test imports it.
"""
import sys

from .stopflag import install_for_process

if __name__ == "__main__" or sys.argv[0].endswith(("/fkp-live", "fkp-live")):
    install_for_process()


def console() -> None:
    """The `fkp-live` executable."""
    from .commands import main

    main(from_console=True)


if __name__ == "__main__":
    console()
