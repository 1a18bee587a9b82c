"""The run engine: the loop, its read-ahead and writer threads, and what it reports."""
from __future__ import annotations

import numpy as np
import pytest

from fkp_live.engine import StopFlag, run
from fkp_live.frame import Frame
from fkp_live.track.tracker import Tracked


class _Source:
    """Frames 0..n-1 (their index painted into the pixels); optionally fails at frame `fail_at`."""

    prefetch = True
    still = False

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at

    def __iter__(self):
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError(f"decoding failed at frame {i}")
            yield Frame(i, i / 30, np.full((8, 8, 3), i % 256, np.uint8))


class _Tracker:
    """One fake face per frame whose id is the frame index (the engine's contract, no model)."""

    def track(self, frame, still=False):
        return Tracked([_Face(frame.index)], [], {"detect": 0.0, "infer": 0.001})


class _Face:
    def __init__(self, i):
        self.id = i


class _Sink:
    picture = False
    threaded = False

    def __init__(self, fail_at=None):
        self.seen, self.fail_at = [], fail_at

    def write(self, frame, faces):
        if frame.index == self.fail_at:
            raise OSError("disk full")
        assert int(frame.image[0, 0, 0]) == frame.index % 256  # the pixels belong to this frame
        self.seen.append((frame.index, faces[0].id))


class _ThreadedPictureSink(_Sink):
    picture = True
    threaded = True


@pytest.mark.parametrize("threads", [True, False])
def test_every_frame_reaches_every_sink_in_order(threads):
    data, pic = _Sink(), _ThreadedPictureSink()
    drawn = []

    def overlay(frame, faces):
        drawn.append(frame.index)
        return Frame(frame.index, frame.pts_seconds, frame.image.copy())

    res = run(_Source(200), _Tracker(), [data, pic], overlay=overlay, threads=threads)
    assert res.frames == 200 and res.faces == 200
    assert data.seen == pic.seen == [(i, i) for i in range(200)]
    assert drawn == list(range(200))  # drawn once per frame, for the picture sink only
    ms = res.ms_per_frame()
    assert set(ms) >= {"decode", "infer", "draw", "write"} and ms["infer"] == pytest.approx(1.0)


def test_a_decode_error_reaches_the_caller_after_the_frames_before_it():
    sink = _Sink()
    with pytest.raises(OSError, match="frame 57"):
        run(_Source(100, fail_at=57), _Tracker(), [sink])
    assert [i for i, _ in sink.seen] == list(range(57))


def test_a_failing_threaded_writer_stops_the_run_with_its_error():
    sink = _ThreadedPictureSink(fail_at=20)
    with pytest.raises(OSError, match="disk full"):
        run(_Source(500), _Tracker(), [sink])
    assert [i for i, _ in sink.seen] == list(range(20))


def test_max_frames_and_stop_end_the_run_with_queued_frames_written():
    sink = _ThreadedPictureSink()
    res = run(_Source(10_000), _Tracker(), [sink], max_frames=33)
    assert res.frames == 33 and len(sink.seen) == 33
    stop = StopFlag()

    def progress(r, _n):
        if r.frames == 12:
            stop.stop = True

    sink = _ThreadedPictureSink()
    res = run(_Source(10_000), _Tracker(), [sink], stop=stop, progress=progress)
    assert res.interrupted and res.frames == 12 and len(sink.seen) == 12


def test_closing_the_reader_lets_a_reader_waiting_on_a_full_queue_go_at_once():
    """A run that stops early (`--max-frames`) closes the reading thread while it waits to put a
    frame into the full queue: close() empties the queue, so the thread ends at once (it waits on
    the queue alone, with no poll of the stop flag that would end it anyway)."""
    import threading

    from fkp_live.engine import _Prefetch

    made = []
    full = threading.Event()

    def frames():
        for i in range(10_000):
            made.append(i)
            if len(made) == 4:  # one taken below, two queued, the fourth waits to be put
                full.set()
            yield i

    p = _Prefetch(frames(), depth=2)
    assert next(p) == 0
    assert full.wait(5.0)
    p.close()
    assert not p._thread.is_alive()
    assert len(made) <= 6  # it read no further than the frames freed by the emptied queue


