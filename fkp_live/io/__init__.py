"""Sources (frames in) and sinks (results out)."""

# x264 presets offered by --mp4-preset, fastest first
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")
# Measured with d3-like talking heads, MP4 + CSV written beside tracking on 2 cores (README, Speed):
# 512x512 205 fps at veryfast, 306 at superfast (1.7x the file size), 327 at ultrafast (2.7x);
# 1920x1080 47, 64 and 86 fps. superfast is the fastest preset whose files stay reasonable.
DEFAULT_PRESET = "superfast"
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
