"""Live outputs (`--send URL`): each frame's faces sent to other programs as they are tracked.

- `osc://HOST:PORT`: one OSC 1.0 bundle per frame over UDP (encoded here, 32-bit floats and
  ints), for TouchDesigner, Max/MSP, Pure Data and the like. Addresses (`<id>` is the face id):

      /fkp/frame                 index (int), timestamp (float, seconds; -1 without one),
                                 faces (int), width (int), height (int)
      /fkp/faces                 the ids in this frame (ints; no arguments when none)
      /fkp/face/<id>/points      2N floats: x0 y0 x1 y1 ... (pixels, or 0..1 with --send-normalised)
      /fkp/face/<id>/box         x0 y0 x1 y1
      /fkp/face/<id>/confidence  face presence, 0..1
      /fkp/face/<id>/conf        N floats, each point's confidence (with --point-confidence)
      /fkp/face/<id>/pose        Tx Ty Tz (mm) Rx Ry Rz (degrees)   (with --analysis pose)
      /fkp/face/<id>/eyes        ear_l ear_r blink (0/1)            (with --analysis eyes)
      /fkp/face/<id>/mouth       mouth_open                         (with --analysis mouth)

- `ws://HOST:PORT`: a WebSocket server; every client that connects gets one JSON message per
  frame (the fields of a JSON Lines line, plus "width", "height" and "normalised"). The same port
  answers plain HTTP with a page that draws the points live (`fkp_live/web/index.html`).
- `udp://HOST:PORT`: one JSON datagram per frame, the WebSocket message.

A sender never holds the tracker up. OSC and UDP messages leave from the tracker's thread through
a non-blocking socket: a full send buffer or a refused port drops the message (counted), never
waits. The WebSocket server runs in a thread of its own, each client with a bounded queue: a
client that falls behind loses its oldest messages (counted), the tracker and the other clients
go on. The server binds 127.0.0.1 unless the URL names an address; a port in use, an unknown or
unreachable host is a `SinkError` when the sender is made, before any frame.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import struct
import threading
import time
from importlib import resources
from typing import NamedTuple

import numpy as np

from .sinks import Sink, SinkError
from .text import frame_json

log = logging.getLogger("fkp_live")
# the websockets library's own log (a line per connection) only where something went wrong
_WS_LOG = logging.getLogger("fkp_live.ws")
_WS_LOG.setLevel(logging.WARNING)

SCHEMES = ("osc", "ws", "udp")
DEPTH = 8  # messages waiting per WebSocket client (and frames waiting for the server's thread)
MAX_DATAGRAM = 65507  # the largest UDP payload over IPv4
EXTRA = "pip install 'fkp-live[live]'"


class Target(NamedTuple):
    scheme: str
    host: str
    port: int
    url: str
    named_host: bool  # the URL gave a host (else 127.0.0.1)


def parse_target(url: str, what: str = "--send") -> Target:
    """`osc://HOST:PORT`, `ws://HOST:PORT`, `udp://HOST:PORT` (HOST may be left out:
    `ws://:8765` is 127.0.0.1; `[::1]` for IPv6) -> Target; SinkError naming the option otherwise."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise SinkError(f"{what} {url}: give osc://HOST:PORT, ws://HOST:PORT or udp://HOST:PORT")
    rest = rest.rstrip("/")
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port[1:] if port.startswith(":") else ""
    else:
        host, _, port = rest.rpartition(":")
    # ws://HOST:0: the server takes a free port (and says which)
    low = 0 if scheme == "ws" else 1
    if not port.isdigit() or not low <= int(port) < 65536:
        raise SinkError(f"{what} {url}: the port must be a number from {low} to 65535, e.g. {scheme}://127.0.0.1:9000")
    return Target(scheme, host or "127.0.0.1", int(port), url, bool(host))


def needs(module: str, package: str, url: str):
    """Import an optional dependency of the live outputs, or a one-line SinkError saying how."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SinkError(f"--send {url} needs the {package} package: {EXTRA}") from None


# ----------------------------------------------------------------------------------------------
class Snapshot(NamedTuple):
    """What a message is made of: the frame's numbers (not its picture) and its faces."""

    index: int
    timestamp: float | None
    source: str | None
    width: int
    height: int
    faces: list
    captured: float  # time.perf_counter() when the frame was read (Frame.captured)
    taken: float  # when the run engine took it up (Frame.taken; the capture time without one)


def snapshot(frame, faces) -> Snapshot:
    h, w = frame.shape[:2]
    captured = frame.captured
    taken = getattr(frame, "taken", None)
    return Snapshot(frame.index, frame.pts_seconds, frame.source, int(w), int(h), list(faces),
                    captured, captured if taken is None else taken)


