"""RunSettings: everything one run needs, in one picklable object that checks itself and builds
the run's parts (source, tracker with its analysis, sinks, overlay).

The command line only maps its options onto the fields (their names are the options' names);
the single run (`fkp_live.single.run_single`), every `--videos` worker (it is pickled into each),
`fkp-live bench` and the Python API build from the same object with the same methods, so each
rule that ties options together is written once, here:

    >>> s = RunSettings(demo=True, csv="out.csv", draw="points,pose", crops_every=2)
    >>> s.check()
    Traceback (most recent call last):
    ...
    fkp_live.settings.SettingsError: --crops-every goes with --crops DIR
    >>> sorted(RunSettings(draw="all").layers)[:3], RunSettings(analysis="eyes,pose").kinds
    (['box', 'contours', 'fps'], ('pose', 'eyes'))

A check that fails raises `SettingsError` naming the option (`option` is set where one value is
bad); a path that cannot be written raises the sinks' `SinkError`, as the sinks would.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .io import DEFAULT_PRESET
from .track.smooth import DEFAULT_STRENGTH

DEFAULT_CROP_SIZE = 112


class SettingsError(ValueError):
    """Options that do not go together or a bad value; the message names the option.

    option: the one option whose value is bad ('--draw'), or None where the options together are
    the trouble (the command line shows it as a usage error)."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


