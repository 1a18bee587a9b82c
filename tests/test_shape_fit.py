"""The linear shape correction (`fkp-train shape-fit`, `export --shape-correction`): it learns an
error that depends on the face's shape, follows the face's position, size and roll, is the same
inside the ONNX graph (FP32 and INT8) as in numpy, and bad files or options are clear errors."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fkp_live.card import ModelCard
from fkp_live.track.landmarker import Landmarker
from train import export as ex
from train import shape_fit as sf
from train.cli import main as fkp_train

from conftest import DATA, ROOT
from test_export import tiny  # noqa: F401  (the module-scoped tiny checkpoint)

FACE3D = np.array(json.loads((ROOT / "fkp_live" / "analysis" / "face3d_ibug68.json").read_text())["points"])
JAW = slice(0, 17)


def _faces(n, seed):
    """Projected 3-D faces turned by yaw and pitch, then placed at random position, size and roll
    (truth); readings whose jaw slides sideways with the yaw, in the face's own frame, plus noise."""
    rng = np.random.default_rng(seed)
    truth, pred = [], []
    for _ in range(n):
        yaw, pitch = np.radians(rng.uniform(-35, 35)), np.radians(rng.uniform(-15, 15))
        ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
        face = (FACE3D @ (rx @ ry).T)[:, :2]
        err = rng.normal(0, 0.6, face.shape)
        err[JAW, 0] += 12 * np.sin(yaw)  # the systematic part: the jaw read too far towards the turn
        roll, scale = np.radians(rng.uniform(-30, 30)), rng.uniform(0.5, 2.0)
        m = scale * np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
        shift = rng.uniform(-200, 200, 2)
        truth.append(face @ m.T + shift)
        pred.append((face + err) @ m.T + shift)
    return np.array(pred), np.array(truth)


def _err(p, t):
    return float(np.linalg.norm(p - t, axis=-1).mean())


def test_fit_learns_a_shape_dependent_error_and_generalises():
    pred, truth = _faces(400, 0)
    params = sf.fit(pred, truth, ridge=10.0)
    vp, vt = _faces(200, 1)
    before, after = _err(vp, vt), _err(sf.apply(vp, **params), vt)
    assert after < 0.6 * before, (before, after)
    # the jaw's systematic slide is what is taken out; the rest stays about as it was
    assert _err(sf.apply(vp, **params)[:, JAW], vt[:, JAW]) < 0.5 * _err(vp[:, JAW], vt[:, JAW])


def test_the_correction_moves_with_the_face():
    """Correcting a moved, scaled and rolled reading = moving, scaling and rolling the corrected one."""
    pred, truth = _faces(300, 2)
    params = sf.fit(pred, truth, ridge=10.0)
    p = pred[:5]
    a = np.radians(23.0)
    m = 1.7 * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = p @ m.T + np.array([40.0, -15.0])
    np.testing.assert_allclose(sf.apply(moved, **params), sf.apply(p, **params) @ m.T + np.array([40.0, -15.0]),
                               atol=1e-6)
    # and with no weights it changes nothing
    zero = {"mean": params["mean"], "weights": np.zeros_like(params["weights"])}
    np.testing.assert_allclose(sf.apply(p, **zero), p)


def test_the_graph_module_computes_what_numpy_does():
    pred, truth = _faces(300, 3)
    params = sf.fit(pred, truth, ridge=10.0)
    pts = (pred[:6] / 400.0 + 0.5).astype(np.float32)  # as crop fractions

    class Fixed(torch.nn.Module):
        def forward(self, image):
            return torch.as_tensor(pts), torch.zeros(len(pts))

    got, _ = ex.ShapeCorrected(Fixed(), **params)(torch.zeros(1))
    np.testing.assert_allclose(got.numpy(), sf.apply(pts, **params), atol=2e-5)


def _fraction_faces(n, seed):
    """_faces as crop fractions (about 0.1-0.9)."""
    pred, truth = _faces(n, seed)
    c = truth.mean(axis=1, keepdims=True)
    s = np.abs(truth - c).max(axis=(1, 2), keepdims=True) * 2.6
    return (pred - c) / s + 0.5, (truth - c) / s + 0.5


class _FaceShaped(torch.nn.Module):
    """The tiny untrained net's readings (all near the crop's centre) spread out onto a face shape,
    so that a shape correction has something face-like to act on."""

    def __init__(self, net, shape):
        super().__init__()
        self.net = net
        self.register_buffer("shape", torch.as_tensor(shape, dtype=torch.float32))

    def forward(self, image):
        pts, logit = self.net(image)
        return self.shape + 20.0 * (pts - 0.5), logit


def test_export_cli_records_the_correction_and_applies_it(tiny, tmp_path):  # noqa: F811
    d, model, task = tiny
    plain, fixed = tmp_path / "plain.onnx", tmp_path / "fixed.onnx"
    crops = np.random.default_rng(4).integers(0, 256, (6, 64, 64, 1), dtype=np.uint8)
    corr = tmp_path / "c.npz"
    sf.save(corr, sf.fit(*_fraction_faces(300, 4), ridge=10.0), command="test", fitted_on="plain.onnx")
    for out, extra in ((plain, []), (fixed, ["--shape-correction", str(corr)])):
        r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(out)] + extra)
        assert r.exit_code == 0, r.output
    raw, _ = (lm := Landmarker(plain, device="cpu")).run(lm.normalise(crops))
    got, _ = (lm := Landmarker(fixed, device="cpu")).run(lm.normalise(crops))
    params = sf.read(corr, points=68)
    np.testing.assert_allclose(got, sf.apply(raw, params["mean"], params["weights"]), atol=1e-6)
    card = ModelCard.load(fixed.with_suffix(".json"))
    assert card.training["shape_correction"]["file"] == "c.npz"
    assert card.training["shape_correction"]["fitted_on"] == "plain.onnx"
    assert "shape model" in card.description
    assert "shape_correction" not in ModelCard.load(plain.with_suffix(".json")).training