def _scale(snap: Snapshot, normalise: bool) -> np.ndarray | None:
    """What coordinates are divided by for 0..1 fractions (None: frame pixels)."""
    return np.array([snap.width, snap.height], np.float64) if normalise else None


def record(snap: Snapshot, normalise: bool = False) -> dict:
    """The JSON message of one frame: the fields of a JSON Lines line ("frame", "timestamp",
    "source", "faces" with "id", "confidence", "box", "points", "raw" and the analysis), plus
    "width", "height", "normalised" and, per face, "point_confidence" where read."""
    return frame_json(snap.index, snap.timestamp, snap.source, snap.faces, _scale(snap, normalise),
                      5 if normalise else 2, width=snap.width, height=snap.height, normalised=normalise)


def record_text(snap: Snapshot, normalise: bool = False) -> str:
    """`record` as compact JSON: a UDP datagram's or a WebSocket message's text."""
    return json.dumps(record(snap, normalise), separators=(",", ":"))


def _osc_string(text: str) -> bytes:
    """An OSC string: ASCII, NUL-terminated, padded with NULs to a multiple of 4 bytes."""
    b = text.encode("ascii")
    return b + b"\0" * (4 - len(b) % 4)


def osc_message(address: str, values=(), kinds: str | None = None) -> bytes:
    """One OSC 1.0 message: `values` as big-endian float32 ('f', the default) or int32 ('i')."""
    kinds = "f" * len(values) if kinds is None else kinds
    if len(kinds) != len(values):
        raise ValueError(f"{address}: {len(values)} values but type tags {kinds!r}")
    head = _osc_string(address) + _osc_string("," + kinds)
    if not len(values):
        return head
    if kinds == "f" * len(values):  # the common case: one numpy conversion
        return head + np.asarray(values, ">f4").tobytes()
    return head + b"".join(struct.pack(">f" if k == "f" else ">i", float(v) if k == "f" else int(v))
                           for v, k in zip(values, kinds))


def osc_bundle_of(messages) -> bytes:
    """An OSC bundle of encoded messages, time tag 'immediately'."""
    out = [b"#bundle\0", struct.pack(">Q", 1)]
    for m in messages:
        out.append(struct.pack(">i", len(m)))
        out.append(m)
    return b"".join(out)


def osc_bundle(snap: Snapshot, normalise: bool = False) -> bytes:
    """One frame as an OSC bundle (the addresses in the module doc)."""
    ts = -1.0 if snap.timestamp is None else snap.timestamp
    msgs = [osc_message("/fkp/frame", (snap.index, ts, len(snap.faces), snap.width, snap.height), "ifiii"),
            osc_message("/fkp/faces", [f.id for f in snap.faces], "i" * len(snap.faces))]
    scale = _scale(snap, normalise)
    one = 1.0 if scale is None else scale
    for f in snap.faces:
        base = f"/fkp/face/{f.id}"
        msgs.append(osc_message(base + "/points", (f.points / one).ravel()))
        msgs.append(osc_message(base + "/box", (np.asarray(f.box, np.float64).reshape(2, 2) / one).ravel()))
        msgs.append(osc_message(base + "/confidence", [f.confidence]))
        pc = getattr(f, "point_confidence", None)
        if pc is not None:
            msgs.append(osc_message(base + "/conf", np.asarray(pc).ravel()))
        a = getattr(f, "analysis", None)
        if a is None:
            continue
        p = getattr(a, "pose", None)
        if p is not None:
            msgs.append(osc_message(base + "/pose", [p.tx, p.ty, p.tz, p.rx, p.ry, p.rz]))
        if getattr(a, "ear_l", None) is not None or getattr(a, "blink", None) is not None:
            ear_l, ear_r = (getattr(a, k, None) for k in ("ear_l", "ear_r"))
            msgs.append(osc_message(base + "/eyes", [-1.0 if v is None else v for v in (ear_l, ear_r)]
                                    + [float(bool(a.blink))]))
        if getattr(a, "mouth_open", None) is not None:
            msgs.append(osc_message(base + "/mouth", [a.mouth_open]))
    return osc_bundle_of(msgs)


