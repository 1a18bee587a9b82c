"""Augmentation invariants: points move with the pixels."""
import cv2
import numpy as np
import pytest

from fkp_live import schemas
from train.augment import NO_AUGMENT, AugmentConfig, flip_points, make_example

GEOMETRIC = AugmentConfig(rotate_deg=30, scale=(0.8, 1.25), shift=0.1, flip=0.5, brightness=0,
                          contrast=0, colour=0, blur=0, equalise=0, noise=0, occlude=0)


def _face_points(rng, n=68):
    pts = rng.uniform(100, 220, (n, 2)).astype(np.float32)
    pts[36:42] = [120, 140] + rng.normal(0, 2, (6, 2))
    pts[42:48] = [200, 140] + rng.normal(0, 2, (6, 2))
    return pts


def test_flip_twice_is_identity():
    rng = np.random.default_rng(0)
    for schema in (schemas.IBUG68, schemas.IMM58, schemas.KAGGLE15, schemas.FIVE):
        pts = rng.uniform(0, 100, (schema.n, 2)).astype(np.float32)
        mask = rng.random(schema.n) > 0.3
        p1, m1 = flip_points(pts, mask, schema, 128)
        p2, m2 = flip_points(p1, m1, schema, 128)
        np.testing.assert_allclose(p2, pts, atol=1e-4)
        assert (m2 == mask).all()


def test_flip_swaps_eyes_and_stays_left_to_right():
    pts = np.zeros((68, 2), np.float32)
    pts[36] = [30, 50]
    pts[45] = [90, 50]
    p, _ = flip_points(pts, np.ones(68, bool), schemas.IBUG68, 128)
    assert p[36, 0] < p[45, 0], "after a flip the image-left outer corner is still slot 36"
    assert p[36, 0] == 127 - 90


@pytest.mark.parametrize("mode", ["crop", "full"])
def test_dot_lands_where_the_point_says(mode):
    """Draw one dot at one point; after any augmentation the dot is where that point went."""
    rng = np.random.default_rng(1)
    schema = schemas.IBUG68
    checked = 0
    for trial in range(12):
        pts = _face_points(rng)
        k = int(rng.integers(0, 68))
        img = np.zeros((320, 320), np.uint8)
        cv2.circle(img, (int(round(pts[k, 0])), int(round(pts[k, 1]))), 3, 255, -1)
        pts[k] = np.round(pts[k])
        ex = make_example(img, pts, np.ones(68, bool), schema, (128, 128), rng, GEOMETRIC, mode=mode)
        flipped = np.linalg.det(ex.matrix[:2, :2]) < 0
        slot = schema.mirror[k] if flipped else k
        ys, xs = np.nonzero(ex.image > 100)
        if len(xs) == 0:  # the dot fell outside the crop, and so must its point
            x, y = ex.points[slot] * 128
            assert not (0 <= x < 128 and 0 <= y < 128), (trial, x, y)
            continue
        dot = np.array([xs.mean(), ys.mean()])
        np.testing.assert_allclose(ex.points[slot] * 128, dot, atol=0.75)
        checked += 1
    assert checked >= 9, f"only {checked} of 12 dots stayed inside the crop: the test checks too little"


def test_masked_points_stay_masked():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 255, (300, 300), dtype=np.uint8)
    pts = _face_points(rng)
    mask = np.ones(68, bool)
    mask[[3, 10, 50]] = False
    pts[~mask] = np.nan
    for _ in range(20):
        ex = make_example(img, pts, mask, schemas.IBUG68, (128, 128), rng, AugmentConfig())
        flipped = np.linalg.det(ex.matrix[:2, :2]) < 0
        expect = mask[schemas.IBUG68.mirror_array()] if flipped else mask
        assert (ex.mask == expect).all()
        assert np.isfinite(ex.points).all()
        assert (ex.points[~ex.mask] == 0).all()


def test_negative_crops_hold_no_labels():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (300, 300), dtype=np.uint8)
    pts = _face_points(rng)
    cfg = AugmentConfig(negative=1.0)
    ex = make_example(img, pts, np.ones(68, bool), schemas.IBUG68, (128, 128), rng, cfg)
    assert ex.present == 0.0 and not ex.mask.any()


