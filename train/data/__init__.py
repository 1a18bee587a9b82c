"""Dataset readers. Every reader yields `Sample`s: an image, its points and a labelled-mask."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DataError(Exception):
    """A bad file in a dataset; the message names the file (and line) and what to do."""


class SkippableError(DataError):
    """A bad file or row that ``skip_bad=True`` would have skipped instead.

    `unit` ("files" or "rows") says what a caller that offers skipping (the CLI's --skip-bad)
    would skip; the readers themselves name no command-line flag.
    """

    def __init__(self, message: str, unit: str = "files"):
        super().__init__(message)
        self.unit = unit


@dataclass
class Sample:
    image: np.ndarray  # uint8, (H, W) greyscale or (H, W, 3) BGR
    points: np.ndarray  # float32 (N, 2), 0-based pixel centres; unlabelled points hold NaN
    mask: np.ndarray  # bool (N,), True where the point is labelled
    source: str  # file (and line) it came from
    schema: str = "ibug68"


@dataclass
class SkipReport:
    """What ``skip_bad=True`` skipped and why."""

    skipped: list[tuple[str, str]]

    def __bool__(self) -> bool:
        return bool(self.skipped)

    def summary(self) -> str:
        if not self.skipped:
            return "no bad files"
        lines = [f"skipped {len(self.skipped)} bad file(s):"]
        lines += [f"  {src}: {why}" for src, why in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)