# ----------------------------------------------------------------------------------------------
class Counts:
    """What a sender did: messages sent and dropped, and each sent message's latency (seconds)
    from its frame's capture to sent (`latency`), and from the run engine taking the frame up to
    sent (`in_run`: the same for a camera, whose frames are not read ahead; for a file, the part
    after the frames waiting in the read-ahead queue)."""

    def __init__(self) -> None:
        self.sent = 0
        self.dropped = 0
        self.latency: list[float] = []
        self.in_run: list[float] = []
        self._lock = threading.Lock()

    def sent_one(self, snap: "Snapshot") -> None:
        now = time.perf_counter()
        with self._lock:
            self.sent += 1
            self.latency.append(now - snap.captured)
            self.in_run.append(now - snap.taken)

    def drop(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def latency_ms(self, in_run: bool = False) -> dict[str, float]:
        """Median, 95th percentile and largest latency in ms (empty when nothing was sent)."""
        values = self.in_run if in_run else self.latency
        if not values:
            return {}
        a = np.asarray(values) * 1000.0
        return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


class Sender(Sink):
    """Base of the live outputs: `write(frame, faces)` makes the frame's message and hands it on
    without waiting (`deliver`); what cannot go at once is dropped and counted."""

    def __init__(self, target: Target, normalise: bool = False):
        self.target = target
        self.url = target.url
        self.normalise = bool(normalise)
        self.counts = Counts()
        self._closed = False

    def write(self, frame, faces) -> None:
        snap = snapshot(frame, faces)
        if self.deliver(self.encode(snap)):
            self.counts.sent_one(snap)
        else:
            self.counts.drop()

    def encode(self, snap: Snapshot) -> bytes:
        raise NotImplementedError

    def deliver(self, payload: bytes) -> bool:
        raise NotImplementedError

    def note(self) -> str:
        """What the summary adds about the receivers (none here)."""
        return ""

    def summary(self) -> str:
        """One line: sent, dropped, latency."""
        c = self.counts
        lat = c.latency_ms()
        tail = (f"; capture to sent {lat['median']:.2f} ms median, {lat['p95']:.2f} ms 95th percentile"
                if lat else "")
        return f"{self.url}: {c.sent} message{'s' * (c.sent != 1)} sent, {c.dropped} dropped{self.note()}{tail}"


class DatagramSender(Sender):
    """UDP to one receiver, sent from `write` itself: the socket is connected when made (an unknown
    host or one with no route is an error then) and never blocks: a full send buffer, a refused
    port (nothing listening, reported by the next send) or a message over UDP's limit is a drop."""

    def __init__(self, target: Target, normalise: bool = False):
        super().__init__(target, normalise)
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as e:
            raise SinkError(f"--send {target.url}: unknown host {target.host!r} ({e.strerror}); "
                            "check the name or give an IP address") from None
        family, kind, proto, _, addr = infos[0]
        self._sock = socket.socket(family, kind, proto)
        try:
            self._sock.connect(addr)
        except OSError as e:
            self._sock.close()
            raise SinkError(f"--send {target.url}: cannot reach {target.host}:{target.port} "
                            f"({e.strerror or e}); check the address and the network") from None
        self._sock.setblocking(False)
        self.refused = 0

    def deliver(self, payload: bytes) -> bool:
        if len(payload) > MAX_DATAGRAM:
            log.debug("%s: a %d-byte message is over the UDP limit", self.url, len(payload))
            return False
        try:
            self._sock.send(payload)
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except ConnectionRefusedError:  # nothing listens there (yet): the next message tries again
            self.refused += 1
            return False
        except OSError as e:
            if e.errno in (errno.ENOBUFS, errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EMSGSIZE):
                return False
            raise SinkError(f"--send {self.url}: {e.strerror or e}", exit_code=1) from None

    def note(self) -> str:
        return f" ({self.refused} refused: nothing was listening on port {self.target.port})" if self.refused else ""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()


class OscSender(DatagramSender):
    """`osc://HOST:PORT`: one OSC bundle per frame."""

    def encode(self, snap: Snapshot) -> bytes:
        return osc_bundle(snap, self.normalise)


class UdpSender(DatagramSender):
    """`udp://HOST:PORT`: one JSON datagram per frame."""

    def encode(self, snap: Snapshot) -> bytes:
        return record_text(snap, self.normalise).encode()


def page() -> bytes:
    """The live view the WebSocket server serves over HTTP."""
    return resources.files("fkp_live.web").joinpath("index.html").read_bytes()


class WebSocketSender(Sender):
    """`ws://HOST:PORT`: a WebSocket server streaming one JSON message per frame to every client,
    and the live view page over HTTP on the same port. Each client has its own bounded queue (a
    slow client loses messages, the others do not); the kernel's send buffer per client is kept
    small (SEND_BUFFER), so a client that stops reading is found out within a few messages."""

    SEND_BUFFER = 128 * 1024

    def __init__(self, target: Target, normalise: bool = False, depth: int = DEPTH):
        super().__init__(target, normalise)
        needs("websockets", "websockets", target.url)
        self.clients_seen = 0
        from websockets.asyncio.server import serve

        self._depth = depth
        self._page = page()
        self._clients: dict = {}
        self._pending = 0  # frames handed to the server's loop and not yet taken
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server = None
        ready = threading.Event()
        failure: list[BaseException] = []

        async def start():
            self._server = await serve(self._client, target.host, target.port, process_request=self._http,
                                       max_size=2 ** 16, compression=None, ping_interval=20,
                                       close_timeout=1.0, logger=_WS_LOG)

        def work():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(start())
            except BaseException as e:
                failure.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=work, name="fkp-send-ws", daemon=True)
        self._thread.start()
        ready.wait(10.0)
        if failure:
            e = failure[0]
            self._thread.join(timeout=2.0)
            self._loop.close()
            if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
                raise SinkError(f"--send {target.url}: port {target.port} is in use on {target.host}; "
                                "choose another port, or stop the program that holds it") from None
            if isinstance(e, socket.gaierror):
                raise SinkError(f"--send {target.url}: unknown host {target.host!r}; give an address of "
                                "this machine, e.g. ws://127.0.0.1:8765") from None
            raise SinkError(f"--send {target.url}: cannot listen on {target.host}:{target.port} "
                            f"({getattr(e, 'strerror', None) or e}); give an address of this machine") from None
        self.address = self._server.sockets[0].getsockname()[:2] if self._server.sockets else (target.host, target.port)
        self.port = int(self.address[1])
        host = target.host if ":" not in target.host else f"[{target.host}]"
        self.page_url = f"http://{host}:{self.port}/"
        loopback = target.host in ("127.0.0.1", "::1", "localhost")
        reach = "only this machine can connect" if loopback else f"open to other machines on {target.host}"
        if not target.named_host:
            reach += f" (name an address to listen on others, e.g. ws://0.0.0.0:{self.port})"
        self.announcement = (f"live view on {self.page_url} (WebSocket ws://{host}:{self.port}/), {reach}")
        log.info("%s", self.announcement)

    # the server's own thread -------------------------------------------------------------------
    def _http(self, connection, request):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if request.path.split("?")[0] in ("/", "/index.html"):
            from websockets.datastructures import Headers
            from websockets.http11 import Response

            headers = Headers([("Content-Type", "text/html; charset=utf-8"),
                               ("Content-Length", str(len(self._page))), ("Cache-Control", "no-store")])
            return Response(200, "OK", headers, self._page)
        return connection.respond(404, "fkp-live serves its live view at / and the WebSocket at /\n")

    async def _client(self, connection) -> None:
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.SEND_BUFFER)
        q: asyncio.Queue = asyncio.Queue(maxsize=self._depth)
        self._clients[connection] = q
        self.clients_seen += 1
        try:
            while True:
                text, snap = await q.get()
                await connection.send(text)
                self.counts.sent_one(snap)
        except Exception:  # the client went away
            pass
        finally:
            self._clients.pop(connection, None)

    def _publish(self, text: str, snap: Snapshot) -> None:
        with self._lock:
            self._pending -= 1
        for q in list(self._clients.values()):
            if q.full():  # this client is behind: its oldest message goes
                q.get_nowait()
                self.counts.drop()
            q.put_nowait((text, snap))

    # the tracker's thread ----------------------------------------------------------------------
    @property
    def clients(self) -> int:
        return len(self._clients)

    def write(self, frame, faces) -> None:
        if not self._clients or self._closed:
            return  # nobody to send to: nothing made, nothing dropped
        with self._lock:
            if self._pending >= self._depth:  # the server's loop is behind: the frame is dropped
                self.counts.drop()
                return
            self._pending += 1
        snap = snapshot(frame, faces)
        text = record_text(snap, self.normalise)
        self._loop.call_soon_threadsafe(self._publish, text, snap)

    def note(self) -> str:
        n = self.clients_seen
        return f" ({n} client{'s' * (n != 1)})"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def stop():
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), 3.0)
            except asyncio.TimeoutError:
                pass
            # what is left (a handshake under way, a client that stopped reading) is cancelled
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=5.0)
        except Exception:
            log.debug("%s: the server did not close cleanly", self.url, exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5.0)
        if not self._thread.is_alive():
            self._loop.close()


def make_sender(url: str, normalise: bool = False) -> Sender:
    """The live output a `--send` URL names, ready to write to (server listening, socket connected)."""
    t = parse_target(url)
    cls = {"osc": OscSender, "ws": WebSocketSender, "udp": UdpSender}[t.scheme]
    return cls(t, normalise)
