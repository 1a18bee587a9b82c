"""A video's frames stay in the decoder's I420 from decoder to encoder when every output takes it:
the overlay draws on the planes, the MP4 encoder takes them as they are, and neither picture
differs from the BGR round trip beyond chroma's half resolution."""
from __future__ import annotations

from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest

from fkp_live.engine import run
from fkp_live.io.mp4 import Mp4Sink
from fkp_live.io.text import CsvSink
from fkp_live.io.sources import VideoSource
from fkp_live.render.draw import LAYERS, Overlay, _Bgr, _I420, draw, draw_i420, yuv_of
from fkp_live.schemas import IBUG68
from runtime_helpers import demo_frames, write_video


def _textured(h: int, w: int) -> np.ndarray:
    """A BGR picture with smooth colour gradients (so chroma is not flat) and some texture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([80 + 60 * np.sin(xx / 17), 120 + 50 * np.cos(yy / 23), 140 + 40 * np.sin((xx + yy) / 31)], -1)
    img += np.random.default_rng(0).normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _bgr_round_trip(bgr: np.ndarray) -> np.ndarray:
    """What the BGR path shows after encoding: BGR -> I420 -> BGR."""
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), cv2.COLOR_YUV2BGR_I420)


def _compare(h: int, w: int, paint_both) -> tuple[float, float, float]:
    """Draw with `paint_both(painter)` on a picture's I420 planes and on its BGR conversion; returns
    (IoU of the pixels each changed, mean |difference| over those pixels, the same off them)."""
    i420 = cv2.cvtColor(_textured(h, w), cv2.COLOR_BGR2YUV_I420)
    base = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
    bgr = base.copy()
    paint_both(_Bgr(bgr))
    want = _bgr_round_trip(bgr)
    drawn = i420.copy()
    paint_both(_I420(drawn, h, w))
    got = cv2.cvtColor(drawn, cv2.COLOR_YUV2BGR_I420)
    ref = _bgr_round_trip(base)

    def changed(img):
        return np.abs(img.astype(int) - ref.astype(int)).max(axis=2) > 40

    a, b = changed(want), changed(got)
    iou = (a & b).sum() / max((a | b).sum(), 1)
    d = np.abs(got.astype(int) - want.astype(int)).mean(axis=2)
    on = a | b
    return float(iou), float(d[on].mean()), float(d[~on].mean())


@pytest.mark.parametrize("h,w", [(126, 160), (720, 1280)])  # 126: the chroma planes end mid-row
@pytest.mark.parametrize("call", ["polylines", "dots", "rectangle", "line", "text"])
def test_each_drawing_call_on_i420_matches_the_bgr_one(h, w, call):
    th = max(1, round(max(h, w) / 640))
    pts = np.stack([np.linspace(0.2 * w, 0.8 * w, 12), h / 2 + 0.3 * h * np.sin(np.arange(12))], 1).astype(np.int32)
    col = (60, 180, 255)
    calls = {
        "polylines": lambda p: p.polylines([pts], col, th),
        "dots": lambda p: p.dots(pts, th, (255, 255, 255)),
        "rectangle": lambda p: p.rectangle((w // 5, h // 5), (4 * w // 5, 4 * h // 5), col, th),
        "line": lambda p: p.line((w // 7, h // 6), (6 * w // 7, 5 * h // 6), (0, 0, 255), th + 1),
        "text": lambda p: p.text("42 fps", (8 * th, 22 * th), 0.6 * th, col, th),
    }
    iou, on, off = _compare(h, w, calls[call])
    # the same strokes in the same places; their colours differ where chroma, at half resolution,
    # is drawn two pixels wide around a one-pixel stroke
    assert iou > 0.6, (call, iou)
    assert on < 45, (call, on)
    assert off < 1.0, (call, off)  # elsewhere only the BGR path's rounding


def test_the_whole_overlay_on_i420_matches_the_bgr_one():
    h, w = 360, 480
    i420 = cv2.cvtColor(_textured(h, w), cv2.COLOR_BGR2YUV_I420)
    pts = np.stack([np.linspace(150, 330, 68), 180 + 90 * np.sin(np.linspace(0, 6, 68))], 1)
    faces = [SimpleNamespace(id=3, points=pts, box=(150.0, 90.0, 330.0, 270.0), analysis=None)]
    layers = frozenset(set(LAYERS) - {"pose"})
    bgr = draw(cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420), faces, IBUG68, layers, fps=30.0)
    got = cv2.cvtColor(draw_i420(i420.copy(), faces, IBUG68, layers, fps=30.0), cv2.COLOR_YUV2BGR_I420)
    d = np.abs(got.astype(int) - _bgr_round_trip(bgr).astype(int))
    assert d.mean() < 2.0
    assert (d.max(axis=2) > 60).mean() < 0.01


def test_colours_convert_as_opencv_and_ffmpeg_do():
    from av.video.reformatter import Colorspace

    for col in ((255, 255, 255), (0, 0, 0), (60, 180, 255), (0, 200, 0), (255, 80, 0)):
        y, u, v = yuv_of(col)
        planes = np.array([[y, y], [y, y], [u, v]], np.uint8)  # a 2x2 I420 picture
        back = cv2.cvtColor(planes, cv2.COLOR_YUV2BGR_I420)
        assert np.abs(back.astype(int) - np.array(col)).max() <= 3, col
        # BT.709, against FFmpeg's own conversion
        y, u, v = yuv_of(col, "bt709")
        f = av.VideoFrame.from_ndarray(np.full((2, 2, 3), col, np.uint8), format="bgr24")
        want = f.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709).to_ndarray().ravel()
        assert np.abs(np.array([y, u, v]) - want[[0, 4, 5]].astype(int)).max() <= 2, col
    with pytest.raises(ValueError, match="bt601"):
        yuv_of((1, 2, 3), "bt2020")


def test_mp4_encodes_a_frames_i420_as_it_is(tmp_path):
    """A lazy video frame's planes go to the encoder unconverted and come back as the source."""
    path = write_video(tmp_path / "v.mp4", demo_frames(6)[0])
    with VideoSource(path) as src:
        src.lazy_bgr = True
        frames = list(src)
    assert all(f.picture_i420 is not None for f in frames)
    out = tmp_path / "o.mp4"
    with Mp4Sink(out, fps=30) as sink:
        for f in frames:
            sink.write(f, [])
    assert not any(f.converted for f in frames)  # nothing made a BGR picture
    with av.open(str(out)) as c:
        got = [f.to_ndarray() for f in c.decode(video=0)]
    assert len(got) == 6
    for f, g in zip(frames, got):
        assert g.shape == f.i420.shape
        assert np.abs(g.astype(int) - f.i420.astype(int)).mean() < 1.5
    # once a frame's BGR picture exists it is the picture: the planes are not offered then
    frames[0].image
    assert frames[0].picture_i420 is None and frames[1].picture_i420 is not None


