"""The live outputs (`--send osc:// | ws:// | udp://`) with real receivers on loopback: a python-osc
server, a websockets client, plain UDP sockets, the page in headless Chromium; a receiver that
stops reading does not slow the run; bad targets fail before the first frame."""
from __future__ import annotations

import json
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from fkp_live import Tracker, run
from fkp_live.io.send import (OscSender, SinkError, UdpSender, WebSocketSender, make_sender, parse_target,
                              snapshot)
from fkp_live.io.sinks import Sink
from fkp_live.io.sources import DemoSource

pythonosc = pytest.importorskip("pythonosc", reason="python-osc is not installed (pip install 'fkp-live[live]')")
websockets = pytest.importorskip("websockets", reason="websockets is not installed (pip install 'fkp-live[live]')")


class Keep(Sink):
    """Keeps what the engine hands every sink, to compare the messages with."""

    def __init__(self):
        self.frames = []

    def write(self, frame, faces) -> None:
        self.frames.append((frame.index, frame.shape, list(faces)))


@pytest.fixture(scope="module")
def tracker():
    with Tracker(device="cpu") as t:
        yield t


def demo_run(tracker, sinks, frames=30, **kw):
    tracker.reset()
    keep = Keep()
    with DemoSource(frames=frames) as src:
        res = run(src, tracker, [keep, *sinks], **kw)
    return res, keep


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
def test_targets_parse_and_bad_ones_name_the_option():
    assert parse_target("osc://127.0.0.1:9000")[:3] == ("osc", "127.0.0.1", 9000)
    t = parse_target("ws://:8765")
    assert (t.host, t.port, t.named_host) == ("127.0.0.1", 8765, False)
    assert parse_target("udp://[::1]:7000")[:3] == ("udp", "::1", 7000)
    for bad in ("tcp://127.0.0.1:9000", "127.0.0.1:9000", "osc://127.0.0.1", "osc://host:99999", "udp://h:x"):
        with pytest.raises(SinkError, match="--send"):
            parse_target(bad)


def test_osc_server_receives_every_frame_as_one_bundle(tracker):
    from pythonosc.dispatcher import Dispatcher
    from pythonosc.osc_server import ThreadingOSCUDPServer

    got, bundles = [], []
    lock = threading.Lock()

    def on(addr, *args):
        with lock:
            got.append((addr, args))

    d = Dispatcher()
    d.set_default_handler(on)
    server = ThreadingOSCUDPServer(("127.0.0.1", 0), d)
    # every datagram the server takes in, to count bundles (one per frame)
    handle = server.finish_request

    def counted(request, address):
        bundles.append(request[0][:8])
        handle(request, address)

    server.finish_request = counted
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with make_sender(f"osc://127.0.0.1:{server.server_address[1]}") as osc:
            res, keep = demo_run(tracker, [osc])
        deadline = time.time() + 5
        while time.time() < deadline and len([a for a, _ in got if a == "/fkp/frame"]) < osc.counts.sent:
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    assert osc.counts.sent + osc.counts.dropped == res.frames == 30
    assert osc.counts.sent >= 25
    assert set(bundles) == {b"#bundle\x00"} and len(bundles) == osc.counts.sent
    frames = [a for a, v in got if a == "/fkp/frame"]
    assert len(frames) == osc.counts.sent
    by_frame = {}
    current = None
    for addr, args in got:  # the server handles the bundle's messages in order
        if addr == "/fkp/frame":
            current = by_frame.setdefault(args[0], {})
            assert args[3:] == (640, 480)
        current[addr] = args
    index, _, faces = keep.frames[-1]
    msg = by_frame[index]
    assert msg["/fkp/faces"] == tuple(f.id for f in faces)
    f = faces[0]
    pts = np.array(msg[f"/fkp/face/{f.id}/points"]).reshape(-1, 2)
    assert pts.shape == (68, 2)
    np.testing.assert_allclose(pts, f.points, atol=1e-3)  # OSC floats are 32-bit
    np.testing.assert_allclose(msg[f"/fkp/face/{f.id}/box"], f.box, atol=1e-3)


