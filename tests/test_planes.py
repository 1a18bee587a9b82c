"""I420 copies between PyAV frames and numpy (fkp_live.io.planes), and the crop's row prefetch and
back-projection (fkp_live.crop): each gives exactly what the slower way it replaces gives."""
from __future__ import annotations

import math

import av
import cv2
import numpy as np
import pytest

from fkp_live.crop import Crop, prefetch, rows_spanned, warp
from fkp_live.io.planes import i420_of, packed_planes, video_frame_of
from runtime_helpers import write_video


def _decoded(tmp_path, w: int, h: int, n: int = 3) -> list:
    """Frames of an H.264 clip of noise at w x h, decoded back by PyAV (real decoder buffers, whose
    lines are padded where the width is not a multiple of the decoder's alignment)."""
    rng = np.random.default_rng(w * h)
    path = write_video(tmp_path / f"noise_{w}x{h}.mp4", [rng.integers(0, 256, (h, w, 3), np.uint8) for _ in range(n)])
    with av.open(str(path)) as c:
        return [f for f in c.decode(video=0)]


@pytest.mark.parametrize("w,h", [(512, 512), (500, 302), (98, 66), (1280, 720)])
def test_i420_of_matches_pyav(tmp_path, w, h):
    frames = _decoded(tmp_path, w, h)
    assert frames
    for f in frames:
        mine = i420_of(f)
        assert mine.shape == (h * 3 // 2, w) and mine.flags.c_contiguous
        np.testing.assert_array_equal(mine, f.to_ndarray())


@pytest.mark.parametrize("w,h", [(512, 512), (500, 302), (98, 66)])
def test_video_frame_of_round_trips(w, h):
    a = np.random.default_rng(1).integers(0, 256, (h * 3 // 2, w), np.uint8)
    f = video_frame_of(a)
    assert (f.width, f.height, f.format.name) == (w, h, "yuv420p")
    np.testing.assert_array_equal(f.to_ndarray(), a)
    np.testing.assert_array_equal(f.to_ndarray(), av.VideoFrame.from_ndarray(a, format="yuv420p").to_ndarray())
    # a strided view (not C-contiguous) is copied as the picture it shows
    wide = np.zeros((h * 3 // 2, w + 10), np.uint8)
    wide[:, :w] = a
    np.testing.assert_array_equal(video_frame_of(wide[:, :w]).to_ndarray(), a)


def test_packed_planes_are_views_in_opencvs_layout():
    h, w = 302, 500  # chroma has an odd number of rows: U and V do not start on a row of the array
    bgr = np.random.default_rng(2).integers(0, 256, (h, w, 3), np.uint8)
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    y, u, v = packed_planes(i420, h, w)
    assert y.shape == (h, w) and u.shape == v.shape == (h // 2, w // 2)
    for p in (y, u, v):
        assert np.shares_memory(p, i420)
    u[:] = 128
    v[:] = 128  # no colour: the picture OpenCV converts back is grey, its grey level Y's
    back = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    assert np.abs(back.astype(int)[..., 0] - back[..., 2]).max() <= 1


def test_rows_spanned_covers_every_row_the_warp_reads():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (400, 600), np.uint8)
    for crop in (Crop(300, 200, 180, 0.0), Crop(100, 60, 250, 0.7), Crop(550, 390, 90, -1.2),
                 Crop(300, 200, 20, math.pi / 4)):
        spans = rows_spanned([crop], img.shape[0])
        assert len(spans) == 1 and 0 <= spans[0][0] < spans[0][1] <= img.shape[0]
        noisy = rng.integers(0, 256, img.shape, np.uint8)  # different pixels off the spanned rows
        y0, y1 = spans[0]
        noisy[y0:y1] = img[y0:y1]
        np.testing.assert_array_equal(warp(img, crop, 128), warp(noisy, crop, 128))
        # and the span is not the whole picture when the crop is small
        if crop.side <= 100:
            assert y1 - y0 < img.shape[0] // 2


def test_rows_spanned_merges_and_clips():
    crops = [Crop(50, 50, 40, 0), Crop(50, 70, 40, 0), Crop(50, 300, 40, 0), Crop(50, -500, 40, 0)]
    spans = rows_spanned(crops, 320)
    assert spans == sorted(spans)
    assert len(spans) == 2  # the first two overlap; the last is off the picture
    assert spans[0][0] <= 30 - 2 and spans[0][1] >= 90 + 2
    assert spans[1][1] == 320


def test_prefetch_leaves_picture_and_crop_unchanged():
    img = np.random.default_rng(4).integers(0, 256, (300, 300, 3), np.uint8)
    before = img.copy()
    crops = [Crop(150, 150, 120, 0.3), Crop(40, 250, 80, 0)]
    want = [warp(img, c, 64) for c in crops]
    prefetch(img, crops)
    prefetch(img[:, :, 0], [])  # no crops: nothing to read
    np.testing.assert_array_equal(img, before)
    for c, w in zip(crops, want):
        np.testing.assert_array_equal(warp(img, c, 64), w)


@pytest.mark.parametrize("angle", [0.0, 0.3, -1.1, 2.5])
def test_to_frame_is_the_inverse_matrix(angle):
    crop = Crop(210.5, 133.25, 151.0, angle)
    uv = np.random.default_rng(5).random((68, 2)).astype(np.float32)
    for size in (1, 128):
        m = crop.inverse(size)
        want = (uv.astype(np.float64) * size) @ m[:, :2].T + m[:, 2]
        np.testing.assert_allclose(crop.to_frame(uv), want, atol=1e-4)
    assert crop.to_frame(uv).dtype == np.float32
    np.testing.assert_allclose(crop.from_frame(crop.to_frame(uv)), uv, atol=1e-5)