def test_no_augment_is_the_runtime_crop():
    from fkp_live.crop import crop_from_points

    rng = np.random.default_rng(4)
    img = rng.integers(0, 255, (300, 300), dtype=np.uint8)
    pts = _face_points(rng)
    ex = make_example(img, pts, np.ones(68, bool), schemas.IBUG68, (128, 128), rng, NO_AUGMENT, crop_scale=1.3)
    crop = crop_from_points(pts, schemas.IBUG68, 1.3)
    np.testing.assert_allclose(ex.points, crop.from_frame(pts), atol=1e-5)
    from fkp_live.crop import warp
    np.testing.assert_array_equal(ex.image, warp(img, crop, 128))


def test_photometric_keeps_dtype_and_shape():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    cfg = AugmentConfig(blur=1.0, equalise=1.0, noise=1.0, occlude=1.0)
    ex = make_example(img, _face_points(rng), np.ones(68, bool), schemas.IBUG68, (96, 96), rng, cfg)
    assert ex.image.shape == (96, 96, 3) and ex.image.dtype == np.uint8


def test_flip_shift_keeps_the_labels_left_right_convention():
    """With flip_shift b, a flipped sample's points sit 2b x IOD to the right of the plain mirror,
    an unflipped one's are untouched, and the random draws (so every other choice) do not change."""
    from dataclasses import replace

    schema = schemas.IBUG68
    pts = _face_points(np.random.default_rng(3))
    img = np.zeros((320, 320), np.uint8)
    for flip in (0.0, 1.0):
        plain_cfg = replace(GEOMETRIC, flip=flip)
        shifted_cfg = replace(plain_cfg, flip_shift=0.01)
        a = make_example(img, pts, np.ones(68, bool), schema, (128, 128), np.random.default_rng(5), plain_cfg)
        b = make_example(img, pts, np.ones(68, bool), schema, (128, 128), np.random.default_rng(5), shifted_cfg)
        np.testing.assert_array_equal(a.matrix, b.matrix)
        e = schema.ocular_points(a.points * 128)
        iod = float(np.hypot(*(e[1] - e[0])))
        dx = (b.points - a.points)[:, 0] * 128
        want = 2 * 0.01 * iod if flip else 0.0
        np.testing.assert_allclose(dx, want, atol=1e-4)
        np.testing.assert_allclose(b.points[:, 1], a.points[:, 1])


def test_a_crop_from_other_points_keeps_the_true_labels():
    """make_example(crop_pts=...): the crop is the convention's crop of those points (the net's own
    reading, for self_crop), the labels are still the true points, in that crop."""
    from fkp_live.crop import crop_from_points, warp

    rng = np.random.default_rng(5)
    img = rng.integers(0, 255, (300, 300), dtype=np.uint8)
    pts = _face_points(rng)
    read = pts + rng.normal(0, 3, pts.shape).astype(np.float32)
    ex = make_example(img, pts, np.ones(68, bool), schemas.IBUG68, (128, 128), rng, NO_AUGMENT,
                      crop_scale=1.3, crop_pts=read)
    crop = crop_from_points(read, schemas.IBUG68, 1.3)
    assert crop != crop_from_points(pts, schemas.IBUG68, 1.3)
    np.testing.assert_array_equal(ex.image, warp(img, crop, 128))
    np.testing.assert_allclose(ex.points, crop.from_frame(pts), atol=1e-5)


def test_self_crop_draws_from_the_net_s_points_as_often_as_asked():
    """KeypointDataset with augment.self_crop p cuts about p of its crops from `crop_points`; with
    p = 0 the examples are those of a dataset without it, whatever crop_points holds."""
    from dataclasses import replace

    from train.data import Sample
    from train.datasets import KeypointDataset
    from train.tasks import get

    rng = np.random.default_rng(6)
    samples = [Sample(rng.integers(0, 255, (300, 300), dtype=np.uint8), _face_points(rng), np.ones(68, bool),
                      f"s{i}") for i in range(40)]
    task = get("ibug68").with_(size=(64, 64))
    own = np.stack([s.points + 6 for s in samples]).astype(np.float32)  # a reading 6 px off
    plain = KeypointDataset(samples, task, NO_AUGMENT)
    off = KeypointDataset(samples, task, NO_AUGMENT)
    off.crop_points = own
    for i in range(5):
        np.testing.assert_array_equal(off.example(i).image, plain.example(i).image)
    for p, lo, hi in ((1.0, 40, 40), (0.5, 10, 30)):
        ds = KeypointDataset(samples, task, replace(NO_AUGMENT, self_crop=p))
        ds.crop_points = own
        moved = sum(not np.array_equal(ds.example(i).matrix, plain.example(i).matrix) for i in range(40))
        assert lo <= moved <= hi, (p, moved)