class _Recording(Mp4Sink):
    """An MP4 sink that notes, per frame, whether the frame reached it still in I420."""

    def __init__(self, *a, yuv: bool = True, **k):
        super().__init__(*a, **k)
        self.yuv = yuv
        self.in_i420: list[bool] = []

    def write(self, frame, faces=()):
        self.in_i420.append(frame.picture_i420 is not None)
        if not self.yuv:
            frame.image  # what a sink that needs BGR does
        super().write(frame, faces)


def test_a_run_keeps_the_video_in_i420_and_draws_the_same_picture(tmp_path, model_path):
    from fkp_live.track.tracker import Tracker

    path = write_video(tmp_path / "v.mp4", demo_frames(20)[0])
    outs = {}
    for yuv in (True, False):
        with VideoSource(path) as src, Tracker(model=model_path, device="cpu") as tr, \
                _Recording(tmp_path / f"{yuv}.mp4", fps=30, yuv=yuv) as mp4, \
                CsvSink(tmp_path / f"{yuv}.csv", 68) as csv:
            res = run(src, tr, [mp4, csv], overlay=Overlay(tr.schema, copy=False))
            assert src.lazy_bgr is yuv
        assert res.frames == 20 and res.frames_with_face == 20
        # only frames the detector ran on were converted (it reads BGR); the rest stayed I420
        assert sum(mp4.in_i420) >= (15 if yuv else 0) and (yuv or not any(mp4.in_i420))
        with av.open(str(tmp_path / f"{yuv}.mp4")) as c:
            outs[yuv] = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert (tmp_path / "True.csv").read_text() == (tmp_path / "False.csv").read_text()
    with VideoSource(path) as src:
        plain = [f.image for f in src]
    for a, b, p in zip(outs[True], outs[False], plain):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0
        # and the overlay is there in both
        assert (np.abs(a.astype(int) - p.astype(int)).max(axis=2) > 60).sum() > 100


