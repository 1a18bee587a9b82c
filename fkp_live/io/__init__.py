"""Sources (frames in: `sources`) and sinks (results out: the interface in `sinks`, one module per
output: `mp4`, `text`, `crops`, `window`, with the path rules in `outputs`). The classes are here
too, imported on first use: `from fkp_live.io import CsvSink, VideoSource`."""

# x264 presets offered by --mp4-preset, fastest first. "realtime" is ours: x264's ultrafast with
# what buys compression cheaply put back (CABAC, the deblocking filter, 3 B-frames, half-pixel
# motion search: subme 1). CPU ms per frame / file MB / PSNR of Y (dB), one encoder as the sink runs it, CRF
# 20, the bench clips (`python scripts/encoder_sweep.py CLIP`; README, Speed): 512x512 1.98 / 1.69 /
# 46.9 against superfast's 2.76 / 1.83 / 46.7; 1280x720 6.1 / 2.83 / 49.3 against 8.9 / 3.22 / 49.7;
# 1920x1080 12.8 / 2.70 / 50.2 against 18.2 / 3.66 / 50.7: 28-31 % less encoding for smaller files,
# so it is the default (ultrafast itself: 1.19 / 3.65, 5.2 / 8.44, 10.1 / 6.69).
PRESETS = ("ultrafast", "realtime", "superfast", "veryfast", "faster", "fast", "medium", "slow")
DEFAULT_PRESET = "realtime"
X264_OPTIONS = {"realtime": {"preset": "ultrafast", "x264-params": "cabac=1:deblock=0,0:bframes=3:subme=1"}}
SMALL_FRAME = 500_000  # pixels: up to this, x264 gets one thread (306 against 276-296 fps at 512x512)
# pixels: up to this (1280x720), the decoder gets one thread; beside the model's one thread that
# fills two cores, where FFmpeg's frame threads only added hand-over (s18.mp4, 720p, CSV: whole
# process 1.15-1.20 s -> 0.95-1.13 s; at 1080p its threads keep up better: 1.50 against 1.56 s)
ONE_DECODE_THREAD = 1280 * 720


class Closing:
    """A context manager that calls `close()` when its with-block ends, however it ends."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_WHERE = {
    "Sink": "sinks", "SinkError": "sinks", "Mp4Sink": "mp4", "CsvSink": "text", "JsonlSink": "text",
    "CropSink": "crops", "WindowSink": "window", "check_output_path": "outputs", "partial_path": "outputs",
    "Source": "sources", "SourceError": "sources", "VideoSource": "sources", "CameraSource": "sources",
    "ImageFolderSource": "sources", "DemoSource": "sources", "open_source": "sources",
}


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