def test_osc_sends_pose_and_eyes_when_analysed(tracker):
    from pythonosc.osc_bundle import OscBundle

    from fkp_live.analysis import Analyser, AnalysingTracker
    from fkp_live.io.send import osc_bundle

    tracker.reset()
    at = AnalysingTracker(tracker, Analyser(["pose", "eyes", "mouth"]))
    keep = Keep()
    with DemoSource(frames=3) as src:
        run(src, at, [keep])
    index, (h, w), faces = keep.frames[-1]

    class F:
        pass

    fr = F()
    fr.index, fr.pts_seconds, fr.source, fr.shape, fr.captured = index, 0.1, None, (h, w), time.perf_counter()
    b = OscBundle(osc_bundle(snapshot(fr, faces), normalise=True))
    msgs = {m.address: m.params for m in b}
    fid = faces[0].id
    a = faces[0].analysis
    np.testing.assert_allclose(msgs[f"/fkp/face/{fid}/pose"], [a.pose.tx, a.pose.ty, a.pose.tz, a.pose.rx,
                                                               a.pose.ry, a.pose.rz], rtol=1e-5)
    assert len(msgs[f"/fkp/face/{fid}/eyes"]) == 3
    pts = np.array(msgs[f"/fkp/face/{fid}/points"]).reshape(-1, 2)
    np.testing.assert_allclose(pts, faces[0].points / [w, h], atol=1e-6)
    assert msgs["/fkp/frame"][0] == index


def test_udp_datagrams_are_the_json_message(tracker):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    with UdpSender(parse_target(f"udp://127.0.0.1:{rx.getsockname()[1]}"), normalise=True) as udp:
        res, keep = demo_run(tracker, [udp], frames=10)
    msgs = []
    try:
        while len(msgs) < udp.counts.sent:
            msgs.append(json.loads(rx.recv(65536)))
    finally:
        rx.close()
    assert udp.counts.sent + udp.counts.dropped == 10 and udp.counts.sent >= 8
    last = msgs[-1]
    index, (h, w), faces = keep.frames[last["frame"]]
    assert last["normalised"] is True and (last["width"], last["height"]) == (w, h)
    assert {"frame", "timestamp", "faces"} <= set(last)
    p = np.array(last["faces"][0]["points"])
    assert 0 <= p.min() and p.max() <= 1
    np.testing.assert_allclose(p, faces[0].points / [w, h], atol=1e-5)


def test_udp_to_a_port_nobody_listens_on_drops_and_goes_on(tracker):
    port = free_udp_port()
    with make_sender(f"udp://127.0.0.1:{port}") as udp:
        res, _ = demo_run(tracker, [udp], frames=10)
    assert res.frames == 10
    assert udp.counts.sent + udp.counts.dropped == 10


def test_websocket_clients_get_the_jsonl_fields_and_the_page_is_served(tracker, tmp_path):
    from websockets.sync.client import connect

    from fkp_live.io.text import JsonlSink

    ws = make_sender("ws://127.0.0.1:0")
    try:
        assert ws.address[0] == "127.0.0.1"
        assert "only this machine can connect" in ws.announcement
        html = urllib.request.urlopen(ws.page_url, timeout=5).read().decode()
        assert "<canvas" in html and "new WebSocket" in html
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(ws.page_url + "nothing", timeout=5)
        assert e.value.code == 404
        got = []
        with connect(f"ws://127.0.0.1:{ws.port}/") as client:
            deadline = time.time() + 5
            while ws.clients < 1 and time.time() < deadline:
                time.sleep(0.01)
            with JsonlSink(tmp_path / "x.jsonl") as jl:
                res, keep = demo_run(tracker, [ws, jl], frames=20)
            while len(got) < ws.counts.sent:
                got.append(json.loads(client.recv(timeout=5)))
    finally:
        ws.close()
    assert ws.counts.sent + ws.counts.dropped == 20 and ws.counts.sent >= 15
    lines = {d["frame"]: d for d in map(json.loads, (tmp_path / "x.jsonl").read_text().splitlines())}
    for msg in got:
        line = lines[msg["frame"]]
        assert set(msg) - set(line) == {"width", "height", "normalised"}
        assert msg["normalised"] is False
        assert [set(f) for f in msg["faces"]] == [set(f) for f in line["faces"]]
        assert msg["faces"] == line["faces"]


