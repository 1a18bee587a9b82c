"""The live window on a virtual X display (Xvfb): it opens with the overlay, and q or Esc quits
cleanly with every output complete. Skips where Xvfb and xdotool are not installed."""
import os
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(
    not (shutil.which("Xvfb") and shutil.which("xdotool")),
    reason="needs Xvfb and xdotool (apt-get install xvfb xdotool)")

from conftest import ROOT


@pytest.fixture
def display():
    num = 90 + os.getpid() % 50
    xvfb = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", "1024x768x24"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    yield f":{num}"
    xvfb.terminate()
    xvfb.wait(5)


def _window(env, timeout=30.0):
    end = time.time() + timeout
    while time.time() < end:
        r = subprocess.run(["xdotool", "search", "--name", "fkp-live"], env=env, capture_output=True, text=True)
        if r.stdout.strip():
            return r.stdout.split()[0]
        time.sleep(0.3)
    return None


@pytest.mark.parametrize("key", ["q", "Escape"])
def test_window_opens_and_key_quits(display, tmp_path, key):
    env = {**os.environ, "DISPLAY": display}
    env.pop("FKP_LIVE_NO_DISPLAY", None)
    csv = tmp_path / "t.csv"
    p = subprocess.Popen([sys.executable, "-m", "fkp_live.cli", "--demo", "--demo-frames", "100000",
                          "--csv", str(csv), "--device", "cpu"], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        win = _window(env)
        assert win, "no fkp-live window appeared"
        end = time.time() + 30  # let it run a while (a slow machine may take seconds to start)
        while time.time() < end and (not csv.exists() or len(csv.read_text().splitlines()) < 30):
            time.sleep(0.2)
        subprocess.run(["xdotool", "key", "--window", win, key], env=env, check=True)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out
    rows = csv.read_text().splitlines()
    assert len(rows) > 10 and len(rows) < 100000, "quit long before the demo's end, CSV complete"
    assert "frames" in out
