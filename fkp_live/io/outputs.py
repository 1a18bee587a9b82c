"""Output paths: the early check (before any frame), NAME.partial.EXT staging and the rename into
place, and the errors a write failure turns into. Every file sink (mp4, text) uses them.

Nothing is lost: a staged output is written as NAME.partial.EXT beside NAME.EXT and renamed over
it when it closes holding at least one frame; with none, the partial file is removed and a file
already at NAME.EXT is left as it was. After a hard kill the partial files stay. Special files
(/dev/null) are written straight to. A write error (full disk, size limit, the folder removed) is
a `SinkError` with exit_code 1.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .sinks import SinkError


def is_special(path: str | os.PathLike) -> bool:
    """An existing file that is neither a regular file nor a folder (/dev/null, /dev/full, a FIFO):
    written straight to, never renamed over or removed."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def partial_path(path: str | os.PathLike) -> Path:
    """Where an output is written while the run lasts: NAME.partial.EXT beside NAME.EXT."""
    p = Path(path)
    return p.with_name(f"{p.stem}.partial{p.suffix}") if p.suffix else p.with_name(p.name + ".partial")


def check_output_path(path: str | os.PathLike, what: str) -> Path:
    """Fail early (before any frame) for an output that cannot be written: a folder, a missing or
    read-only folder, a file system that takes no files (/proc). A probe file is created beside the
    target and removed again; an existing target is never touched."""
    p = Path(path)
    if is_special(p):
        if not os.access(p, os.W_OK):
            raise SinkError(f"cannot write {what} {p}: permission denied; choose a writable path")
        return p
    if p.is_dir():
        raise SinkError(f"{what} {p} is a folder; give a file name, e.g. {p / ('out' + _suffix(what))}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise SinkError(f"cannot write {what} {p}: folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise SinkError(f"cannot write {what} {p}: {parent} is not a folder")
    probe = parent / f".{p.name}.fkp-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return p
    except OSError as e:
        raise SinkError(f"cannot write {what} {p}: cannot create files in {parent} "
                        f"({e.strerror or e}); choose a writable path") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return p


def _suffix(what: str) -> str:
    return {"--output": ".mp4", "--csv": ".csv", "--jsonl": ".jsonl"}.get(what, "")


def unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class Staged:
    """An output written under NAME.partial.EXT and put in place of NAME.EXT when it closes with
    at least one frame; with none, the partial file is removed and NAME.EXT left as it was. A
    special file (/dev/null) is written straight to. Only files this run created are removed.

    staged=False: the caller stages the file itself (a batch's NAME.csv.part): written straight to
    `path`, removed when it holds no frame."""

    def __init__(self, path: Path, what: str, staged: bool = True):
        self.target = path
        self.what = what
        self.direct = is_special(path)
        self.tmp = path if self.direct or not staged else partial_path(path)

    def commit(self, keep: bool, source: Path | None = None) -> bool:
        """Rename `source` (default: the partial file) into place when `keep`, else remove it."""
        src = self.tmp if source is None else source
        if self.direct:
            return keep
        if not keep:
            unlink_quietly(src)
            return False
        if src == self.target:
            return True
        try:
            os.replace(src, self.target)
            return True
        except OSError as e:
            folder = self.target.parent
            if not folder.is_dir():
                raise SinkError(f"cannot put {self.what} {self.target} in place: its folder {folder} was removed "
                                f"during the run ({e.strerror or e}); its frames are lost", exit_code=1) from None
            raise SinkError(f"cannot put {self.what} {self.target} in place ({e.strerror or e}); its frames are "
                            f"kept as {src}", exit_code=1) from None


def write_error(what: str, path: Path, e: BaseException, frames: int) -> SinkError:
    why = getattr(e, "strerror", None) or str(e).strip() or type(e).__name__
    return SinkError(f"cannot write {what} {path}: {why} after {frames} frame{'s' * (frames != 1)}; "
                     f"the frames before it are kept (check free space and the folder)", exit_code=1)


def removed_error(what: str, path: Path, tmp: Path) -> SinkError:
    folder = path.parent
    where = f"its folder {folder} was removed" if not folder.is_dir() else f"{tmp} was deleted"
    return SinkError(f"cannot write {what} {path}: {where} during the run; stopping (its frames are lost)",
                     exit_code=1)


def open_text(path: Path, what: str):
    try:
        return open(path, "w", newline="", encoding="utf-8")
    except OSError as e:
        raise SinkError(f"cannot write {what} {path}: {e.strerror or e}; choose a writable path") from None