def test_port_in_use_and_unknown_host_fail_before_the_first_frame():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(SinkError, match=f"port {port} is in use"):
            make_sender(f"ws://127.0.0.1:{port}")
    finally:
        holder.close()
    with pytest.raises(SinkError, match="unknown host"):
        make_sender("osc://no-such-host.invalid:9000")
    with pytest.raises(SinkError, match="cannot listen|unknown host"):
        make_sender("ws://192.0.2.1:8765")  # TEST-NET-1: not an address of this machine


def test_a_missing_extra_is_one_line_and_osc_needs_none(monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, "websockets", None)
    with pytest.raises(SinkError) as e:
        WebSocketSender(parse_target("ws://127.0.0.1:0"))
    assert str(e.value) == "--send ws://127.0.0.1:0 needs the websockets package: pip install 'fkp-live[live]'"
    monkeypatch.setitem(sys.modules, "pythonosc", None)  # OSC and UDP are encoded without a library
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    try:
        with OscSender(parse_target(f"osc://127.0.0.1:{rx.getsockname()[1]}")) as osc:
            demo_run(tracker, [osc], frames=2)
        assert rx.recv(65536).startswith(b"#bundle\0")
    finally:
        rx.close()


def _stalled_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again."""
    import base64
    import os

    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0]
    return s


@pytest.mark.parametrize("kind", ["ws", "udp"])
def test_a_receiver_that_stops_reading_does_not_slow_the_run(tracker, kind):
    frames = 400
    plain = [demo_run(tracker, [], frames=frames)[0] for _ in range(2)]
    if kind == "ws":
        sender = make_sender("ws://127.0.0.1:0")
        stalled = _stalled_client(sender.port)
        deadline = time.time() + 5
        while sender.clients < 1 and time.time() < deadline:
            time.sleep(0.01)
        assert sender.clients == 1
    else:  # a socket that takes datagrams in and is never read
        stalled = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.bind(("127.0.0.1", 0))
        sender = make_sender(f"udp://127.0.0.1:{stalled.getsockname()[1]}")
    try:
        res, _ = demo_run(tracker, [sender], frames=frames)
    finally:
        sender.close()
        stalled.close()
    assert res.frames == frames
    if kind == "ws":
        assert sender.counts.dropped > 0  # the stalled client's messages were dropped, not waited for
    else:
        assert sender.counts.sent + sender.counts.dropped == frames
    best = max(r.fps for r in plain)
    # the same frames; the rate within the noise of a shared machine (a blocked send would stop it)
    assert res.fps > 0.7 * best, (res.fps, [r.fps for r in plain])


# ----------------------------------------------------------------------------------------------
def _canvas_map(width, height, cw, ch):
    """Frame pixels -> canvas pixels as the page fits the frame (index.html, draw())."""
    aspect = width / height
    sw, sh = cw, cw / aspect
    if sh > ch:
        sh, sw = ch, ch * aspect
    ox, oy = (cw - sw) / 2, (ch - sh) / 2
    return lambda x, y: (ox + x / width * sw, oy + y / height * sh)


def _headless():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("headless_chromium", ROOT / "scripts" / "headless_chromium.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_page_in_headless_chromium_draws_the_points(tracker, tmp_path):
    import cv2
    from websockets.sync.client import connect

    ws = make_sender("ws://127.0.0.1:0")
    stop = threading.Event()
    boxes = []

    def feed():
        while not stop.is_set():
            demo_run(tracker, [ws], frames=20)

    def watch():  # what the page is sent, seen by a client of its own
        with connect(f"ws://127.0.0.1:{ws.port}/") as c:
            while not stop.is_set():
                try:
                    m = json.loads(c.recv(timeout=0.5))
                except TimeoutError:
                    continue
                boxes.extend((m["width"], m["height"], f["box"]) for f in m["faces"])

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=watch, daemon=True)]
    for t in threads:
        t.start()
    shot = tmp_path / "view.png"
    try:
        # once the page has drawn a message (it names the frame in its title)
        shot.write_bytes(_headless().screenshot(ws.page_url, "document.title.startsWith('fkp-live: frame')",
                                                size=(640, 480)))
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        ws.close()
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (480, 640)
    b, g, rr = (img[..., i].astype(int) for i in range(3))
    green = (g > 200) & (rr < 120) & (b < 140)  # the points' colour, #30ff60
    ys, xs = np.nonzero(green)
    assert len(xs) > 68 * 8, f"only {len(xs)} point pixels drawn"
    n_dots, _ = cv2.connectedComponents(green.astype(np.uint8))
    assert n_dots - 1 >= 30  # separate dots (some of the eyes' and lips' touch), not one blob
    # every drawn point lies inside a box the faces were sent with, mapped as the page maps them
    w, h = boxes[0][0], boxes[0][1]
    to = _canvas_map(w, h, 640, 480)
    x0 = min(to(bx[0], bx[1])[0] for _, _, bx in boxes) - 6
    x1 = max(to(bx[2], bx[3])[0] for _, _, bx in boxes) + 6
    y0 = min(to(bx[0], bx[1])[1] for _, _, bx in boxes) - 6
    y1 = max(to(bx[2], bx[3])[1] for _, _, bx in boxes) + 6
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
    # and the dots fill that region rather than a corner of it
    assert xs.max() - xs.min() > 0.6 * (x1 - x0 - 12) and ys.max() - ys.min() > 0.6 * (y1 - y0 - 12)


# ----------------------------------------------------------------------------------------------
def invoke(*args):
    from click.testing import CliRunner

    from fkp_live.commands.run import run as cli

    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def test_cli_sends_reports_and_times_the_messages(tmp_path):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    try:
        code, out = invoke("--demo", "--demo-frames", 20, "--no-display", "--stats", "--send-normalised",
                           "--send", f"udp://127.0.0.1:{port}", "--send", "ws://:0", "--jsonl", tmp_path / "a.jsonl")
        got = [json.loads(rx.recv(65536)) for _ in range(20)]
    finally:
        rx.close()
    assert code == 0, out
    assert "live view on http://127.0.0.1:" in out and "only this machine can connect" in out
    assert f"udp://127.0.0.1:{port}: 20 messages sent, 0 dropped; capture to sent" in out
    assert "ws://:0: 0 messages sent, 0 dropped (0 clients)" in out
    assert f"udp://127.0.0.1:{port}: from capture to sent" in out
    assert f"udp://127.0.0.1:{port}: from tracking start to sent" in out
    assert [m["frame"] for m in got] == list(range(20))
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    for m, line in zip(got, lines):
        assert m["normalised"] and m["faces"][0]["id"] == line["faces"][0]["id"]
        np.testing.assert_allclose(np.array(m["faces"][0]["points"]) * [m["width"], m["height"]],
                                   line["faces"][0]["points"], atol=0.02)


def test_cli_bad_targets_fail_before_the_first_frame(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        code, out = invoke("--demo", "--no-display", "--csv", tmp_path / "x.csv",
                           "--send", f"ws://127.0.0.1:{holder.getsockname()[1]}")
    finally:
        holder.close()
    assert code == 2 and "is in use" in out and "frames" not in out
    assert not (tmp_path / "x.csv").exists()
    code, out = invoke("--demo", "--no-display", "--send", "tcp://127.0.0.1:9")
    assert code == 2 and "--send tcp://127.0.0.1:9: give osc://HOST:PORT" in out
    code, out = invoke("--demo", "--no-display", "--send-normalised")
    assert code == 2 and "--send-normalised goes with --send URL" in out
    code, out = invoke("--videos", tmp_path, "--out-dir", tmp_path / "o", "--send", "osc://127.0.0.1:9000")
    assert code == 2 and "--send goes with one source" in out
