"""StopFlag: Ctrl-C and SIGTERM end a run after the frame in hand. Its own module, importing only
`signal` and `threading`, so that the `fkp-live` command can install it before anything heavy
is imported (a signal during start-up then still ends with exit 130, outputs untouched)."""
from __future__ import annotations

import signal
import threading


class StopFlag:
    """Set by the first Ctrl-C / SIGTERM: the loop ends after the frame in hand, so every output is
    closed properly. A second signal raises KeyboardInterrupt at once (outputs are still closed)."""

    def __init__(self) -> None:
        self.stop = False
        self.signal: int | None = None
        self._old: dict = {}

    def _handler(self, signum, _frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop, self.signal = True, signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


_PROCESS: StopFlag | None = None


def install_for_process() -> StopFlag:
    """The executable's own flag, installed as the process starts (`fkp_live.cli`), before click,
    OpenCV or ONNX Runtime are imported: a signal during start-up is then noted, not raised inside
    an import."""
    global _PROCESS
    if _PROCESS is None:
        _PROCESS = StopFlag().__enter__()
    return _PROCESS


def process_flag() -> StopFlag | None:
    """The flag `install_for_process` installed, or None (a program or test calling a command)."""
    return _PROCESS
