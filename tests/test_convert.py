"""68-point -> Kaggle conversion: framing, pixel alignment, label removal, files that read back."""
from __future__ import annotations


import numpy as np
import pytest

from fkp_live.schemas import KAGGLE_BIG_SUBSET, KAGGLE_NAMES
from train.convert import KAGGLE_MEAN_POINTS, convert_sample, convert_to_kaggle, iter_ibug
from train.data import Sample
from train.data import kaggle
from train.data.ibug import list_pts, load_sample, split_of

from conftest import DATA
W300 = DATA / "300w"

K = {n: i for i, n in enumerate(KAGGLE_NAMES)}


def face68(cx: float, cy: float, size: float, rng=None) -> np.ndarray:
    """A plausible upright 68-point face (iBUG order, image-left first), 0-based pixels."""
    p = np.zeros((68, 2))
    t = np.pi * np.arange(17) / 16
    p[0:17] = np.c_[-0.5 * np.cos(t), 0.55 * np.sin(t)]
    p[17:22] = np.c_[np.linspace(-0.42, -0.1, 5), np.full(5, -0.3)]
    p[22:27] = np.c_[np.linspace(0.1, 0.42, 5), np.full(5, -0.3)]
    p[27:31] = np.c_[np.zeros(4), np.linspace(-0.2, 0.1, 4)]
    p[31:36] = np.c_[np.linspace(-0.1, 0.1, 5), np.full(5, 0.15)]
    eye = np.array([[-0.1, 0], [-0.04, -0.04], [0.04, -0.04], [0.1, 0], [0.04, 0.04], [-0.04, 0.04]])
    p[36:42] = eye + (-0.22, -0.15)  # image-left eye: 36 outer ... 39 inner
    p[42:48] = eye + (0.22, -0.15)  # image-right eye: 42 inner ... 45 outer
    p[48:60] = np.c_[
        [-0.2, -0.13, -0.06, 0, 0.06, 0.13, 0.2, 0.13, 0.06, 0, -0.06, -0.13],
        [0.3, 0.27, 0.26, 0.25, 0.26, 0.27, 0.3, 0.35, 0.36, 0.37, 0.36, 0.35],
    ]
    p[60:68] = np.c_[[-0.15, -0.05, 0, 0.05, 0.15, 0.05, 0, -0.05], [0.3, 0.29, 0.29, 0.29, 0.3, 0.32, 0.32, 0.32]]
    if rng is not None:
        p += rng.normal(0, 0.01, p.shape)
    return (p * size + (cx, cy)).astype(np.float32)


def fake_sample(i: int, rng, name: str | None = None) -> Sample:
    img = rng.integers(0, 256, (120, 140, 3), dtype=np.uint8)
    pts = face68(70 + rng.uniform(-5, 5), 55 + rng.uniform(-5, 5), 60 + rng.uniform(-5, 5), rng)
    return Sample(img, pts, np.ones(68, bool), name or f"/fake/set/face_{i:04d}.pts", "ibug68")


def check_geometry(s: Sample):
    p = s.points
    assert p.shape == (15, 2) and np.isfinite(p).all()
    assert (p >= -2).all() and (p <= 98).all(), p
    # "left" is the subject's left = the image's right side
    assert p[K["left_eye_center"], 0] > p[K["right_eye_center"], 0]
    assert p[K["left_eye_outer_corner"], 0] > p[K["left_eye_inner_corner"], 0]
    assert p[K["mouth_left_corner"], 0] > p[K["mouth_right_corner"], 0]
    eyes_y = (p[K["left_eye_center"], 1] + p[K["right_eye_center"], 1]) / 2
    assert eyes_y < p[K["nose_tip"], 1] < p[K["mouth_center_bottom_lip"], 1]
    assert p[K["left_eyebrow_inner_end"], 1] < p[K["left_eye_center"], 1]
    assert p[K["mouth_center_top_lip"], 1] < p[K["mouth_center_bottom_lip"], 1]


