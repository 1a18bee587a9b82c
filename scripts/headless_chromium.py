"""Headless Chromium driven over its DevTools protocol: open a page, wait until a JavaScript
condition holds, take a PNG screenshot. Real time throughout (no virtual time budget), so a page
fed by a busy process is shot once it has drawn, however long that takes (up to `timeout`).

    from headless_chromium import screenshot
    png = screenshot("http://127.0.0.1:8765/", "document.title.startsWith('fkp-live: frame')")
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Tab:
    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self._open = connect(ws_url, max_size=2 ** 26, open_timeout=20)
        self.ws = self._open.__enter__()
        self.n = 0

    def close(self) -> None:
        self._open.__exit__(None, None, None)

    def call(self, method: str, timeout: float = 20.0, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})


def screenshot(url: str, ready_js: str, size: tuple[int, int] = (640, 480), timeout: float = 60.0,
               settle: float = 0.3) -> bytes:
    """The PNG of `url` once `ready_js` (an expression) is true, `settle` seconds later."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("headless Chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                 "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                 f"--window-size={size[0]},{size[1]}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.time() + timeout
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("Chromium did not start its DevTools endpoint")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            tab = _Tab(next(p for p in pages if p.get("type") == "page")["webSocketDebuggerUrl"])
            tab.call("Page.enable")
            tab.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1],
                     deviceScaleFactor=1, mobile=False)
            tab.call("Page.navigate", url=url)
            while True:
                r = tab.call("Runtime.evaluate", expression=f"Boolean({ready_js})", returnByValue=True)
                if r.get("result", {}).get("value") is True:
                    break
                if time.time() > deadline:
                    raise TimeoutError(f"{url}: the page was not ready ({ready_js}) within {timeout:g} s")
                time.sleep(0.1)
            time.sleep(settle)
            shot = tab.call("Page.captureScreenshot", format="png")
            tab.close()
            return base64.b64decode(shot["data"])
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