def test_outputs_that_need_bgr_keep_the_source_converting(tmp_path, model_path):
    from fkp_live.track.tracker import Tracker

    path = write_video(tmp_path / "v.mp4", demo_frames(3)[0])
    cases = (
        (dict(yuv=False), Overlay(IBUG68, copy=False), False),  # a window, say
        (dict(), Overlay(IBUG68, copy=True), False),  # another output reads the undrawn picture
        (dict(), lambda frame, faces: frame, False),  # an overlay that does not draw on I420
        (dict(), None, True),
    )
    for kw, overlay, lazy in cases:
        with VideoSource(path) as src, Tracker(model=model_path, device="cpu") as tr, \
                _Recording(tmp_path / "o.mp4", fps=30, **kw) as mp4:
            run(src, tr, [mp4], overlay=overlay)
            assert src.lazy_bgr is lazy


def test_bt709_video_stays_bt709_and_keeps_its_colours(tmp_path, model_path):
    """HD video is mostly tagged BT.709: its planes pass through too, the MP4 is tagged BT.709 as
    the source was, and frames that were converted (the detector's) are encoded back by BT.709,
    so every frame keeps the source's colours and the overlay's colours are right."""
    from fkp_live.track.tracker import Tracker

    frames = demo_frames(12)[0]
    path = write_video(tmp_path / "v709.mp4", frames, bt709=True)
    with VideoSource(path) as src:
        src.lazy_bgr = True
        first = next(iter(src))
    assert first.yuv_matrix == "bt709" and first.picture_i420 is not None
    with av.open(str(path)) as c:
        swscale = next(c.decode(video=0)).to_ndarray(format="bgr24")
    np.testing.assert_array_equal(first.image, swscale)  # BGR by the frame's own matrix
    out = tmp_path / "o.mp4"
    with VideoSource(path) as src, Tracker(model=model_path, device="cpu") as tr, \
            _Recording(out, fps=30) as mp4:
        run(src, tr, [mp4], overlay=Overlay(tr.schema, ("box",), copy=False))
    assert mp4.in_i420.count(False) >= 1 and mp4.in_i420.count(True) >= 8  # both kinds were encoded
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (1, 1, 1, 1)
        got = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    with VideoSource(path) as src:
        plain = [f.image for f in src]
    for k, (g, p) in enumerate(zip(got, plain)):
        d = np.abs(g.astype(int) - p.astype(int)).max(axis=2)
        assert np.median(d) <= 2, k  # off the overlay, the source's colours (converted or not)
    # a run whose frames come converted (a window beside the MP4) encodes by BT.601, untagged, as
    # it always did: OpenCV's BT.601 conversion is the fast one, and nothing passes through
    with VideoSource(path) as src, Tracker(model=model_path, device="cpu") as tr, \
            _Recording(tmp_path / "eager.mp4", fps=30, yuv=False) as mp4:
        run(src, tr, [mp4], overlay=Overlay(tr.schema, ("box",), copy=False))
    assert not any(mp4.in_i420) and mp4._matrix == "bt601"
    with av.open(str(tmp_path / "eager.mp4")) as c:
        assert c.streams.video[0].codec_context.colorspace == 2  # unspecified
    # the box is there, in face 0's green
    g, p = got[5].astype(int), plain[5].astype(int)
    drawn = np.abs(g - p).max(axis=2) > 60
    assert drawn.sum() > 50
    b_, g_, r_ = np.median(g[drawn], axis=0)
    assert g_ > b_ + 60 and g_ > r_ + 60


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
def test_a_stroke_reads_back_in_its_colour_by_the_pictures_matrix(matrix):
    """A thick stroke on a grey picture, read back by FFmpeg with the picture's matrix, is the
    stroke's colour; read by the other matrix it is not (so the matrix is not a detail)."""
    from av.video.reformatter import Colorspace

    h, w = 120, 160
    i420 = np.full((h * 3 // 2, w), 128, np.uint8)
    i420[:h] = 120
    col = (80, 220, 80)
    _I420(i420, h, w, matrix).line((20, 60), (140, 60), col, 12)
    f = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    read = {m: f.reformat(format="bgr24", src_colorspace=cs).to_ndarray()[60, 80].astype(int)
            for m, cs in (("bt601", Colorspace.ITU601), ("bt709", Colorspace.ITU709))}
    assert np.abs(read[matrix] - col).max() <= 3, read
    other = "bt709" if matrix == "bt601" else "bt601"
    assert np.abs(read[other] - col).max() > 8, read
