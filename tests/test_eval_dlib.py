"""`fkp-train eval-runtime --dlib-model`: dlib's 68-point predictor scored on the same split and
drawn into the CED when dlib is there, and a clear error (before the long part) when it is not."""
import json
import sys

import pytest
from click.testing import CliRunner

from train.cli import main as fkp_train

from conftest import DATA, dlib_model_file


def test_without_dlib_the_option_is_a_clear_error_at_once(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib raises ImportError
    r = CliRunner().invoke(fkp_train, ["eval-runtime", "fast", "--data", str(tmp_path),
                                       "--dlib-model", str(tmp_path / "x.dat")])
    assert r.exit_code == 2, r.output
    assert "dlib is not installed" in r.output and "pip install" in r.output, r.output
    assert '"model"' not in r.output, "it fails before reading any model"


def test_a_missing_or_wrong_dlib_model_file_is_named(tmp_path):
    pytest.importorskip("dlib", reason="dlib is not installed (pip install dlib-bin)")
    r = CliRunner().invoke(fkp_train, ["eval-runtime", "fast", "--data", str(tmp_path),
                                       "--dlib-model", str(tmp_path / "none.dat")])
    assert r.exit_code == 2 and "none.dat" in r.output and "no such file" in r.output, r.output
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"not a model")
    r = CliRunner().invoke(fkp_train, ["eval-runtime", "fast", "--data", str(tmp_path), "--dlib-model", str(bad)])
    assert r.exit_code == 2 and "bad.dat" in r.output and "not a dlib shape predictor" in r.output, r.output


def test_dlib_is_scored_and_drawn_on_real_faces(tmp_path):
    model = dlib_model_file()
    if not (DATA / "300w").is_dir():
        pytest.skip(f"{DATA / '300w'} not found (shared data is only in CI and dev checkouts)")
    png = tmp_path / "ced.png"
    r = CliRunner().invoke(fkp_train, ["eval-runtime", "fast", "--data", str(DATA / "300w"), "--split", "val",
                                       "--dlib-model", str(model), "--ced", str(png)])
    assert r.exit_code == 0, r.output
    dec, i, outs = json.JSONDecoder(), r.output.index("{"), []
    while i >= 0:
        o, j = dec.raw_decode(r.output, i)
        outs.append(o)
        i = r.output.find("{", j)
    dl = [o for o in outs if o["model"] == "dlib"][0]
    assert dl["faces"] + dl["missed"] == 107 and dl["faces"] > 80
    assert 1.0 < dl["first_frame"]["nme_io"] < 6.0, dl
    assert set(dl["first_frame_regions"]) == {"jaw", "brow", "nose", "eye", "mouth"}
    assert png.stat().st_size > 10_000
