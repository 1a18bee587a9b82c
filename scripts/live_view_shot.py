"""A screenshot of the live view page (`fkp-live --send ws://...`) in headless Chromium, for the
manual: the demo tracked with head pose, and each point coloured by its confidence when MODEL
gives it (`python -m train.point_confidence`).

    python scripts/live_view_shot.py docs/images/live_view.png [--model MODEL.onnx] [--video CLIP]
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headless_chromium import chromium, screenshot  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the PNG to write")
    ap.add_argument("--model", default=None, help="a model with the point_confidence output (else fast, points green)")
    ap.add_argument("--size", default="800,600", help="the browser window, W,H")
    ap.add_argument("--video", default=None, help="track this clip (looped) instead of the demo")
    args = ap.parse_args(argv)
    if chromium() is None:
        print("error: headless Chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    from fkp_live import Tracker, run
    from fkp_live.analysis import Analyser, AnalysingTracker
    from fkp_live.io.send import make_sender
    from fkp_live.io.sources import open_source

    ws = make_sender("ws://127.0.0.1:0")
    stop = threading.Event()
    tracker = Tracker(args.model, device="cpu", point_confidence=args.model is not None)
    analysing = AnalysingTracker(tracker, Analyser(["pose"]))

    def feed():
        while not stop.is_set():
            tracker.reset()
            with open_source(video=args.video, demo=args.video is None, demo_frames=60) as src:
                run(src, analysing, [ws])

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    w, h = (int(v) for v in args.size.split(","))
    try:
        # a few frames in, so the picture is the page drawing, not its first message
        png = screenshot(ws.page_url, "document.title.startsWith('fkp-live: frame') && "
                         "Number(document.title.split(' ').pop()) > 20", size=(w, h))
    finally:
        stop.set()
        t.join(10)
        ws.close()
        tracker.close()
    Path(args.out).write_bytes(png)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