def test_still_pictures_are_detected_in_the_reading_thread_with_the_same_points(tmp_path, any_model):
    """An image folder: the detector runs ahead in the reading thread (beside the model on the
    previous picture), and every point is what the same run without threads gives."""
    import threading

    import cv2

    from fkp_live.io.sources import DemoSource, ImageFolderSource
    from fkp_live.track.tracker import Tracker

    for i, f in enumerate(DemoSource(frames=40, faces=1)):
        if i % 5 == 0:  # eight pictures of the portrait at different places and turns
            cv2.imwrite(str(tmp_path / f"p{i:02d}.png"), f.image)

    class Points:
        picture = False

        def __init__(self):
            self.rows = []

        def write(self, frame, faces):
            self.rows.append((frame.source, [f.points.copy() for f in faces]))

    results = {}
    for threads in (True, False):
        tr = Tracker(model=any_model, device="cpu", detector="blazeface")
        where = []
        det = tr.detector
        tr.detector = lambda img: where.append(threading.current_thread().name) or det(img)
        sink = Points()
        res = run(ImageFolderSource(tmp_path), tr, [sink], threads=threads)
        tr.close()
        assert res.frames == 8 and len(where) == 8  # one detection per picture, never two
        assert set(where) == ({"fkp-decode"} if threads else {threading.current_thread().name})
        assert res.ms_per_frame()["detect"] > 0
        assert ("detect" in res.beside) == threads
        results[threads] = sink.rows
    assert [s for s, _ in results[True]] == [s for s, _ in results[False]]
    for (_, a), (_, b) in zip(results[True], results[False]):
        assert len(a) == len(b) == 1
        np.testing.assert_array_equal(a[0], b[0])


def test_a_grey_model_gets_its_grey_picture_from_the_reading_thread_with_the_same_points(any_model):
    """Frames without a Y plane (the demo, a camera): the grey picture every crop is cut from is
    made ahead in the reading thread, and the points are those of the same run without threads."""
    import threading

    from fkp_live.io.sources import DemoSource
    from fkp_live.track.tracker import Tracker

    class Points:
        picture = False

        def __init__(self):
            self.rows = []

        def write(self, frame, faces):
            self.rows.append([f.points.copy() for f in faces])

    results = {}
    for threads in (True, False):
        tr = Tracker(model=any_model, device="cpu", detector="blazeface")
        made = []
        read_ahead = tr.read_ahead
        tr.read_ahead = lambda f, still=False: made.append(threading.current_thread().name) or read_ahead(f, still)
        sink = Points()
        src = DemoSource(frames=30, faces=1)
        res = run(src, tr, [sink], threads=threads)
        grey = tr.landmarker.card.channels == 1
        tr.close()
        assert res.frames == 30 and len(made) == 30
        assert set(made) == ({"fkp-decode"} if threads else {threading.current_thread().name})
        if grey:  # the grey picture's time is its own stage, marked as spent beside the loop
            assert res.ms_per_frame()["grey"] > 0 and res.ms_per_frame()["crop"] > 0
            assert res.beside == ({"grey"} if threads else set())
        results[threads] = sink.rows
    assert sum(len(r) for r in results[True]) >= 25
    for a, b in zip(results[True], results[False]):
        assert len(a) == len(b)
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)


def test_crops_from_the_grey_picture_match_crops_converted_after_cutting(any_model):
    """Grey then cut (the reading thread's way) and cut then grey (a bare BGR picture) differ by
    rounding only: at most one grey level."""
    from fkp_live.crop import Crop
    from fkp_live.io.sources import DemoSource
    from fkp_live.track.tracker import Tracker

    tr = Tracker(model=any_model, device="cpu", detector="haar")
    lm = tr.landmarker
    if lm.card.channels != 1:
        pytest.skip("a 3-channel model does not use the grey picture")
    frame = next(iter(DemoSource(frames=1, faces=1)))
    crops = [Crop(300, 220, 180, 0.2), Crop(100, 100, 400, -0.1)]
    plain = lm.prepare(frame.image, crops)
    assert tr.read_ahead(frame)["grey"] >= 0 and frame.grey is not None
    ahead = lm.prepare_frame(frame, crops)
    step = float(lm._lut[0, 1, 0] - lm._lut[0, 0, 0])  # one grey level in normalised units
    assert ahead.shape == plain.shape
    assert np.abs(ahead - plain).max() <= step * 1.01
    assert np.abs(ahead - plain).mean() < step * 0.5
    tr.close()


def test_reads_pixels_and_one_opencv_thread(tmp_path):
    """The two facts the CLI and the batch worker take from the engine: whether an output reads
    the undrawn picture (--crops), and OpenCV's pool off in a process that runs the engine."""
    import subprocess
    import sys

    from fkp_live.engine import reads_pixels
    from fkp_live.io.crops import CropSink
    from fkp_live.io.text import CsvSink
    from fkp_live.schemas import IBUG68

    with CsvSink(tmp_path / "a.csv", 68) as csv_sink, CropSink(tmp_path / "crops", IBUG68) as crops:
        assert not reads_pixels([csv_sink]) and reads_pixels([csv_sink, crops])
    code = "import cv2; from fkp_live.engine import one_opencv_thread; one_opencv_thread(); print(cv2.getNumThreads())"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["1"]