def test_the_correction_in_the_graph_matches_numpy_fp32_and_int8(tiny, tmp_path):  # noqa: F811
    _, model, task = tiny
    rng = np.random.default_rng(5)
    pred, truth = _fraction_faces(300, 5)
    params = sf.fit(pred, truth, ridge=10.0)
    net = _FaceShaped(model, truth[0]).eval()
    plain, fixed = tmp_path / "plain.onnx", tmp_path / "fixed.onnx"
    ex.export_onnx(net, task, plain)
    ex.export_onnx(ex.ShapeCorrected(net, **params), task, fixed)
    crops = rng.integers(0, 256, (6, 64, 64, 1), dtype=np.uint8)
    calib = rng.standard_normal((8, 1, 64, 64)).astype(np.float32)
    for a, b in ((plain, fixed), (ex.quantize_int8(plain, tmp_path / "p8.onnx", calib) or tmp_path / "p8.onnx",
                                  ex.quantize_int8(fixed, tmp_path / "f8.onnx", calib) or tmp_path / "f8.onnx")):
        for p in (a, b):
            ex.make_card(task, p.stem).save(p.with_suffix(".json"))
        raw, _ = (lm := Landmarker(a, device="cpu")).run(lm.normalise(crops))
        got, _ = (lm := Landmarker(b, device="cpu")).run(lm.normalise(crops))
        want = sf.apply(raw, **params)
        assert np.abs(want - raw).max() > 0.005, "the correction moves the points"
        # INT8: the backbone is quantised alike with and without it, and the correction stays float
        np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("body, needle", [
    (None, "no such file"),
    (b"not an npz", "not a shape correction"),
    ("other", "not a shape correction"),
    ("points", "for 5 points, but the model reads 68"),
])
def test_a_bad_correction_file_is_a_clear_error(tiny, tmp_path, body, needle):  # noqa: F811
    d, _, _ = tiny
    f = tmp_path / "c.npz"
    if isinstance(body, bytes):
        f.write_bytes(body)
    elif body == "other":
        np.savez(f, something=np.zeros(3))
    elif body == "points":
        pred, truth = _faces(20, 5)
        sub = [0, 8, 16, 30, 57]
        sf.save(f, sf.fit(pred[:, sub], truth[:, sub], 1.0))
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(out), "--shape-correction", str(f)])
    assert r.exit_code == 2, r.output
    assert "--shape-correction" in r.output and str(f) in r.output and needle in r.output, r.output
    assert not out.exists(), "nothing is written"


def test_fit_refuses_what_it_cannot_fit():
    pred, truth = _faces(50, 6)
    with pytest.raises(sf.ShapeFitError, match="too few"):
        sf.fit(pred, truth, 1.0)
    with pytest.raises(sf.ShapeFitError, match="ridge"):
        sf.fit(pred, truth, 0.0)
    with pytest.raises(sf.ShapeFitError, match="must both be"):
        sf.fit(pred[:, :10], truth, 1.0)


def test_shape_fit_options_and_an_already_corrected_model(tmp_path):
    run = CliRunner().invoke
    r = run(fkp_train, ["shape-fit", "accurate", "--data", str(tmp_path), "--out", str(tmp_path / "c.json")])
    assert r.exit_code == 2 and "--out" in r.output and ".npz" in r.output, r.output
    r = run(fkp_train, ["shape-fit", "accurate", "--data", str(tmp_path), "--out", str(tmp_path / "c.npz"),
                        "--ridge", "0"])
    assert r.exit_code == 2 and "--ridge" in r.output, r.output
    # the shipped `accurate` carries its correction: fitting another on top would not match the export
    assert ModelCard.load(ROOT / "models" / "ibug68-accurate.int8.json").training.get("shape_correction")
    r = run(fkp_train, ["shape-fit", "accurate", "--data", str(tmp_path), "--out", str(tmp_path / "c.npz")])
    assert r.exit_code == 2 and "already applies a shape correction" in r.output, r.output
    assert not (tmp_path / "c.npz").exists()


def test_shape_fit_on_real_faces(tmp_path):
    if not (DATA / "300w").is_dir():
        pytest.skip(f"{DATA / '300w'} not found (shared data is only in CI and dev checkouts)")
    out = tmp_path / "c.npz"
    r = CliRunner().invoke(fkp_train, ["shape-fit", "fast", "--data", str(DATA / "300w"), "--out", str(out),
                                       "--limit", "300"])
    assert r.exit_code == 0, r.output
    c = sf.read(out, points=68)
    assert c["train_faces"] + c["train_missed"] == 300 and c["val_faces"] == 107
    assert c["train_nme_after"] < c["train_nme_before"] - 0.03, c
    assert c["fitted_on"] == "ibug68.int8.onnx" and "--limit 300" in c["command"]


def test_shape_fit_refuses_a_model_of_other_points_and_a_folder_that_is_not_300w(tmp_path):
    run = CliRunner().invoke
    r = run(fkp_train, ["shape-fit", "imm58", "--data", str(tmp_path), "--out", str(tmp_path / "c.npz")])
    assert r.exit_code == 2 and "imm58" in r.output and "68-point" in r.output, r.output
    (tmp_path / "photos").mkdir()
    r = run(fkp_train, ["shape-fit", "fast", "--data", str(tmp_path / "photos"), "--out", str(tmp_path / "c.npz")])
    assert r.exit_code == 2 and "photos" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "c.npz").exists()
