"""A checkpoint's predictions outside training: on image files (annotated PNGs and a CSV) and
on Kaggle's test.csv (a submission file)."""
from __future__ import annotations

import csv
from pathlib import Path


def predict_images(checkpoint, images, out) -> tuple[int, Path]:
    """Predict keypoints on image files; crops come from each file's .pts (if present) or, for
    whole-image tasks, the whole image. Writes OUT/NAME_pred.png per image and OUT/points.csv.
    -> (images written, the CSV's path). A bad image or .pts raises `DataError`."""
    import cv2
    import numpy as np

    from fkp_live import schemas

    from .checkpoint import load_model
    from .data import DataError, Sample
    from .data.ibug import read_image, read_pts
    from .datasets import KeypointDataset
    from .evaluate import predict_dataset

    model, task = load_model(checkpoint)
    schema = schemas.get(task.schema)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, samples = [], []
    for path in images:
        path = Path(path)
        img = read_image(path, grey=task.channels == 1)
        pts_file = path.with_suffix(".pts")
        if task.mode == "crop":
            if not pts_file.exists():
                raise DataError(f"{path}: crop-mode models need a face region; put a .pts beside the image "
                                "or use fkp-live --images for detection")
            pts = read_pts(pts_file, None)
            if len(pts) != schema.n:
                raise DataError(f"{pts_file}: {len(pts)} points, the model's schema has {schema.n}")
            mask = np.ones(len(pts), bool)
        else:
            pts, mask = np.zeros((schema.n, 2), np.float32), np.zeros(schema.n, bool)
        samples.append(Sample(img, pts, mask, str(path), task.schema))
    pred, _, _, conf = predict_dataset(model, KeypointDataset(samples, task, None))
    for smp, frame_pts, c in zip(samples, pred, conf):
        img, path = smp.image, Path(smp.source)
        vis = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
        for line in schema.lines:
            cv2.polylines(vis, [np.round(frame_pts[list(line)]).astype(np.int32)], False, (0, 200, 255), 1, cv2.LINE_AA)
        for x, y in frame_pts:
            cv2.circle(vis, (int(round(x)), int(round(y))), 2, (0, 0, 255), -1, cv2.LINE_AA)
        cv2.imwrite(str(out / f"{path.stem}_pred.png"), vis)
        rows.append([path.name, f"{float(c):.4f}"] +
                    [f"{v:.2f}" for v in frame_pts[:, 0]] + [f"{v:.2f}" for v in frame_pts[:, 1]])
    with open(out / "points.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["image", "confidence"] + [f"x_{i}" for i in range(schema.n)] + [f"y_{i}" for i in range(schema.n)])
        wr.writerows(rows)
    return len(rows), out / "points.csv"


def kaggle_submission(checkpoint, test_csv, lookup, out, two_model=None) -> tuple[int, int]:
    """Predict Kaggle's test.csv and write the submission file (RowId,Location), Locations
    clipped to [0, 96]; `two_model` predicts the points the first was not trained on.
    -> (rows written, images). Raises `CheckpointError` for a model that is not kaggle15 at 96x96."""
    import numpy as np
    import torch

    from .checkpoint import CheckpointError, load_model
    from .data import kaggle
    from .datasets import to_input
    from .evaluate import combine

    model, task = load_model(checkpoint)
    if task.schema != "kaggle15" or task.size != (96, 96):
        raise CheckpointError(f"{checkpoint}: a kaggle15 model on 96x96 input is needed, this one is "
                              f"{task.schema} at {task.size[0]}x{task.size[1]}")
    ids, images = kaggle.read_test(test_csv)

    def run(m):
        x = to_input(images)
        with torch.no_grad():
            return np.concatenate([m(x[i : i + 256])[0].numpy() for i in range(0, len(x), 256)]) * 96.0

    # whole-image models predict fractions of the 96x96 input; pixel centres are integers
    pred = run(model)
    if two_model:
        model_b, _ = load_model(two_model)
        pred = combine(pred, run(model_b), task)
    n = kaggle.write_submission(lookup, dict(zip(ids, pred)), out)
    return n, len(ids)
