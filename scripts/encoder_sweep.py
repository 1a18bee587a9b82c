"""x264 settings compared on one clip the way the MP4 sink encodes (CRF 20; one encoder thread up to
500,000 pixels, x264's own choice above): CPU ms per frame, file size and the PSNR of Y against the
decoded source, after one encode thrown away (the first runs slower). The encoder table of
docs/speed.md comes from it.

    python scripts/encoder_sweep.py CLIP.mp4 [--frames 600] [--presets realtime,superfast,...]
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import av
import numpy as np

from fkp_live.io import SMALL_FRAME, X264_OPTIONS


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def encode(frames: list[np.ndarray], w: int, h: int, preset: str, out: str) -> tuple[float, float]:
    """I420 frames -> MP4 at `out`; (wall, CPU) seconds per frame."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    with av.open(out, "w") as o:
        s = o.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "20", **X264_OPTIONS.get(preset, {"preset": preset})}
        if w * h <= SMALL_FRAME:
            s.codec_context.thread_count = 1
        for i, a in enumerate(frames):
            f = av.VideoFrame.from_ndarray(a, format="yuv420p")
            f.pts = i
            for p in s.encode(f):
                o.mux(p)
        for p in s.encode():
            o.mux(p)
    n = len(frames)
    return (time.perf_counter() - t0) / n, (cpu_seconds() - c0) / n


def psnr_y(path: str, frames: list[np.ndarray], h: int) -> float:
    out = []
    with av.open(path) as c:
        for i, f in enumerate(c.decode(video=0)):
            err = f.to_ndarray()[:h].astype(np.float32) - frames[i][:h].astype(np.float32)
            out.append(10 * np.log10(255.0 ** 2 / max(float(np.mean(err ** 2)), 1e-12)))
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--presets", default="realtime,superfast,ultrafast,veryfast")
    a = ap.parse_args()
    frames = []
    with av.open(a.clip) as c:
        for f in c.decode(video=0):
            frames.append(f.reformat(format="yuv420p").to_ndarray())
            if len(frames) >= a.frames:
                break
    h, w = frames[0].shape[0] * 2 // 3, frames[0].shape[1]
    print(f"{a.clip}: {len(frames)} frames of {w}x{h}")
    with tempfile.TemporaryDirectory() as tmp:
        # a first encode runs slower (the process warming up): one is made and thrown away
        encode(frames[:60], w, h, a.presets.split(",")[0], os.path.join(tmp, "warm-up.mp4"))
        for preset in a.presets.split(","):
            out = os.path.join(tmp, f"{preset}.mp4")
            wall, cpu = encode(frames, w, h, preset, out)
            print(f"{preset:10s} CPU {cpu * 1e3:6.2f} ms/frame  wall {wall * 1e3:6.2f}  "
                  f"{os.path.getsize(out) / 1e6:6.2f} MB  PSNR Y {psnr_y(out, frames, h):.2f} dB", flush=True)


if __name__ == "__main__":
    main()
