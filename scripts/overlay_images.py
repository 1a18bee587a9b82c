"""Render the manual's overlay pictures into docs/images/.

    python scripts/overlay_images.py [--data ../shared/data] [--out docs/images]

overlay.gif  the built-in demo (Grace Hopper's portrait, US Navy photo, public domain, as shipped
             with matplotlib), its head twice, moving, tracked with the default model and drawn
             with points, contours and ids: what `fkp-live --demo` shows
pose.png     head pose axes (`--analysis pose --draw points,pose`) on five 300-W AFW photos, heads
             turned from about -30 to +30 degrees of yaw (300-W: research use only, no commercial use; C. Sagonas et al., ICCV-W
             2013); skipped when ../shared/data is absent
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fkp_live import Tracker  # noqa: E402
from fkp_live.analysis import Analyser, AnalysingTracker  # noqa: E402
from fkp_live.io.sources import DemoSource  # noqa: E402
from fkp_live.render.draw import draw  # noqa: E402

# the yaws (degrees) whose nearest AFW faces the pose picture shows
POSE_YAWS = (-30, -15, 0, 15, 30)
TILE = 200


def overlay(out: Path) -> None:
    """The demo's head, two copies, every sixth frame of 150, as a small looping GIF."""
    tracker = Tracker(device="cpu")
    frames = []
    with DemoSource(frames=150, size=(720, 360), faces=2, tight=True) as src:
        for frame in src:
            faces = tracker(frame)
            if frame.index % 6:
                continue
            image = draw(frame.image.copy(), faces, tracker.schema, ("points", "contours", "ids"))
            frames.append(cv2.resize(image, (432, 216), interpolation=cv2.INTER_AREA))
    pictures = [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)) for f in frames]
    palette = pictures[len(pictures) // 2].quantize(colors=48, method=Image.Quantize.MEDIANCUT)
    gif = [p.quantize(palette=palette, dither=Image.Dither.NONE) for p in pictures]
    gif[0].save(out / "overlay.gif", save_all=True, append_images=gif[1:], duration=180, loop=0,
                optimize=True)
    print(f"wrote {out / 'overlay.gif'} ({len(gif)} frames)")


def _pose_photos(afw: Path, tracker: AnalysingTracker):
    """One-face AFW photos whose yaw is nearest each of POSE_YAWS."""
    found = []
    for path in sorted(afw.glob("*.jpg")):
        image = cv2.imread(str(path))
        faces = tracker.track(image, still=True).faces
        if len(faces) != 1 or faces[0].analysis is None or faces[0].analysis.pose is None:
            continue
        found.append((faces[0].analysis.pose.ry, path, image, faces))
    return [min(found, key=lambda x: abs(x[0] - yaw)) for yaw in POSE_YAWS]


def _square(image: np.ndarray, face, side: int) -> np.ndarray:
    """A square of the picture around the face's points (1.5x their extent), resized to side."""
    pts = face.points
    cx, cy = (pts.min(0) + pts.max(0)) / 2
    half = 0.75 * float((pts.max(0) - pts.min(0)).max())
    m = np.float32([[side / (2 * half), 0, side / 2 - cx * side / (2 * half)],
                    [0, side / (2 * half), side / 2 - cy * side / (2 * half)]])
    return cv2.warpAffine(image, m, (side, side), flags=cv2.INTER_AREA, borderValue=(255, 255, 255))


def pose(data: Path, out: Path) -> None:
    afw = data / "300w" / "afw"
    if not afw.is_dir():
        print(f"{afw} is absent: pose.png not made")
        return
    tracker = AnalysingTracker(Tracker(device="cpu", smooth=0), Analyser(("pose",)))
    tiles = []
    for ry, path, image, faces in _pose_photos(afw, tracker):
        drawn = draw(image.copy(), faces, tracker.schema, ("points", "pose"))
        tile = _square(drawn, faces[0], TILE)
        p = faces[0].analysis.pose
        label = f"yaw {int(round(p.ry)):+d}  pitch {int(round(p.rx)):+d}  roll {int(round(p.rz)):+d}"
        cv2.rectangle(tile, (0, TILE - 20), (TILE, TILE), (0, 0, 0), -1)
        cv2.putText(tile, label, (5, TILE - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
        print(f"{path.name}: {label}")
    gap = np.full((TILE, 4, 3), 255, np.uint8)
    row = tiles[0]
    for t in tiles[1:]:
        row = np.hstack([row, gap, t])
    cv2.imwrite(str(out / "pose.png"), row)
    print(f"wrote {out / 'pose.png'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--only", choices=("overlay", "pose"), help="make one of the pictures")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.only in (None, "overlay"):
        overlay(a.out)
    if a.only in (None, "pose"):
        pose(a.data, a.out)


if __name__ == "__main__":
    main()
