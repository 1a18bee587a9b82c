"""Pseudo-labels: a trained teacher (an exported ONNX model, e.g. an ensemble with test-time
averaging) reads the faces of another 68-point folder, and its readings become that folder's
labels, in the teacher's own (300-W) convention. A folder whose labels follow another convention
(YouTube Faces' points sit 7-11 % IOD off 300-W's at the nose bridge and inner brows) so becomes
more training faces for a student (`fkp-train fit --extra OUT`).

The folder's own points serve only to place the crop, as a detector's box would; the teacher then
reads the face again from the crop its first points give, as the runtime does with a new face.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fkp_live.crop import crop_from_points

MANIFEST = "pseudo_labels.json"


def pseudo_label(model: str | Path, source: str | Path, out: str | Path, batch: int = 32,
                 command: str = "", echo=print) -> dict:
    """Label every .pts face of `source` with `model`'s readings into `out` (NAME.pts + a link to
    NAME's image). Returns (and writes to OUT/pseudo_labels.json) the teacher, the command and the
    teacher's agreement with the source's labels (NME, and NME once each point's mean offset is
    removed: what a convention difference cannot explain). `command`: how this was run, recorded
    so that a student's card can name it."""
    from fkp_live.track.landmarker import Landmarker

    from . import metrics
    from .data import DataError
    from .data.ibug import image_for, list_pts, read_image, read_pts

    source, out = Path(source), Path(out)
    files = list_pts(source)
    if not files:
        raise DataError(f"{source}: no .pts files to label")
    lm = Landmarker(model, device="cpu")
    schema, card = lm.schema, lm.card
    if schema.n != 68:
        raise DataError(f"{model}: a {schema.n}-point model; pseudo-labels are for 68-point folders")
    out.mkdir(parents=True, exist_ok=True)
    grey = card.channels == 1
    theirs, ours = [], []
    for i in range(0, len(files), batch):
        chunk = files[i:i + batch]
        pictures = [image_for(p) for p in chunk]
        images = [read_image(f, grey) for f in pictures]
        given = [read_pts(p) for p in chunk]
        pts = read_from_points(lm, images, given)
        for p, img, g, q in zip(chunk, pictures, given, pts):
            write_label(out / p.relative_to(source), img, q)
            theirs.append(g)
            ours.append(q)
        echo(f"labelled {min(i + batch, len(files))} / {len(files)}")
    t, q = np.array(theirs), np.array(ours)
    mask = np.ones(t.shape[:2], bool)
    raw = metrics.summary(q, t, mask, schema)["nme_io"]
    # each point's mean offset (in IOD units) removed: the part a convention cannot explain
    iod = metrics.inter_ocular(t, mask, schema)[:, None, None]
    mean_off = ((q - t) / iod).mean(axis=0)
    centred = metrics.summary(q - mean_off * iod, t, mask, schema)["nme_io"]
    report = {
        "teacher": str(Path(model).resolve()), "source": str(source.resolve()), "faces": len(files),
        "command": command,
        "nme_vs_source_labels": round(raw, 3), "nme_vs_source_labels_offsets_removed": round(centred, 3),
        "largest_mean_offset_points": [int(j) for j in np.argsort(-np.linalg.norm(mean_off, axis=-1))[:5]],
    }
    (out / MANIFEST).write_text(json.dumps(report, indent=1) + "\n")
    return report


def read_from_points(lm, images, points, passes: int = 2) -> list[np.ndarray]:
    """Each image's face read by Landmarker `lm` from the crop its given points make, then again
    from the crop of that reading (`passes` reads in all); frame pixels."""
    schema, card = lm.schema, lm.card
    pts = [np.asarray(p, np.float64) for p in points]
    for _ in range(passes):
        crops = [crop_from_points(p, schema, card.crop_scale, card.crop_rotate) for p in pts]
        uv, _ = lm.run(np.concatenate([lm.prepare(img, [c]) for img, c in zip(images, crops)]))
        pts = [c.to_frame(u) for c, u in zip(crops, uv)]
    return pts


def write_label(dst: Path, image: Path, points: np.ndarray) -> None:
    """DST.pts holding `points`, and DST + the image's suffix a link to `image` (what `fit
    --extra` reads as one face)."""
    from .data.ibug import write_pts

    dst = dst.with_suffix("")
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_pts(dst.with_suffix(".pts"), points)
    link = dst.with_suffix(image.suffix)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(image.resolve(), link)


def manifest_of(folder: str | Path) -> dict | None:
    """The pseudo-label manifest of a training folder, or None for a hand-labelled one."""
    p = Path(folder) / MANIFEST
    return json.loads(p.read_text()) if p.exists() else None