def test_convert_sample_fake_face_geometry():
    rng = np.random.default_rng(0)
    k = convert_sample(fake_sample(0, rng))
    assert k.schema == "kaggle15" and k.image.shape == (96, 96) and k.image.dtype == np.uint8
    assert k.mask.all()
    check_geometry(k)
    # framed like Kaggle: eyes ~36 px apart around y 38, face centred
    d = k.points[K["left_eye_center"], 0] - k.points[K["right_eye_center"], 0]
    assert 28 < d < 46
    assert 30 < k.points[[0, 1], 1].mean() < 46
    assert 40 < k.points[K["nose_tip"], 0] < 56


def test_convert_sample_pixel_alignment():
    """A blob drawn at the nose tip in the source lands on the converted nose tip (sub-pixel)."""
    h, w = 400, 360
    pts = face68(181.3, 190.7, 210.0)
    yy, xx = np.mgrid[0:h, 0:w]
    nose = pts[30]
    blob = 255 * np.exp(-((xx - nose[0]) ** 2 + (yy - nose[1]) ** 2) / (2 * 8.0**2))
    img = np.repeat(blob.astype(np.uint8)[..., None], 3, axis=2)
    k = convert_sample(Sample(img, pts, np.ones(68, bool), "blob", "ibug68"))
    out = k.image.astype(np.float64)
    out[out < 20] = 0
    gy, gx = np.mgrid[0:96, 0:96]
    centroid = np.array([(out * gx).sum(), (out * gy).sum()]) / out.sum()
    np.testing.assert_allclose(centroid, k.points[K["nose_tip"]], atol=0.25)


def test_convert_sample_face_at_image_edge():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)
    pts = face68(15, 20, 60)  # hangs off the top-left corner
    k = convert_sample(Sample(img, pts, np.ones(68, bool), "edge", "ibug68"))
    assert k.image.shape == (96, 96)
    check_geometry(k)


def test_convert_sample_keeps_source_masks():
    s = fake_sample(0, np.random.default_rng(1))
    s.mask[36] = False  # one point of the image-left eye -> right_eye_center and its outer corner
    k = convert_sample(s)
    assert not k.mask[K["right_eye_center"]] and not k.mask[K["right_eye_outer_corner"]]
    assert k.mask.sum() == 13 and np.isnan(k.points[~k.mask]).all()


def test_convert_rejects_other_schemas(tmp_path):
    s = Sample(np.zeros((96, 96), np.uint8), np.zeros((15, 2), np.float32), np.ones(15, bool), "k", "kaggle15")
    with pytest.raises(ValueError, match="68-point"):
        convert_to_kaggle([s], tmp_path, progress=False, echo=None)


def test_label_removal_70_30_and_files(tmp_path):
    rng = np.random.default_rng(0)
    samples = [fake_sample(i, rng) for i in range(200)]
    lines = []
    summary = convert_to_kaggle(samples, tmp_path / "a", seed=1, holdout=lambda s: False,
                                progress=False, echo=lines.append)
    assert summary.n_train == 200 and summary.n_test == 0
    assert summary.n_train_complete == 60 and summary.n_train_big_subset == 140
    assert "200 images" in lines[0] and "60 complete" in lines[0]
    train, report = kaggle.read_training(tmp_path / "a" / "training.csv")
    assert not report and len(train) == 200
    big = np.array([k in KAGGLE_BIG_SUBSET for k in range(15)])
    full = [s.mask.all() for s in train]
    assert sum(full) == 60
    assert all(s.mask.all() or (s.mask == big).all() for s in train)
    # the complete rows are spread over the set, not the first 60
    assert 0 < sum(full[:100]) < 60
    for s in train:
        check_geometry(Sample(s.image, np.where(s.mask[:, None], s.points, KAGGLE_MEAN_POINTS), s.mask, "", ""))
    # deterministic for a seed, different for another
    convert_to_kaggle(samples, tmp_path / "b", seed=1, holdout=lambda s: False, progress=False, echo=None)
    assert (tmp_path / "a" / "training.csv").read_bytes() == (tmp_path / "b" / "training.csv").read_bytes()
    convert_to_kaggle(samples, tmp_path / "c", seed=2, holdout=lambda s: False, progress=False, echo=None)
    other, _ = kaggle.read_training(tmp_path / "c" / "training.csv")
    assert [s.mask.all() for s in other] != full
    assert sum(s.mask.all() for s in other) == 60


