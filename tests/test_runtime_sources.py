"""Frame sources: timestamps, image folders, the demo, odd pixel formats, and their errors."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from fkp_live.frame import to_bgr
from fkp_live.io.sources import CameraSource, DemoSource, ImageFolderSource, SourceError, VideoSource
from conftest import VIDEOS, needs_data
from runtime_helpers import write_video


def test_video_timestamps_come_from_the_stream(tmp_path):
    # a variable-frame-rate file: a frame counter would get every timestamp after the gap wrong
    pts = [0.0, 1 / 30, 2 / 30, 0.5, 0.5 + 1 / 30, 1.0]
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(len(pts))]
    path = write_video(tmp_path / "vfr.mp4", frames, fps=30, pts=pts)
    with VideoSource(path) as src:
        got = list(src)
        assert src.size == (64, 48) and src.path == path and src.fps
    assert [f.index for f in got] == list(range(len(pts)))
    np.testing.assert_allclose([f.pts_seconds for f in got], pts, atol=1e-4)
    # every frame, in order: the grey levels rise
    levels = [int(f.image.mean()) for f in got]
    assert levels == sorted(levels) and all(f.image.dtype == np.uint8 and f.image.shape == (48, 64, 3) for f in got)


@needs_data
def test_real_video_timestamps_match_pyav():
    import av

    path = VIDEOS / "d3.mp4"
    with av.open(str(path)) as c:
        want = [float(f.time) for _, f in zip(range(40), c.decode(video=0))]
    with VideoSource(path) as src:
        assert src.size == (512, 512) and round(src.fps) == 30 and src.has_audio
        assert abs(src.length - 354) <= 2
        got = [f.pts_seconds for _, f in zip(range(40), src)]
    np.testing.assert_allclose(np.array(got), np.array(want) - want[0], atol=1e-6)


def test_video_errors_name_the_file_and_say_what_to_do(tmp_path):
    with pytest.raises(SourceError, match=r"nope\.mp4 does not exist"):
        VideoSource(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.mp4 is empty"):
        VideoSource(tmp_path / "empty.mp4")
    (tmp_path / "notes.mp4").write_text("these are not the frames you are looking for\n" * 50)
    with pytest.raises(SourceError, match=r"notes\.mp4 is not a video.*re-encode"):
        VideoSource(tmp_path / "notes.mp4")
    with pytest.raises(SourceError, match="is a folder"):
        VideoSource(tmp_path)


def test_truncated_video_is_a_clear_error(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8) for i in range(20)]
    good = write_video(tmp_path / "good.mp4", frames)
    data = good.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: it is gone
    with pytest.raises(SourceError, match=r"cut\.mp4.*(truncated|not a video|no decodable)"):
        with VideoSource(cut) as src:
            list(src)


def test_image_folder_sorted_skips_unreadable_and_normalises(tmp_path, caplog):
    grey = np.full((30, 40), 200, np.uint8)
    bgra = np.zeros((30, 40, 4), np.uint8)
    bgra[..., 2] = 255
    bgra[..., 3] = 128
    odd = np.full((481, 641, 3), 7, np.uint8)
    deep = np.full((20, 20, 3), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "b_grey.png"), grey)
    cv2.imwrite(str(tmp_path / "a_bgra.png"), bgra)
    cv2.imwrite(str(tmp_path / "d_odd.jpg"), odd)
    cv2.imwrite(str(tmp_path / "e_deep.png"), deep)
    (tmp_path / "c_broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "readme.txt").write_text("not an image")
    src = ImageFolderSource(tmp_path)
    frames = list(src)
    assert [f.source for f in frames] == ["a_bgra.png", "b_grey.png", "d_odd.jpg", "e_deep.png"]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert all(f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames)
    assert frames[0].image[0, 0].tolist() == [0, 0, 255]
    assert frames[1].image[0, 0].tolist() == [200, 200, 200]
    assert frames[2].image.shape == (481, 641, 3)
    assert frames[3].image[0, 0].tolist() == [255, 255, 255]
    assert src.skipped and src.skipped[0][0] == "c_broken.jpg"
    assert "c_broken.jpg" in caplog.text


def test_image_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        ImageFolderSource(tmp_path / "missing")
    with pytest.raises(SourceError, match="holds no images"):
        ImageFolderSource(tmp_path)
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(SourceError, match="none of the 1 images"):
        list(ImageFolderSource(tmp_path))


@pytest.mark.parametrize("image", [
    np.zeros((5, 7), np.uint8), np.zeros((5, 7, 1), np.uint8), np.zeros((5, 7, 4), np.uint8),
    np.zeros((5, 7, 2), np.uint8), np.zeros((5, 7, 3), np.uint16), np.zeros((5, 7, 3), np.float32),
])
def test_to_bgr_any_layout(image):
    out = to_bgr(image)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_demo_is_deterministic_and_moves_as_told():
    a, b = DemoSource(frames=40), DemoSource(frames=40)
    fa, fb = list(a), list(b)
    assert len(fa) == 40 and fa[0].image.shape == (480, 640, 3)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(fa, fb))
    assert not np.array_equal(fa[0].image, fa[39].image)
    np.testing.assert_allclose([f.pts_seconds for f in fa[:3]], [0, 1 / 30, 2 / 30])
    # the known motion: the picture's centre goes where transform() says, and its pixels with it
    m = a.transform(39)
    portrait = a._portrait
    y, x = 300, 256
    cx, cy = m @ np.array([x, y, 1.0])
    np.testing.assert_allclose(fa[39].image[int(round(cy)), int(round(cx))].astype(int),
                               portrait[y, x].astype(int), atol=40)


def test_demo_two_faces_side_by_side():
    src = DemoSource(frames=2, faces=2)
    left, right = src.transform(0, 0), src.transform(0, 1)
    assert left[0, 2] < right[0, 2]


class FakeCapture:
    """A camera stand-in: `n` frames (their number in pixel 0), then it 'unplugs'."""

    def __init__(self, n=10_000, delay=0.0, opened=True):
        self.n, self.delay, self.i, self.opened = n, delay, 0, opened

    def isOpened(self):
        return self.opened

    def get(self, prop):
        return {cv2.CAP_PROP_FPS: 30.0, cv2.CAP_PROP_FRAME_WIDTH: 8, cv2.CAP_PROP_FRAME_HEIGHT: 6}.get(prop, 0)

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if self.i >= self.n:
            return False, None
        img = np.full((6, 8, 3), self.i % 256, np.uint8)
        self.i += 1
        return True, img

    def release(self):
        self.opened = False


def test_missing_camera_is_a_clear_error():
    with pytest.raises(SourceError, match=r"camera 57 could not be opened.*the demo") as e:
        CameraSource(57)
    assert e.value.hint == "camera" and "--" not in str(e.value)  # the CLI adds its options
    with pytest.raises(SourceError, match="camera 3 could not be opened"):
        CameraSource(3, capture=FakeCapture(opened=False))


def test_camera_that_disappears_mid_stream():
    src = CameraSource(0, capture=FakeCapture(n=5, delay=0.001), queue_size=64)
    got = []
    with pytest.raises(SourceError, match=r"camera 0 stopped delivering frames after 5 frames") as e:
        for f in src:
            got.append(f)
    src.close()
    assert e.value.exit_code == 1 and len(got) == 5


def test_slow_consumer_never_stalls_capture_and_gets_fresh_frames():
    cap = FakeCapture(delay=0.002)
    src = CameraSource(0, capture=cap, queue_size=2)
    seen = []
    for f in src:
        seen.append(int(f.image[0, 0, 0]))
        time.sleep(0.03)  # a slow frame downstream
        if len(seen) == 6:
            break
    src.close()
    assert src.dropped > 0  # old frames were dropped, capture kept going
    assert cap.i > 6 * 5  # capture ran well ahead of us while we were slow
    assert all(b > a for a, b in zip(seen, seen[1:]))  # in order, newest first taken
    assert not any(t.name == "camera-0" and t.is_alive() for t in threading.enumerate())


def test_video_cut_mid_stream_warns_with_promised_and_read_counts(tmp_path, caplog):
    frames = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8) for i in range(60)]
    data = write_video(tmp_path / "good.mp4", frames, faststart=True).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index is at the front: it opens, then ends early
    with caplog.at_level("WARNING", logger="fkp_live"), VideoSource(cut) as src:
        got = list(src)
    assert src.length == 60 and 0 < len(got) < 60 and src.frames_read == len(got)
    assert f"ended after {len(got)} of the 60 frames its header promises" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fkp_live"), VideoSource(tmp_path / "good.mp4") as src:
        assert len(list(src)) == 60
    assert "promises" not in caplog.text


@pytest.mark.parametrize("rotation, turned", [(-90, cv2.ROTATE_90_CLOCKWISE), (90, cv2.ROTATE_90_COUNTERCLOCKWISE),
                                              (180, cv2.ROTATE_180), (0, None)])
def test_display_rotation_is_applied_and_logged(tmp_path, caplog, rotation, turned):
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :16] = 255  # a white stripe on the left of the stored picture
    path = write_video(tmp_path / "phone.mp4", [img] * 3, faststart=True, rotation=rotation)
    with caplog.at_level("INFO", logger="fkp_live"), VideoSource(path) as src:
        got = [f.image for f in src]
    want = img if turned is None else cv2.rotate(img, turned)
    assert got[0].shape == want.shape and src.size == (want.shape[1], want.shape[0])
    assert np.abs(got[0].astype(int) - want).mean() < 8
    assert ("display rotation of" in caplog.text) == (turned is not None)


def test_video_frames_carry_their_luma_and_it_reads_as_the_grey_image(tmp_path):
    """A BT.601 4:2:0 video's frames carry the decoder's Y plane; mapped to full range it is
    OpenCV's grey of the BGR frame within a grey level (but where the BGR frame clips), and a grey model reads the same
    points from it (the tracker cuts grey crops from it)."""
    from fkp_live.frame import grey_from_luma
    from fkp_live.track.tracker import Tracker
    from runtime_helpers import demo_frames

    path = write_video(tmp_path / "v.mp4", demo_frames(6)[0])
    with VideoSource(path) as src:
        frames = list(src)
    f = frames[3]
    assert f.luma is not None and f.luma.shape == f.image.shape[:2]
    d = grey_from_luma(f.luma).astype(int) - cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY).astype(int)
    # equal but for rounding (one level) and the odd pixel where the BGR frame clips a saturated
    # colour at a chroma edge
    assert np.percentile(np.abs(d), 99) <= 1 and abs(d.mean()) < 1.0, (np.percentile(np.abs(d), [50, 99, 100]), d.mean())
    tr = Tracker(device="cpu", detector="blazeface", smooth=None)
    with_luma = tr.track(f, still=True).faces
    without = tr.track(type(f)(f.index, f.pts_seconds, f.image), still=True).faces
    assert len(with_luma) == len(without) == 1
    moved = np.linalg.norm(with_luma[0].raw - without[0].raw, axis=1).mean()
    # the yardstick: how far the (INT8) model's points move when the BGR frame gets a grey level
    # of random rounding noise; the Y plane must not move them further than such noise does
    rng = np.random.default_rng(0)
    noisy = np.clip(f.image.astype(int) + rng.integers(-1, 2, f.image.shape), 0, 255).astype(np.uint8)
    jittered = tr.track(type(f)(f.index, f.pts_seconds, noisy), still=True).faces
    noise = np.linalg.norm(jittered[0].raw - without[0].raw, axis=1).mean()
    iod = np.linalg.norm(without[0].raw[45] - without[0].raw[36])
    assert moved < 2 * noise + 0.001 * iod and moved / iod < 0.01, (moved / iod, noise / iod)
    # a picture from an image folder has none (nothing to gain: JPEGs decode to BGR)
    cv2.imwrite(str(tmp_path / "a.png"), f.image)
    assert next(iter(ImageFolderSource(tmp_path))).luma is None


def test_lazy_frames_make_the_same_picture_only_when_asked(tmp_path):
    """With lazy_bgr a video's frames carry the Y plane and convert on first use of `image`, to
    exactly the picture an eager source gives; the run engine turns it on only when no output
    reads pixels."""
    from fkp_live.engine import run
    from fkp_live.io.crops import CropSink
    from fkp_live.io.text import CsvSink
    from fkp_live.schemas import IBUG68
    from fkp_live.track.tracker import Tracker
    from runtime_helpers import demo_frames

    path = write_video(tmp_path / "v.mp4", demo_frames(5)[0])
    with VideoSource(path) as src:
        eager = [f.image for f in src]
    with VideoSource(path) as src:
        src.lazy_bgr = True
        lazy = list(src)
    assert all(not f.converted and f.luma is not None for f in lazy)
    assert lazy[2].shape == eager[2].shape[:2] and not lazy[2].converted
    for f, img in zip(lazy, eager):
        np.testing.assert_array_equal(f.image, img)
        assert f.converted
    tr = Tracker(device="cpu", detector="blazeface")
    for sinks, want in (([CsvSink(tmp_path / "a.csv", 68)], True),
                        ([CsvSink(tmp_path / "b.csv", 68), CropSink(tmp_path / "crops", IBUG68)], False)):
        with VideoSource(path) as src:
            run(src, tr, sinks)
            assert src.lazy_bgr is want
        for s in sinks:
            s.close()


def test_the_csv_does_not_depend_on_the_other_outputs(tmp_path):
    """A CSV-only run (lazy pictures, grey crops from the Y plane) and a run that also writes the
    MP4 (every frame converted) give the same rows."""
    from fkp_live.commands.run import run as cli
    from click.testing import CliRunner
    from runtime_helpers import demo_frames

    path = write_video(tmp_path / "v.mp4", demo_frames(20)[0])
    for args in (["--csv", tmp_path / "a.csv"], ["--csv", tmp_path / "b.csv", "-o", tmp_path / "b.mp4"]):
        r = CliRunner().invoke(cli, [str(a) for a in ["--video", path, "--no-display", *args]])
        assert r.exit_code == 0, r.output
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_the_decoder_gets_one_thread_up_to_720p_and_its_own_choice_above(tmp_path):
    """Up to 1280x720 the read-ahead thread is the decoder's only thread (beside the model's one
    thread, two cores are full); larger frames keep FFmpeg's frame threads. Both decode alike."""
    for (w, h), one in (((1280, 720), True), ((1920, 1080), False)):
        img = np.zeros((h, w, 3), np.uint8)
        img[h // 4:h // 2, w // 4:w // 2] = 200
        path = write_video(tmp_path / f"{w}.mp4", [img] * 3)
        with VideoSource(path) as src:
            assert (src._stream.codec_context.thread_count == 1) == one
            got = [f.image for f in src]
        assert len(got) == 3 and abs(float(got[-1][h // 3, w // 3].mean()) - 200) < 8


def test_a_colour_model_s_crops_normalise_exactly_per_channel(tmp_path):
    """A 3-channel card with its own mean and std per channel: the per-channel table gives exactly
    (x / 255 - mean) / std, channels first."""
    import fake_model
    from fkp_live.track.landmarker import Landmarker

    mean, std = [0.2, 0.5, 0.7], [0.25, 0.5, 0.125]
    lm = Landmarker(str(fake_model.build(tmp_path, "fake3", channels=3,
                                          card_kwargs={"mean": mean, "std": std})), "cpu", 1)
    u8 = np.random.default_rng(4).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    m = np.float64(mean).reshape(1, 3, 1, 1)
    sd = np.float64(std).reshape(1, 3, 1, 1)
    want = (u8.transpose(0, 3, 1, 2).astype(np.float32) * (1.0 / (255.0 * sd)).astype(np.float32)
            + (-m / sd).astype(np.float32))
    got = lm.normalise(u8)
    assert got.shape == (2, 3, 16, 16) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def test_crops_from_the_luma_grey_and_bgr_pictures_normalise_exactly(any_model):
    """The table look-ups that turn crops into the model's input give exactly (x / 255 - mean) /
    std, the luma table exactly grey_from_luma then that: for a grey model, the input cut from the
    Y plane is the Y plane's crops made grey, and a bare BGR frame's is `prepare`'s."""
    from fkp_live.crop import Crop, warp
    from fkp_live.frame import Frame, grey_from_luma
    from fkp_live.track.landmarker import Landmarker

    lm = Landmarker(any_model, "cpu", 1)
    rng = np.random.default_rng(3)
    mean = np.asarray(lm.card.mean, np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(lm.card.std, np.float64).reshape(1, -1, 1, 1)
    for ch in (1, 3):
        u8 = rng.integers(0, 256, (3, 20, 20, ch), dtype=np.uint8)
        want = (u8.transpose(0, 3, 1, 2).astype(np.float32) * (1.0 / (255.0 * std)).astype(np.float32)
                + (-mean / std).astype(np.float32)) if ch == lm.card.channels else None
        got = lm.normalise(u8)
        assert got.shape == (3, ch, 20, 20) and got.dtype == np.float32 and got.flags.c_contiguous
        if want is not None:
            np.testing.assert_array_equal(got, want)
    if lm.card.channels != 1:
        return
    bgr = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    luma = rng.integers(16, 236, (240, 320), dtype=np.uint8)
    crops = [Crop(150, 120, 90, 0.1), Crop(40, 30, 120, -0.3)]  # the second runs off the picture
    s = lm.size
    from_luma = lm.prepare_frame(Frame(0, 0.0, bgr, luma=luma), crops)
    want = lm.normalise(np.stack([grey_from_luma(warp(luma, c, s)) for c in crops])[..., None])
    np.testing.assert_array_equal(from_luma, want)
    # (the grey picture's crops against the BGR picture's: test_engine, within a grey level)
    np.testing.assert_array_equal(lm.prepare_frame(Frame(0, 0.0, bgr), crops), lm.prepare(bgr, crops))
