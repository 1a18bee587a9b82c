"""Helpers for the runtime tests: encode a test video, render demo frames."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(path, frames, fps=30, pts=None, audio_seconds: float | None = None, time_base=None,
                faststart: bool = False, rotation: float | None = None, gop: int | None = None,
                bt709: bool = False):
    """Encode BGR frames to an H.264 file with PyAV; optional explicit pts (seconds) and an AAC
    tone of `audio_seconds`. `faststart`: the index at the front (as phones and web exports write
    it); `rotation`: a display rotation in degrees; `gop`: frames per group of pictures; `bt709`:
    converted and tagged BT.709 (as HD cameras and phones write it). Returns the path."""
    import av

    path = Path(path)
    h, w = frames[0].shape[:2]
    kw = dict(format="mp4", container_options={"movflags": "+faststart"}) if faststart else {}
    with av.open(str(path), "w", **kw) as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        tb = time_base or Fraction(1, 90000)
        v.time_base = tb
        v.codec_context.time_base = tb
        v.options = {"preset": "ultrafast", **({"g": str(gop)} if gop else {})}
        if rotation is not None:
            v.set_display_rotation(rotation)
        if bt709:
            v.codec_context.colorspace = v.codec_context.color_primaries = v.codec_context.color_trc = 1
            v.codec_context.color_range = 1
        a = None
        if audio_seconds:
            a = c.add_stream("aac", rate=44100)
            a.layout = "mono"
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="bgr24")
            if bt709:
                from av.video.reformatter import Colorspace

                f = f.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709)
            t = pts[i] if pts is not None else i / fps
            f.pts, f.time_base = int(round(t / tb)), tb
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            n = int(44100 * audio_seconds)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)[None]
            for s in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(tone[:, s:s + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = 44100, s, Fraction(1, 44100)
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path


def demo_frames(n=30, **kw):
    from fkp_live.io.sources import DemoSource

    src = DemoSource(frames=n, **kw)
    return [f.image for f in src], src
