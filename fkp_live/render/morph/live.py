"""The live morph: a target face warped onto every tracked face of a video, as an engine overlay
(`LiveMorph(frame, faces) -> Frame`), with its colours matched to the face's; `benchmark()` /
`python -m fkp_live.render.morph --bench VIDEO TARGET` measures it through `engine.run`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ...frame import Frame, to_bgr
from .mesh import EYE_CORNERS, FOREHEAD_FROM, INNER_MOUTH, JAW, N_POINTS, delaunay, face_shape, triangulation_shape
from .points import MorphError, check_points, face_points, load_image
from .warping import fold_fraction, warp_maps


# OpenCV's BGR -> YCrCb (8-bit, chroma offset 128): ycc = _YCC @ bgr + (0, 128, 128)
_YCC = np.array([[0.114, 0.587, 0.299], [-0.081312, -0.418688, 0.5], [0.5, -0.331264, -0.168736]])
_YCC_INV = np.linalg.inv(_YCC)


def colour_matrix(src_stats, dst_stats, limit=(1.5, 1.25, 1.25)) -> np.ndarray:
    """A 3x4 BGR -> BGR matrix that gives pixels with YCrCb mean/std `src_stats` the mean/std
    `dst_stats` (each a pair of 3-vectors, as `cv2.meanStdDev` of a YCrCb image gives them).
    YCrCb (luma and two chroma channels) is linear in BGR, so the whole transfer is one matrix
    applied with `cv2.transform` (Lab's two conversions alone cost ~1.8 ms a face on this machine).
    The gain per channel is kept within 1/limit..limit (luma, Cr, Cb): contrast may follow the live
    face, but chroma is mostly shifted, not stretched (stretching it turns highlights blue)."""
    ms, ss = (np.asarray(v, np.float64).ravel() for v in src_stats)
    md, sd = (np.asarray(v, np.float64).ravel() for v in dst_stats)
    lim = np.broadcast_to(np.asarray(limit, np.float64), (3,))
    g = np.clip((sd + 1.0) / (ss + 1.0), 1.0 / lim, lim)
    # ycc' = g (ycc - ms) + md, the chroma offsets cancel:  bgr' = Y^-1 diag(g) Y bgr + Y^-1 (md - g ms) - ...
    lin = _YCC_INV @ np.diag(g) @ _YCC
    off = _YCC_INV @ ((md - g * ms) - (1 - g) * np.array([0.0, 128.0, 128.0]))
    return np.hstack([lin, off[:, None]]).astype(np.float32)


class LiveMorph:
    """An engine overlay: every tracked face is redrawn as the target face warped to its shape,
    colour-matched to it, and blended in by `alpha` through a feathered mask.

    alpha 1: the target's face moving with yours; alpha 0: the frame unchanged, pixel for pixel.
    The mesh (68 points + forehead) is triangulated once, on the target's shape with the lips held
    apart, so triangles never flip from frame to frame; a face turned so far that its triangles
    fold is faded out (see `fade`). Per face and frame the
    work is limited to the face's box: an id map of the triangles at half resolution, the dense
    map from it (one remap), a colour transfer (mean/std in YCrCb over the face), and one blend.
    `keep_mouth`: the live mouth's inside (teeth, tongue) shows through instead of stretched lips.
    """

    def __init__(self, target_image: np.ndarray, target_points: np.ndarray, schema=None, alpha: float = 0.5,
                 colour: bool = True, keep_mouth: bool = True, feather: float = 0.12, step: int = 2,
                 fold_start: float = 0.006, fold_limit: float = 0.02):
        n = getattr(schema, "n", N_POINTS) if schema is not None and not isinstance(schema, str) else N_POINTS
        name = getattr(schema, "name", schema) or "ibug68"
        if n != N_POINTS or (isinstance(schema, str) and schema != "ibug68"):
            raise MorphError(f"the live morph needs the 68 iBUG points; the model's scheme is {name}")
        self.target = to_bgr(np.asarray(target_image))
        self.target_points = check_points(target_points, "target points")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be within 0..1, not {alpha}")
        self.alpha = float(alpha)
        self.colour = bool(colour)
        self.keep_mouth = bool(keep_mouth)
        self.feather = float(feather)
        self.step = int(step)
        self.fold_start, self.fold_limit = float(fold_start), float(fold_limit)
        self.mask_top = 0.25  # the mask reaches this share of the way from the brows to the forehead points
        self.src = face_shape(self.target_points)
        self.tris = delaunay(triangulation_shape(self.src))
        self.last_fade: list[float] = []  # per face of the last frame: the fold fade applied (1 = none)

    @classmethod
    def from_file(cls, path: str | os.PathLike, tracker, alpha: float = 0.5, face: int | None = None,
                  **kw) -> "LiveMorph":
        """Read the target picture and find its face's points once (the largest face, or number
        `face` from the left), with the tracker the run uses."""
        img = load_image(path, "--morph-to image")
        pts = face_points(img, tracker, str(path), face)
        tracker.reset()
        return cls(img, pts, getattr(tracker, "schema", None), alpha, **kw)

    def __call__(self, frame: Frame, faces) -> Frame:
        return frame.with_image(self.apply(frame.image, [f.points for f in faces]))

    def apply(self, image: np.ndarray, faces_points) -> np.ndarray:
        """A new picture: `image` with each face (68 points each) morphed; `image` is not changed."""
        out = image.copy()
        self.last_fade = []
        if self.alpha == 0:
            return out
        for p in faces_points:
            self.last_fade.append(self._face(out, np.asarray(p, np.float64)))
        return out

    def fade(self, shape: np.ndarray) -> float:
        """1 for a face whose mesh is not folded, falling smoothly to 0 as the folded share of its
        area goes from `fold_start` to `fold_limit` (talking heads stay below 0.7 %; faces turned
        towards profile on 300-W fold 1-2.5 %)."""
        if self.fold_limit <= 0:
            return 1.0
        f = fold_fraction(shape, self.tris)
        t = min(max((f - self.fold_start) / max(self.fold_limit - self.fold_start, 1e-9), 0.0), 1.0)
        return 1.0 - t * t * (3.0 - 2.0 * t)

    def _face(self, out: np.ndarray, p68: np.ndarray) -> float:
        """Morph one face into `out` (in place, within its box); returns the fold fade used."""
        H, W = out.shape[:2]
        dst = face_shape(p68)
        if not np.isfinite(dst).all():
            return 0.0
        fade = self.fade(dst)
        a = self.alpha * fade
        if a <= 0:
            return fade
        st = self.step
        # only the mask's box is touched: jaw and lower forehead (the mesh reaches higher, so every
        # pixel of the box that the mask covers has a triangle)
        top = p68[list(FOREHEAD_FROM)] + self.mask_top * (dst[N_POINTS:N_POINTS + 6] - p68[list(FOREHEAD_FROM)])
        poly = np.vstack([p68[list(JAW)], top[::-1]])
        lo, hi = poly.min(0), poly.max(0)
        x0, x1 = _span(int(lo[0]) - st, int(hi[0]) + st + 2, W, st)
        y0, y1 = _span(int(lo[1]) - st, int(hi[1]) + st + 2, H, st)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return fade
        box = (x0, y0, x1 - x0, y1 - y0)
        mx, my, ids = warp_maps(self.src, dst, self.tris, box, st, fill_gaps=True)
        warped = cv2.remap(self.target, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        roi = out[y0:y1, x0:x1]
        # the mask, on the coarse grid: jaw and lower forehead, minus the live mouth's inside
        gh, gw = ids.shape
        off = np.array([x0 + (st - 1) / 2.0, y0 + (st - 1) / 2.0])
        k = 16.0 / st
        mask = np.zeros((gh, gw), np.uint8)
        cv2.fillPoly(mask, [np.round((poly - off) * k).astype(np.int32)], 255, cv2.LINE_8, 4)
        if self.keep_mouth:
            cv2.fillPoly(mask, [np.round((p68[list(INNER_MOUTH)] - off) * k).astype(np.int32)], 0, cv2.LINE_8, 4)
        # feather: 0 on the mask's edge rising smoothly to 1 at `feather` eye distances inside
        eye = float(np.hypot(*(p68[EYE_CORNERS[1]] - p68[EYE_CORNERS[0]])))
        depth = max(self.feather * eye / st, 1.0)
        dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
        ramp = np.clip((dist - 1.0) * (1.0 / depth), 0.0, 1.0)  # the outermost ring of samples is 0
        ramp = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep
        weight = cv2.resize(ramp, (box[2], box[3]), interpolation=cv2.INTER_LINEAR)
        weight *= a
        if self.colour:
            # match the target's face to the live one: YCrCb mean/std over the same (coarse) region
            small_w = cv2.resize(warped, (gw, gh), interpolation=cv2.INTER_NEAREST)
            small_f = cv2.resize(roi, (gw, gh), interpolation=cv2.INTER_NEAREST)
            if cv2.countNonZero(mask) >= 16:
                sw = cv2.meanStdDev(cv2.cvtColor(small_w, cv2.COLOR_BGR2YCrCb), mask=mask)
                sf = cv2.meanStdDev(cv2.cvtColor(small_f, cv2.COLOR_BGR2YCrCb), mask=mask)
                warped = cv2.transform(warped, colour_matrix(sw, sf))
        roi[:] = cv2.blendLinear(warped, roi, weight, 1.0 - weight)
        return fade


def _span(a: int, b: int, n: int, step: int) -> tuple[int, int]:
    """[a, b) clipped to [0, n) with a length that is a multiple of `step` (so the coarse grid
    scales up by exactly `step`), grown where there is room, else shrunk."""
    a, b = max(a, 0), min(b, n)
    r = (-(b - a)) % step
    if r:
        grow = min(r, n - b)
        b += grow
        a -= min(r - grow, a)
        b -= (b - a) % step
    return a, b


# ------------------------------------------------------------------ measuring it
class _Frames:
    """Frames held in memory, replayed as a source."""

    still = False
    live = False
    path = None

    def __init__(self, images, fps=30.0, n=None):
        self.images, self.fps = list(images), fps
        self.length = n or len(self.images)
        self.name = "frames"

    def __iter__(self):
        for i in range(self.length):
            yield Frame(i, i / self.fps, self.images[i % len(self.images)])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def benchmark(source, target_path: str | os.PathLike, frames: int | None = None, rounds: int = 2,
              alpha: float = 0.5, tracker=None) -> dict:
    """Tracker-only fps and tracker + live morph fps on the same frames, through `engine.run`, each
    with an H.264 MP4 written (`Mp4Sink`, to a temporary file). The two runs alternate `rounds`
    times, so a load that changes meanwhile hurts both alike; the best round of each is reported,
    with the morph's ms per frame (the engine's draw stage) and the load average.

    source: a video path (decoded in every run, as `fkp-live --video` does; at most `frames`
    frames) or a list of BGR images (replayed from memory, `frames` of them, default all once)."""
    from ...engine import run
    from ...io.mp4 import Mp4Sink
    from ...io.sources import VideoSource
    from ...track.tracker import Tracker

    if isinstance(source, (str, os.PathLike)):
        def open_source():
            return VideoSource(source)
        with open_source() as probe:
            fps, name = probe.fps or 30.0, Path(source).name
    else:
        images = [to_bgr(np.asarray(x)) for x in source]
        if not images:
            raise MorphError("benchmark: no frames given")
        fps, name = 30.0, "frames"

        def open_source():
            return _Frames(images, fps, frames)
    own = tracker is None
    tracker = tracker or Tracker(device="cpu")
    try:
        morph = LiveMorph.from_file(target_path, tracker, alpha)
        best: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(rounds):
                for kind in ("tracker", "morph"):
                    tracker.reset()
                    with open_source() as src, Mp4Sink(os.path.join(tmp, f"{kind}{r}.mp4"), fps=fps) as sink:
                        res = run(src, tracker, [sink], overlay=morph if kind == "morph" else None,
                                  max_frames=frames)
                    if kind not in best or res.fps > best[kind].fps:
                        best[kind] = res
    finally:
        if own:
            tracker.close()
    m, t = best["morph"], best["tracker"]
    ms = m.ms_per_frame()
    size = getattr(m, "size", None)
    return {"source": name, "frames": m.frames, "faces_per_frame": round(m.faces / max(m.frames, 1), 2),
            "tracker_fps": round(t.fps, 1), "morph_fps": round(m.fps, 1), "morph_ms": round(ms.get("draw", 0.0), 2),
            "tracker_stages_ms": {k: round(v, 2) for k, v in t.ms_per_frame().items()},
            "morph_stages_ms": {k: round(v, 2) for k, v in ms.items()},
            "load_average": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()} | ({"size": size} if size else {})
