"""`fkp-live bench VIDEO --processes-only`: fkp-live and MediaPipe FaceMesh (and dlib when it and its
model are installed) run as whole processes on the user's clip, alternating; the table and the
ratios are printed and written as JSON. Figures are not asserted (shared, noisy machines)."""
import json
import sys

import pytest
from click.testing import CliRunner

from fkp_live.commands.bench import bench

from conftest import dlib_model_file
from runtime_helpers import demo_frames, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("bench") / "talk.mp4", demo_frames(24)[0])


def _check_table(out, data, programs):
    assert set(data["programs"]) == set(programs)
    assert data["frames"] == 24
    for k, r in data["programs"].items():
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["rss_mib"] > 20 and len(r["wall_runs"]) == 1, (k, r)
        assert r["fps"] == pytest.approx(24 / r["wall_s"], rel=0.01)
    assert set(data["ratios"]) == set(programs) - {"fkp-live"}
    assert data["ratio"] == data["ratios"]["MediaPipe FaceMesh"]
    for k, ratio in data["ratios"].items():
        other = data["programs"][k]
        assert ratio["fps"] == pytest.approx(other["wall_s"] / data["programs"]["fkp-live"]["wall_s"], rel=0.01)
        assert f"fkp-live / {k}:" in out


def test_side_by_side_with_facemesh_writes_its_table(clip, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # as where dlib is not installed
    js = tmp_path / "t.json"
    r = CliRunner().invoke(bench, [str(clip), "--processes-only", "--pairs", "1", "--json", str(js),
                                   "--dlib-model", str(clip)])  # any existing file: dlib itself is missing
    assert r.exit_code == 0, r.output
    assert "dlib is not installed" in r.output
    _check_table(r.output, json.loads(js.read_text()), {"fkp-live", "MediaPipe FaceMesh"})


def test_a_missing_dlib_model_is_named_before_anything_runs(clip, tmp_path):
    r = CliRunner().invoke(bench, [str(clip), "--processes-only", "--pairs", "1",
                                   "--dlib-model", str(tmp_path / "none.dat")])
    assert r.exit_code == 2 and "--dlib-model" in r.output and "none.dat" in r.output, r.output


def test_dlib_joins_the_side_by_side_when_installed(clip, tmp_path):
    model = dlib_model_file()
    js = tmp_path / "t.json"
    r = CliRunner().invoke(bench, [str(clip), "--processes-only", "--pairs", "1", "--json", str(js),
                                   "--dlib-model", str(model)])
    assert r.exit_code == 0, r.output
    _check_table(r.output, json.loads(js.read_text()), {"fkp-live", "MediaPipe FaceMesh", "dlib 68 + HOG"})
