"""Make the benchmark clips of the manual's speed tables from ../shared/data/videos (never shipped).

    python scripts/bench_clips.py OUT_DIR [--videos ../shared/data/videos]

four.mp4     512x512, 1713 frames: d10, d3, d11, d12, d0 and the first 425 frames of d6 (scaled
             from 480x480), one person after another, re-encoded with x264 at its defaults
s18x6.mp4    s18.mp4's packets six times over (1280x720, BT.709, 1692 frames), not re-encoded
s18_1080.mp4 s18.mp4 scaled to 1920x1080 (bicubic), re-encoded with x264 at its defaults
"""
from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2


def _x264(out: Path, size: tuple[int, int], pictures) -> int:
    """Encode BGR pictures to OUT with x264 at its defaults, 30 fps; returns how many."""
    n = 0
    with av.open(str(out), "w") as c:
        st = c.add_stream("libx264", rate=30)
        st.width, st.height = size
        st.pix_fmt = "yuv420p"
        for img in pictures:
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                c.mux(p)
            n += 1
        for p in st.encode():
            c.mux(p)
    return n


def _pictures(path: Path, limit: int | None = None):
    with av.open(str(path)) as src:
        for i, f in enumerate(src.decode(video=0)):
            if limit is not None and i >= limit:
                return
            yield f.to_ndarray(format="bgr24")


def four(videos: Path, out: Path) -> int:
    parts = (("d10", None), ("d3", None), ("d11", None), ("d12", None), ("d0", None), ("d6", 425))
    pictures = (img if img.shape[:2] == (512, 512) else cv2.resize(img, (512, 512), interpolation=cv2.INTER_AREA)
                for name, limit in parts for img in _pictures(videos / f"{name}.mp4", limit))
    return _x264(out, (512, 512), pictures)


def repeated(src_path: Path, out: Path, times: int = 6) -> None:
    with av.open(str(out), "w") as c:
        with av.open(str(src_path)) as first:
            ost = c.add_stream_from_template(first.streams.video[0])
        offset = 0
        for _ in range(times):
            with av.open(str(src_path)) as src:
                last = 0
                for p in src.demux(src.streams.video[0]):
                    if p.dts is None:  # the flush packet
                        continue
                    p.pts += offset
                    p.dts += offset
                    p.stream = ost
                    last = max(last, p.pts + (p.duration or 0))
                    c.mux(p)
            offset = last


def scaled(src_path: Path, out: Path, size=(1920, 1080)) -> None:
    _x264(out, size, (cv2.resize(img, size, interpolation=cv2.INTER_CUBIC) for img in _pictures(src_path)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--videos", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/videos"))
    a = ap.parse_args()
    videos, out = Path(a.videos), Path(a.out_dir)
    if not (videos / "s18.mp4").exists():
        raise SystemExit(f"bench_clips: {videos} does not hold the shared clips (s18.mp4, d3.mp4, ...); "
                         "pass --videos DIR")
    out.mkdir(parents=True, exist_ok=True)
    print("four.mp4:", four(videos, out / "four.mp4"), "frames")
    repeated(videos / "s18.mp4", out / "s18x6.mp4")
    scaled(videos / "s18.mp4", out / "s18_1080.mp4")
    print(f"wrote {out}/four.mp4, s18x6.mp4, s18_1080.mp4")


if __name__ == "__main__":
    main()
