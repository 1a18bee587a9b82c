"""Eye and mouth openness from the 68 iBUG points, and blinks.

Eye aspect ratio (EAR; T. Soukupova and J. Cech, "Real-Time Eye Blink Detection using Facial
Landmarks", CVWW 2016), per eye with the points p1..p6 of the iBUG eye (36-41 image-left eye,
42-47 image-right eye):

    EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)

about 0.25-0.35 for an open eye, near 0.1 or below for a closed one; it does not depend on the
face's size or roll. Mouth openness is the same ratio for the inner lips (60-67):

    mouth_open = (|61 - 67| + |62 - 66| + |63 - 65|) / (3 |60 - 64|)

0 for closed lips, about 0.5-1 for a wide-open mouth.

    >>> import numpy as np
    >>> pts = np.zeros((68, 2))
    >>> pts[36:42] = [(0, 0), (1, -0.3), (2, -0.3), (3, 0), (2, 0.3), (1, 0.3)]
    >>> round(float(eye_aspect_ratio(pts[36:42])), 3)
    0.2
    >>> blink = Blink(close=0.2, reopen=0.25)
    >>> [blink.update(e) for e in (0.30, 0.19, 0.22, 0.26)]   # closes, stays closed until 0.25
    [False, True, True, False]
"""
from __future__ import annotations

import numpy as np

EYE_L = slice(36, 42)  # the image-left eye (the person's right)
EYE_R = slice(42, 48)  # the image-right eye
BLINK_CLOSE = 0.20  # EAR below this: the eyes are shut
BLINK_REOPEN = 0.22  # ... and count as open again only above this (hysteresis)


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """Six eye points (p1..p6 as in iBUG order) -> EAR."""
    e = np.asarray(eye, dtype=np.float64)
    v = np.hypot(*(e[1] - e[5])) + np.hypot(*(e[2] - e[4]))
    h = np.hypot(*(e[0] - e[3]))
    return float(v / (2.0 * h)) if h > 1e-9 else float("nan")


def mouth_aspect_ratio(points: np.ndarray) -> float:
    """68 iBUG points -> inner-lip opening over inner-lip width."""
    p = np.asarray(points, dtype=np.float64)
    v = np.hypot(*(p[61] - p[67])) + np.hypot(*(p[62] - p[66])) + np.hypot(*(p[63] - p[65]))
    h = np.hypot(*(p[60] - p[64]))
    return float(v / (3.0 * h)) if h > 1e-9 else float("nan")


class Blink:
    """Blink state of one face: shut when the mean EAR of both eyes drops below `close`, open
    again when it rises above `reopen` (hysteresis, so a noisy EAR near the threshold does not
    flicker)."""

    def __init__(self, close: float = BLINK_CLOSE, reopen: float = BLINK_REOPEN):
        if reopen < close:
            raise ValueError(f"reopen ({reopen}) must be >= close ({close})")
        self.close, self.reopen = float(close), float(reopen)
        self.shut = False

    def update(self, ear: float) -> bool:
        if ear != ear:  # NaN: keep the state
            return self.shut
        if self.shut:
            self.shut = ear < self.reopen
        else:
            self.shut = ear < self.close
        return self.shut