@dataclass
class RunSettings:
    """One run: where frames come from, how faces are tracked and analysed, what is written."""

    # the source: exactly one of camera, video, images, demo, videos
    camera: int | None = None
    video: str | None = None
    images: str | None = None
    demo: bool = False
    videos: str | None = None
    demo_frames: int = 300
    # the tracker
    model: str | None = None
    device: str = "auto"
    detector: str = "auto"
    redetect_every: int = 30
    max_faces: int = 5
    smooth: float = DEFAULT_STRENGTH
    no_smooth: bool = False
    min_confidence: float = 0.5
    refine_shift: float | None = None
    threads: int | None = None  # ONNX Runtime threads (None: every core)
    quiet: bool = True  # keep ONNX Runtime's provider probing off stderr
    # the outputs
    output: str | None = None  # the annotated MP4
    mp4_preset: str = DEFAULT_PRESET
    mp4_crf: int = 20
    mp4_threads: int | None = None  # x264 threads (None: one for small frames, else x264's choice)
    draw: str | None = None  # overlay layers on the pictures (MP4, window); None: render.draw's defaults
    csv: str | None = None
    jsonl: str | None = None
    crops: str | None = None
    crop_size: int | None = None
    crops_every: int | None = None
    display: bool = True  # a window, where there is a display
    send: tuple = ()  # live outputs: osc://, ws://, udp:// URLs (fkp_live.io.send)
    send_normalised: bool = False  # their coordinates as fractions of the frame
    point_confidence: bool = False  # each point's confidence (a model with that output)
    morph_to: str | None = None
    morph_alpha: float = 0.5
    # the analysis
    analysis: str | tuple | None = "none"
    focal: float | None = None
    blink_threshold: float = 0.2
    # many videos
    out_dir: str | None = None
    jobs: int = 1
    shard: str | None = None
    mp4: bool = False
    max_frames: int | None = None

    # ------------------------------------------------------------------ parsed values
    @property
    def layers(self) -> frozenset:
        """The overlay layers (`--draw`)."""
        from .render.draw import parse_layers

        try:
            return parse_layers(self.draw)
        except ValueError as e:
            raise SettingsError(str(e), option="--draw") from None

    @property
    def kinds(self) -> tuple:
        """The analysis kinds (`--analysis`), in canonical order."""
        from .analysis.analyser import parse_kinds

        try:
            return parse_kinds(self.analysis)
        except ValueError as e:
            raise SettingsError(str(e), option="--analysis") from None

    @property
    def smoothing(self) -> float:
        """The smoother's strength: --no-smooth wins over --smooth."""
        return 0.0 if self.no_smooth else self.smooth

    @property
    def shard_kn(self) -> tuple[int, int] | None:
        """`--shard K/N` as (K, N)."""
        from .batch import BatchError, parse_shard

        try:
            return parse_shard(self.shard)
        except BatchError as e:
            raise SettingsError(str(e).split(": ", 1)[-1], option="--shard") from None

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Every check that needs no model and reads no frame, in the order the command line
        reports them, so a typo costs nothing."""
        n_src = sum(x is not None and x is not False
                    for x in (self.camera, self.video, self.images, self.demo or None, self.videos))
        if n_src != 1:
            raise SettingsError("give exactly one source: --camera N, --video PATH, --images DIR, --demo "
                                "or --videos DIR|GLOB")
        self.layers, self.kinds  # noqa: B018  (raise for a bad --draw or --analysis)
        if not self.crops:
            for name in ("crop_size", "crops_every"):
                if getattr(self, name) is not None:
                    raise SettingsError(f"--{name.replace('_', '-')} goes with --crops DIR")
        if self.videos:
            self._check_batch()
        else:
            self._check_single()

    def _check_batch(self) -> None:
        for path, what in self._files():
            if path:
                raise SettingsError(f"{what} goes with one source; with --videos every video gets OUT/NAME.csv "
                                    "(and OUT/NAME.mp4 with --mp4) in --out-dir")
        if self.send:
            raise SettingsError("--send goes with one source; --videos writes files")
        if not self.out_dir:
            raise SettingsError("--videos needs --out-dir DIR for the outputs and the manifest")
        self.shard_kn  # noqa: B018  (raise for a bad --shard)

    def _check_single(self) -> None:
        from .io.outputs import check_output_path, is_special

        for name in ("out_dir", "shard", "mp4"):
            if getattr(self, name):
                raise SettingsError(f"--{name.replace('_', '-')} goes with --videos")
        if self.jobs != 1:
            raise SettingsError("--jobs goes with --videos")
        if self.send_normalised and not self.send:
            raise SettingsError("--send-normalised goes with --send URL")
        if self.send:
            from .io.send import parse_target

            for url in self.send:  # a malformed URL is told before the model loads
                parse_target(url)
        files = self._files()
        for path, what in files:
            if path:
                check_output_path(path, what)
        named = [Path(p).resolve() for p, _ in files if p and not is_special(p)]  # /dev/null twice is fine
        if len(set(named)) < len(named):
            raise SettingsError("--output, --csv and --jsonl must be different files")
        if self.video and any(Path(self.video).resolve() == p for p in named):
            raise SettingsError(f"an output would overwrite the input {self.video}; choose another name")

    def _files(self) -> list[tuple[str | None, str]]:
        return [(self.output, "--output"), (self.csv, "--csv"), (self.jsonl, "--jsonl")]

    def check_model(self, schema) -> None:
        """Analysis, and the pose layer named in --draw, need a 68-point iBUG model."""
        named_pose = "pose" in {t.strip().lower() for t in (self.draw or "").split(",")}
        from .analysis.analyser import reads_ibug68

        if not reads_ibug68(schema) and (self.kinds or named_pose):
            why = "--analysis" if self.kinds else "--draw pose"
            raise SettingsError(f"{why} needs a 68-point iBUG model; {schema.name} has {schema.n} points")

    def analysis_wanted(self, schema, shown: bool) -> set:
        """The kinds the faces must carry: those asked for, and pose where a shown picture (window,
        MP4) draws the pose layer ('all' draws pose only where the model can give it)."""
        from .analysis.analyser import reads_ibug68

        self.check_model(schema)
        wanted = set(self.kinds)
        if shown and "pose" in self.layers and reads_ibug68(schema):
            wanted.add("pose")
        return wanted

    # ------------------------------------------------------------------ builders
    def tracker_options(self) -> dict:
        """The keyword arguments for `Tracker`."""
        return dict(model=self.model, device=self.device, threads=self.threads, detector=self.detector,
                    redetect_every=self.redetect_every, max_faces=self.max_faces, smooth=self.smoothing,
                    min_confidence=self.min_confidence, refine_shift=self.refine_shift, quiet=self.quiet,
                    point_confidence=self.point_confidence)

    def build_tracker(self):
        """The tracker alone (no analysis: see `with_analysis`)."""
        from .track.tracker import Tracker

        return Tracker(**self.tracker_options())

    def with_analysis(self, tracker, shown: bool):
        """`tracker` wrapped so its faces carry the analysis `analysis_wanted` names (as it is
        when none is wanted). shown: whether a picture output (window, MP4) is written."""
        wanted = self.analysis_wanted(tracker.schema, shown)
        if not wanted:
            return tracker
        from .analysis import Analyser, AnalysingTracker

        return AnalysingTracker(tracker, Analyser(wanted, focal=self.focal, blink_threshold=self.blink_threshold))

    def open_source(self):
        """The one source of a single run (not --videos)."""
        from .io.sources import open_source

        return open_source(camera=self.camera, video=self.video, images=self.images, demo=self.demo,
                           demo_frames=self.demo_frames)

    def open_sinks(self, stack, source, schema, staged: bool = True) -> list:
        """Open every output these settings name, each entered in `stack` (a contextlib.ExitStack,
        which closes and finalises them): the live senders (--send: first, so a frame's message
        leaves as soon as it is tracked), MP4, CSV, JSONL, crops, window, in that order.

        staged=False: the caller stages the files itself (a batch's NAME.csv.part)."""
        from .io.crops import CropSink
        from .io.mp4 import Mp4Sink
        from .io.text import CsvSink, JsonlSink
        from .io.window import WindowSink

        sinks = []
        if self.send:
            from .io.send import make_sender

            sinks += [stack.enter_context(make_sender(url, self.send_normalised)) for url in self.send]
        if self.output:
            audio = source.path if getattr(source, "has_audio", False) else None
            sinks.append(stack.enter_context(Mp4Sink(self.output, fps=source.fps, audio_from=audio, crf=self.mp4_crf,
                                                     preset=self.mp4_preset, staged=staged, threads=self.mp4_threads)))
        if self.csv:
            sinks.append(stack.enter_context(CsvSink(self.csv, schema.n, with_source=source.still,
                                                     analysis=self.kinds, staged=staged,
                                                     point_confidence=self.point_confidence)))
        if self.jsonl:
            sinks.append(stack.enter_context(JsonlSink(self.jsonl, staged=staged)))
        if self.crops:
            sinks.append(stack.enter_context(CropSink(self.crops, schema, self.crop_size or DEFAULT_CROP_SIZE,
                                                      self.crops_every or 1)))
        if self.display:
            window = stack.enter_context(WindowSink(f"fkp-live: {source.name}"))
            if window.enabled:
                sinks.append(window)
        return sinks

    def overlay(self, tracker, sinks):
        """What the picture outputs show: the overlay layers, and with --morph-to the target's face
        warped onto every tracked face under them. Drawn on the frame's own picture unless an
        output reads it undrawn (every source makes a new picture per frame)."""
        from .engine import reads_pixels
        from .render.draw import Overlay

        layers = self.layers
        drawn = Overlay(tracker.schema, layers, copy=reads_pixels(sinks))
        if not self.morph_to:
            return drawn
        from .render.morph.live import LiveMorph

        base = getattr(tracker, "tracker", tracker)  # the analysing tracker wraps the real one
        live = LiveMorph.from_file(self.morph_to, base, alpha=self.morph_alpha)
        if not layers:
            return live
        return lambda frame, faces: drawn(live(frame, faces), faces)

    # ------------------------------------------------------------------ many videos
    def for_video(self, csv: Path, mp4: Path | None, name: str) -> "RunSettings":
        """One video of a batch as a single run: its own files (CSV, MP4 with --mp4, crops in
        crops/NAME/), no window and no morph; the analysis and overlay as for every other video."""
        return dataclasses.replace(self, videos=None, video=None, csv=str(csv), output=str(mp4) if mp4 else None,
                                   jsonl=None, crops=str(Path(self.crops) / name) if self.crops else None,
                                   display=False, morph_to=None)

    def one_thread_each(self) -> "RunSettings":
        """For one of several worker processes: one ONNX Runtime thread (unless --threads says)
        and one x264 thread, so the workers share the cores instead of fighting over them."""
        return dataclasses.replace(self, threads=self.threads or 1, mp4_threads=1)

