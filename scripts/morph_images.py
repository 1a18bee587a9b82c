"""Render the manual's morphing pictures into docs/images/morph_*.

    .venv/bin/python scripts/morph_images.py [--data ../shared/data] [--out docs/images]

Faces: Grace Hopper (matplotlib's sample_data/grace_hopper.jpg, US Navy photo, public domain) and
astronaut Eileen Collins (scikit-image's data/astronaut.png, NASA photo, public domain; needs
`pip install scikit-image`). The mean face and the caricature's mean shape come from the first 50
faces of 300-W HELEN training images (research use only; shown here small, as an example of the
command), so those two pictures are skipped when the shared data is absent.

Writes: morph_strip.png (Hopper -> Collins in five steps), morph_anim.gif (the morph, there and back),
morph_mean.png (the mean face), morph_caricature.png (Hopper at --warp-frac 0, 1 and 1.8 from that mean),
morph_live.png (four frames of the live morph on the demo source: alpha 0, 1, 1, 0.5).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fkp_live.io.sources import DemoSource, grace_hopper  # noqa: E402
from fkp_live.commands.morph import write_gif  # noqa: E402
from fkp_live.render import morph as M  # noqa: E402
from fkp_live.track.tracker import Tracker  # noqa: E402

MAX_BYTES = 250_000


def astronaut() -> np.ndarray:
    try:
        import skimage
    except ImportError:
        sys.exit("scikit-image is needed for the second face (its data/astronaut.png): pip install scikit-image")
    return M.load_image(Path(skimage.__file__).parent / "data" / "astronaut.png")


def save_png(path: Path, bgr: np.ndarray) -> None:
    """A PNG, palette-quantised when the full-colour one would be large."""
    from PIL import Image

    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    data = buf.tobytes()
    if len(data) > 150_000:
        rgb = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
        im = rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
        b = io.BytesIO()
        im.save(b, format="PNG", optimize=True)
        data = b.getvalue()
    path.write_bytes(data)
    print(f"wrote {path} ({bgr.shape[1]}x{bgr.shape[0]}, {len(data) / 1024:.0f} KiB)")
    assert len(data) < MAX_BYTES, f"{path} is too big"


def label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (6, img.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (6, img.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def fit(img: np.ndarray, width: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "images"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(device="cpu", max_faces=16, smooth=0.0)

    # 1. Hopper -> Collins: a strip of five steps and a GIF
    g, c = grace_hopper(), astronaut()
    subjects = [M.Subject(g, M.face_points(g, tracker, "grace_hopper.jpg"), "hopper"),
                M.Subject(c, M.face_points(c, tracker, "astronaut.png"), "collins")]
    m = M.Morph(subjects)
    # the head and shoulders of the first picture's canvas
    y0, y1 = 40, 480
    steps = [0, 0.25, 0.5, 0.75, 1]
    tiles = [label(fit(m.image(0, t)[y0:y1], 150), f"{t:g}") for t in steps]
    save_png(out / "morph_strip.png", np.hstack(tiles))
    n = 8
    seq = [m.image(0, i / n)[95:415, 96:416] for i in range(n + 1)]  # the heads
    frames = [seq[0]] * 6 + seq + [seq[-1]] * 6 + seq[-2:0:-1]
    gif = out / "morph_anim.gif"
    size = write_gif(gif, frames, fps=10, width=128, colors=128)
    print(f"wrote {gif} ({len(frames)} frames, {size / 1024:.0f} KiB)")
    assert size < MAX_BYTES

    # 2. the mean face of 50 HELEN faces, and a caricature of Hopper against its shape
    helen = Path(a.data) / "300w" / "helen_train"
    if helen.is_dir():
        # points found by the model, as `fkp-live average` does (a mean of hand-made annotations would
        # make the caricature exaggerate the model's own habits too)
        faces = []
        for f in sorted(helen.glob("*.jpg"))[:50]:
            img = M.load_image(f)
            try:
                faces.append(M.Subject(img, M.face_points(img, tracker, f.name), f.name))
            except M.MorphError as e:
                print(f"skipped {f.name}: {e}")
        avg = M.average(faces, (200, 200))
        save_png(out / "morph_mean.png", label(avg.image, f"mean of {len(faces)}"))
        crop = (slice(70, 430), slice(86, 426))
        tiles = []
        for wf, text in ((0.0, "0: mean shape"), (1.0, "1: Hopper"), (1.8, "1.8: caricature")):
            car, folded = M.caricature(subjects[0], avg.points, wf)  # the mean is fitted to the face
            assert folded == 0
            tiles.append(label(fit(car[crop], 180), text))
        save_png(out / "morph_caricature.png", np.hstack(tiles))
    else:
        print(f"no {helen}: skipping morph_mean.png and morph_caricature.png")

    # 3. the live morph on the demo source: Collins's face on the moving portrait
    live = M.LiveMorph.from_file(Path(__import__("skimage").__file__).parent / "data" / "astronaut.png",
                                 tracker, alpha=1.0)
    tracker.reset()
    demo = DemoSource(frames=91, size=(480, 360))
    tiles = []
    for frame in demo:
        faces = tracker.track(frame).faces
        if frame.index in (0, 30, 60, 90):
            live.alpha = {0: 0.0, 30: 1.0, 60: 1.0, 90: 0.5}[frame.index]
            img = live(frame, faces).image
            x0, y0_, x1, y1_ = faces[0].box
            cx, cy = (x0 + x1) / 2, (y0_ + y1_) / 2 - 0.1 * (y1_ - y0_)
            half = 0.95 * max(x1 - x0, y1_ - y0_)
            xa, ya = int(max(cx - half, 0)), int(max(cy - half, 0))
            tile = img[ya:ya + int(2 * half), xa:xa + int(2 * half)]
            tiles.append(label(cv2.resize(tile, (180, 180), interpolation=cv2.INTER_AREA),
                               f"alpha {live.alpha:g}" + (" (input)" if live.alpha == 0 else "")))
    save_png(out / "morph_live.png", np.hstack(tiles))
    tracker.close()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