def test_holdout_test_files_and_scoring(tmp_path):
    rng = np.random.default_rng(5)
    samples = [fake_sample(i, rng) for i in range(60)]
    n_test = sum(split_of(s.source) == "test" for s in samples)
    assert 0 < n_test < 60  # the default holdout is 300-W's fixed split
    out = tmp_path / "k"
    summary = convert_to_kaggle(samples, out, keep_all_frac=0.3, progress=False, echo=None)
    assert summary.n_test == n_test and summary.n_train == 60 - n_test
    ids, images = kaggle.read_test(out / "test.csv")
    assert ids == list(range(1, n_test + 1))
    truth, _ = kaggle.read_training(out / "test_truth.csv")
    assert len(truth) == n_test and all(s.mask.all() for s in truth)
    np.testing.assert_array_equal(images, np.stack([s.image for s in truth]))
    lookup = (out / "IdLookupTable.csv").read_text().splitlines()
    assert lookup[0] == "RowId,ImageId,FeatureName,Location"
    assert len(lookup) == 1 + 30 * n_test
    assert lookup[1] == "1,1,left_eye_center_x," and lookup[-1] == f"{30 * n_test},{n_test},mouth_center_bottom_lip_y,"
    preds = {i: s.points for i, s in zip(ids, truth)}
    kaggle.write_submission(out / "IdLookupTable.csv", preds, out / "sub.csv")
    assert kaggle.score_submission(out / "sub.csv", out / "IdLookupTable.csv", out / "test_truth.csv") < 1e-3
    sources = (out / "sources.csv").read_text().splitlines()
    assert sources[0] == "file,row,source" and len(sources) == 61
    assert sum(ln.startswith("test.csv,") for ln in sources) == n_test
    assert not list(out.glob(".*tmp*"))


@pytest.mark.skipif(not W300.is_dir(), reason=f"300-W data not found at {W300}")
def test_real_300w_faces(tmp_path):
    files = list_pts(W300 / "afw")[:12]
    assert files, f"no .pts files in {W300 / 'afw'}"
    samples = [load_sample(p, grey=True) for p in files]
    out = tmp_path / "k"
    summary = convert_to_kaggle(samples, out, keep_all_frac=1.0, holdout=lambda s: False, progress=False, echo=None)
    assert summary.n_train == 12 and summary.n_train_complete == 12
    train, _ = kaggle.read_training(out / "training.csv")
    assert len(train) == 12
    for s in train:
        check_geometry(s)
    mean = np.mean([s.points for s in train], axis=0)
    # close to Kaggle's mean face (a few px; 300-W's nose tip sits higher than Kaggle's)
    assert np.abs(mean[[0, 1, 11, 12, 14]] - KAGGLE_MEAN_POINTS[[0, 1, 11, 12, 14]]).max() < 6
    # the streaming loader gives the same result
    again = convert_to_kaggle(iter([load_sample(p, grey=False) for p in files[:3]]), tmp_path / "s",
                              keep_all_frac=1.0, holdout=lambda s: False, progress=False, echo=None)
    assert again.n_train == 3
    first, _ = kaggle.read_training(tmp_path / "s" / "training.csv")
    assert np.abs(first[0].image.astype(int) - train[0].image.astype(int)).max() <= 2
    np.testing.assert_allclose(first[0].points, train[0].points, atol=1e-3)


@pytest.mark.skipif(not W300.is_dir(), reason=f"300-W data not found at {W300}")
def test_iter_ibug_skip_bad(tmp_path):
    src = list_pts(W300 / "afw")[0]
    d = tmp_path / "set"
    d.mkdir()
    (d / src.name).write_bytes(src.read_bytes())
    (d / src.with_suffix(".jpg").name).write_bytes(src.with_suffix(".jpg").read_bytes())
    (d / "zzz_bad.pts").write_text("version: 1\nn_points: 68\n{\n1 2\n}\n")
    from train.data import DataError, SkipReport

    with pytest.raises(DataError, match="zzz_bad.pts"):
        list(iter_ibug([d]))
    report = SkipReport([])
    samples = list(iter_ibug([d], skip_bad=True, report=report))
    assert len(samples) == 1 and samples[0].image.ndim == 2
    assert len(report.skipped) == 1 and "zzz_bad.pts" in report.skipped[0][0]
