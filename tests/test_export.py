"""Export: ONNX parity through the runtime's wrapper, the card, INT8/FP16, TensorRT's absence,
and clear errors for corrupt or mismatched model files."""
import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tiny_net

from fkp_live.card import ModelCard, ModelError
from fkp_live.track.landmarker import Landmarker
from train import export as ex
from train.cli import main as fkp_train
from train.nets import build_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    task, model = tiny_net.build()
    state = {"model": model.state_dict(), "task": task.to_dict(), "epoch": 0, "val": {}}
    torch.save(state, d / "best.pt")
    return d, model, task


def test_export_parity_through_runtime_wrapper(tiny):
    d, model, task = tiny
    out = d / "tiny.onnx"
    ex.export_onnx(model, task, out)
    card = ex.make_card(task, "tiny")
    card.save(out.with_suffix(".json"))
    crops = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 1), dtype=np.uint8)
    diff = ex.parity(model, out, card, crops)
    assert diff < 0.05
    # dynamic batch: the runtime runs 1 and 7 crops through one file
    lm = Landmarker(out, device="cpu")
    for b in (1, 7):
        pts, conf = lm.run(lm.normalise(np.zeros((b, 64, 64, 1), np.uint8)))
        assert pts.shape == (b, 68, 2) and conf.shape == (b,)
        assert ((conf >= 0) & (conf <= 1)).all()


def test_export_cli_writes_card_and_checks_parity(tiny, tmp_path):
    d, _, _ = tiny
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(out), "--fp16"])
    assert r.exit_code == 0, r.output
    assert "parity: largest torch/ONNX Runtime difference" in r.output
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["schema"] == "ibug68" and card["input_size"] == 64 and card["channels"] == 1
    assert card["metrics"]["parity_max_px"] < 0.05
    assert "research use only" in card["licence"]
    assert "crop" in card["layout"]
    assert (tmp_path / "m.fp16.onnx").exists()
    lm = Landmarker(tmp_path / "m.fp16.onnx", device="cpu")
    pts, _ = lm.run(lm.normalise(np.zeros((2, 64, 64, 1), np.uint8)))
    assert np.isfinite(pts).all()


def test_int8_quantisation_runs_and_stays_close(tiny, tmp_path):
    d, model, task = tiny
    out = tmp_path / "m.onnx"
    ex.export_onnx(model, task, out)
    x = np.random.default_rng(1).standard_normal((16, 1, 64, 64)).astype(np.float32)
    q = tmp_path / "m.int8.onnx"
    ex.quantize_int8(out, q, x)
    import onnxruntime as ort

    a = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x[:4]})[0]
    b = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"image": x[:4]})[0]
    assert np.abs(a - b).max() * 64 < 8, "int8 points stay within a few pixels of fp32"
    assert q.stat().st_size < out.stat().st_size

    # the stem and the first depthwise layer (1 channel per group) stay float: their weights are
    # plain initialisers, every later convolution reads dequantised 8-bit weights
    import onnx

    g = onnx.load(str(q)).graph
    inits = {t.name for t in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    float_w = [n.name for n in convs if n.input[1] in inits]
    assert float_w[:2] == ex.leading_thin_convs(onnx.load(str(out)).graph)
    assert "stem" in float_w[0] and "blocks.0" in float_w[1]
    assert all("/heat" in n for n in float_w[2:]), float_w
    assert len(convs) - len(float_w) > 10, "the rest is 8-bit"


def test_tensorrt_absent_is_a_clear_message(tiny, tmp_path):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    d, _, _ = tiny
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(tmp_path / "t.onnx"), "--tensorrt"])
    assert r.exit_code == 3
    assert "TensorRT is not installed" in r.output
    assert "Traceback" not in r.output
    assert (tmp_path / "t.onnx").exists(), "the ONNX export itself still stands"


def test_corrupt_and_mismatched_models(tiny, tmp_path):
    d, model, task = tiny
    good = tmp_path / "good.onnx"
    ex.export_onnx(model, task, good)
    ex.make_card(task, "good").save(good.with_suffix(".json"))

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage" * 100)
    shutil.copy(good.with_suffix(".json"), corrupt.with_suffix(".json"))
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        Landmarker(corrupt, device="cpu")

    nocard = tmp_path / "nocard.onnx"
    shutil.copy(good, nocard)
    with pytest.raises(ModelError, match="card .*nocard.json is missing"):
        Landmarker(nocard, device="cpu")

    wrong = tmp_path / "wrong.onnx"
    shutil.copy(good, wrong)
    c = ModelCard.load(good.with_suffix(".json"))
    c.input_size = 128
    c.save(wrong.with_suffix(".json"))
    with pytest.raises(ModelError, match="card says .*does not belong"):
        Landmarker(wrong, device="cpu")

    unknown = tmp_path / "unknown.onnx"
    shutil.copy(good, unknown)
    dd = json.loads(good.with_suffix(".json").read_text())
    dd["schema"] = "ibug99"
    unknown.with_suffix(".json").write_text(json.dumps(dd))
    with pytest.raises(ModelError, match="unknown keypoint schema 'ibug99'"):
        Landmarker(unknown, device="cpu")

    badjson = tmp_path / "badjson.onnx"
    shutil.copy(good, badjson)
    badjson.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        Landmarker(badjson, device="cpu")

    with pytest.raises(ModelError, match="no model named 'nosuch'"):
        Landmarker("nosuch", device="cpu")


def test_cuda_request_without_gpu_falls_back_loudly(tiny, tmp_path, caplog):
    from fkp_live.track.landmarker import DeviceError, gpu_driver_present

    if gpu_driver_present():
        pytest.skip("a GPU driver is present")
    d, model, task = tiny
    p = tmp_path / "m.onnx"
    ex.export_onnx(model, task, p)
    ex.make_card(task, "m").save(p.with_suffix(".json"))
    import logging

    with caplog.at_level(logging.WARNING, logger="fkp_live"):
        lm = Landmarker(p, device="cuda")
    # it runs, says which provider it really got, and warns loudly that it fell back
    assert lm.device == "cpu" and lm.provider == "CPUExecutionProvider" and lm.requested_device == "cuda"
    assert "cuda device was asked for" in caplog.text and "CPUExecutionProvider" in caplog.text
    assert Landmarker(p, device="auto").device == "cpu"
    with pytest.raises(DeviceError, match="must be auto, cpu, cuda or tensorrt"):
        Landmarker(p, device="gpu")


def test_card_records_the_whole_fine_tuning_chain(tmp_path, monkeypatch):
    """A run started with --init records the command of the run it started from, then its own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/base").mkdir(parents=True)
    (tmp_path / "runs/ft").mkdir(parents=True)
    base = ["fkp-train", "fit", "--task", "ibug68", "--data", "d", "--out", "runs/base"]
    ft = ["fkp-train", "fit", "--task", "ibug68", "--data", "d", "--out", "runs/ft",
          "--init", "runs/base/best.pt", "--augment", '{"noise": 0.1}']
    (tmp_path / "runs/base/task.json").write_text(json.dumps({"argv": base, "data": "d"}))
    (tmp_path / "runs/ft/task.json").write_text(json.dumps({"argv": ft, "data": "d", "init": "runs/base/best.pt"}))
    cmd, data = ex.read_training_command(tmp_path / "runs/ft")
    first, second = cmd.split(" && ")
    assert first == "fkp-train fit --task ibug68 --data d --out runs/base"
    assert second.endswith("--init runs/base/best.pt --augment '{\"noise\": 0.1}'"), "JSON stays one shell word"
    assert data == "d"


def test_flip_averaged_export_is_mirror_consistent(tiny, tmp_path):
    """The flip-averaged graph predicts a mirrored crop's points as the mirror of the crop's points
    (exactly, by construction), through ONNX Runtime, in FP32 and in INT8 with the averaging in float.
    Mirroring follows training's flip: pixel column j (fraction j/64) goes to 63-j."""
    from fkp_live.schemas import IBUG68

    d, model, task = tiny
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(tmp_path / "f.onnx"),
                                       "--flip-average"])
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "f.json").read_text())
    assert "mirror image" in card["description"]
    x = np.random.default_rng(2).standard_normal((16, 1, 64, 64)).astype(np.float32)
    ex.quantize_int8(tmp_path / "f.onnx", tmp_path / "f.int8.onnx", x)
    shutil.copy(tmp_path / "f.json", tmp_path / "f.int8.json")
    crops = np.random.default_rng(3).integers(0, 256, (3, 64, 64, 1), dtype=np.uint8)
    perm = IBUG68.mirror_array()
    for name in ("f", "f.int8"):
        lm = Landmarker(tmp_path / f"{name}.onnx", device="cpu")
        pts, conf = lm.run(lm.normalise(crops))
        mpts, mconf = lm.run(lm.normalise(crops[:, :, ::-1].copy()))
        back = mpts[:, perm].copy()
        back[..., 0] = 63 / 64 - back[..., 0]
        assert np.abs(back - pts).max() * 64 < 1e-3, name
        assert np.allclose(conf, mconf, atol=1e-5)
    # the plain (unaveraged) net is not mirror-consistent, so the test above can fail
    plain = tmp_path / "p.onnx"
    ex.export_onnx(model, task, plain)
    shutil.copy(tmp_path / "f.json", tmp_path / "p.json")
    lm = Landmarker(plain, device="cpu")
    pts = lm.run(lm.normalise(crops))[0]
    mpts = lm.run(lm.normalise(crops[:, :, ::-1].copy()))[0][:, perm]
    mpts[..., 0] = 63 / 64 - mpts[..., 0]
    assert np.abs(mpts - pts).max() * 64 > 0.01


def test_ensemble_export_averages_its_nets_and_refuses_mismatched_ones(tiny, tmp_path):
    """`--ensemble B.pt`: one graph whose points are the mean of both nets' points (checked against
    the two single exports through ONNX Runtime); a net of another input size is refused, exit 2."""
    d, _, task = tiny
    torch.manual_seed(1)
    other = build_model(task).eval()
    with torch.no_grad():
        other.heat.weight.normal_(0, 50.0)  # peaked heatmaps: points away from the centre
    b = tmp_path / "b"
    b.mkdir()
    torch.save({"model": other.state_dict(), "task": task.to_dict(), "epoch": 0, "val": {}}, b / "best.pt")
    for name, extra in (("a", []), ("b", None), ("ab", ["--ensemble", str(b / "best.pt")])):
        ck = str(b / "best.pt") if extra is None else str(d / "best.pt")
        r = CliRunner().invoke(fkp_train, ["export", ck, "--out", str(tmp_path / f"{name}.onnx"), *(extra or [])])
        assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "ab.json").read_text())
    assert "mean of 2 such nets" in card["description"]
    crops = np.random.default_rng(4).integers(0, 256, (3, 64, 64, 1), dtype=np.uint8)
    got = {}
    for name in ("a", "b", "ab"):
        lm = Landmarker(tmp_path / f"{name}.onnx", device="cpu")
        got[name] = lm.run(lm.normalise(crops))[0]
    assert np.abs(got["a"] - got["b"]).max() * 64 > 0.05  # two different nets
    assert np.abs((got["a"] + got["b"]) / 2 - got["ab"]).max() * 64 < 1e-3
    # a net of another input size reads the crop resized inside the graph; one that reads
    # another crop (here a wider one) is refused, exit 2
    big = tmp_path / "big"
    big.mkdir()
    t2 = task.with_(size=(96, 96))
    torch.save({"model": build_model(t2).state_dict(), "task": t2.to_dict(), "epoch": 0, "val": {}}, big / "best.pt")
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(tmp_path / "x.onnx"),
                                       "--ensemble", str(big / "best.pt")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "x.json").read_text())["input_size"] == 64
    wide = tmp_path / "wide"
    wide.mkdir()
    t3 = task.with_(crop_scale=task.crop_scale * 1.2)
    torch.save({"model": build_model(t3).state_dict(), "task": t3.to_dict(), "epoch": 0, "val": {}}, wide / "best.pt")
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(tmp_path / "y.onnx"),
                                       "--ensemble", str(wide / "best.pt")])
    assert r.exit_code == 2, r.output
    assert "crop_scale" in r.output and str(wide / "best.pt") in r.output and not (tmp_path / "y.onnx").exists()


def test_a_net_of_another_size_reads_the_resized_crop_on_the_same_grid():
    """`Resized`: a net trained at 128 px in a 160 px ensemble. A net that reads a bright spot's
    centre of mass (pixel j at fraction j / size) must find the spot where it is in the 160 px
    crop; without the half-pixel grid correction it would be 0.125 px off."""
    class CentreOfMass(torch.nn.Module):
        def forward(self, x):
            n = x.shape[-1]
            ys, xs = torch.meshgrid(torch.arange(n) / n, torch.arange(n) / n, indexing="ij")
            w = x[:, 0]
            c = torch.stack([(w * xs).sum(dim=(1, 2)), (w * ys).sum(dim=(1, 2))], -1) / w.sum(dim=(1, 2))[:, None]
            return c[:, None, :], torch.zeros(x.shape[0])

    ys, xs = np.mgrid[0:160, 0:160].astype(np.float32)
    spot = np.exp(-(((xs - 70.0) ** 2 + (ys - 91.3) ** 2) / 60.0))
    x = torch.tensor(spot)[None, None]
    plain = CentreOfMass()(x)[0][0, 0].numpy() * 160
    np.testing.assert_allclose(plain, [70.0, 91.3], atol=1e-3)
    resized = ex.Resized(CentreOfMass(), 128, 160)
    got = resized(x)[0][0, 0].numpy() * 160
    np.testing.assert_allclose(got, [70.0, 91.3], atol=0.02)
    resized.offset = 0.0
    assert np.abs(resized(x)[0][0, 0].numpy() * 160 - [70.0, 91.3]).min() > 0.1


def test_export_fails_and_removes_the_file_when_parity_is_over_the_limit(tiny, tmp_path):
    """The parity check is a gate: over --tolerance, exit 1 with the measured difference, no file left."""
    d, _, _ = tiny
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(out), "--tolerance", "-1"])
    assert r.exit_code == 1, r.output
    assert "parity check failed" in r.output and "export removed" in r.output
    assert not out.exists()


def test_int8_and_fp16_cards_share_nothing_with_the_fp32_card(tiny):
    """Each variant card is its own copy: changing one card's metrics (or any dict) changes no other."""
    _, _, task = tiny
    card = ex.make_card(task, "m", box_calibration={"haar": [0.0, 0.1, 1.2]})
    card.metrics = {"parity_max_px": 0.001, "fp32": {"nme_io": 4.0}, "latency_ms_cpu_1thread": {"batch1": 1.0}}
    q, h = ex.card_variant(card, "m.int8"), ex.card_variant(card, "m.fp16")
    assert (q.name, h.name, card.name) == ("m.int8", "m.fp16", "m")
    assert q.metrics == card.metrics == h.metrics
    q.metrics["int8"] = {"nme_io": 4.1}
    q.metrics["fp32"]["nme_io"] = 99.0
    h.metrics["latency_ms_cpu_1thread"]["batch1"] = 0.5
    h.box_calibration["haar"][2] = 9.0
    h.training["command"] = "changed"
    assert card.metrics == {"parity_max_px": 0.001, "fp32": {"nme_io": 4.0}, "latency_ms_cpu_1thread": {"batch1": 1.0}}
    assert "int8" not in h.metrics and h.metrics["fp32"]["nme_io"] == 4.0
    assert q.metrics["latency_ms_cpu_1thread"]["batch1"] == 1.0
    assert card.box_calibration == q.box_calibration == {"haar": [0.0, 0.1, 1.2]}
    assert card.training["command"] == q.training["command"] == ""


def test_export_saves_a_separate_fp16_card(tiny, tmp_path, monkeypatch):
    """Through the whole export: the card objects saved for NAME and NAME.fp16 share no metrics dict."""
    d, _, _ = tiny
    saved = {}
    real_save = ModelCard.save
    monkeypatch.setattr(ModelCard, "save", lambda self, path: (saved.setdefault(self.name, self), real_save(self, path)))
    ex.export_checkpoint(d / "best.pt", tmp_path / "m.onnx", fp16=True, echo=lambda *a, **k: None)
    fp32, fp16 = saved["m"], saved["m.fp16"]
    assert fp16.metrics == fp32.metrics and fp16.metrics is not fp32.metrics
    fp16.metrics["latency_ms_cpu_1thread"]["batch1"] = -1
    assert fp32.metrics["latency_ms_cpu_1thread"]["batch1"] > 0
    on_disk = json.loads((tmp_path / "m.fp16.json").read_text())
    assert on_disk["name"] == "m.fp16" and on_disk["metrics"] == json.loads((tmp_path / "m.json").read_text())["metrics"]


@pytest.mark.parametrize("body, needle", [
    ("{not json", "not valid JSON"),
    ('["blazeface", 1]', "expected a JSON object"),
    ('{"blazeface": [0.1, 0.2]}', "detector 'blazeface'"),
    ('{"haar": [0.1, 0.2, 0]}', "scale > 0"),
    ('{"haar": [0.1, "x", 1.3]}', "detector 'haar'"),
    (b"\xff\xfe\x00bad", "cannot read"),
])
def test_a_bad_calibration_file_is_a_clear_error(tiny, tmp_path, body, needle):
    d, _, _ = tiny
    cal = tmp_path / "cal.json"
    cal.write_bytes(body if isinstance(body, bytes) else body.encode())
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(out), "--calibration", str(cal)])
    assert r.exit_code == 2, r.output
    assert str(cal) in r.output and needle in r.output, r.output
    assert "Traceback" not in r.output
    assert not out.exists(), "nothing is written when the calibration cannot be read"


def test_calibration_goes_into_the_card_and_is_kept_on_re_export(tiny, tmp_path):
    d, _, _ = tiny
    cal = tmp_path / "cal.json"
    cal.write_text('{"blazeface": [0.01, 0.12, 1.5], "haar": [0, 0.1, 1]}\n')
    out = tmp_path / "m.onnx"
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(out), "--calibration", str(cal)])
    assert r.exit_code == 0, r.output
    want = {"blazeface": [0.01, 0.12, 1.5], "haar": [0, 0.1, 1]}
    assert json.loads(out.with_suffix(".json").read_text())["box_calibration"] == want
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.with_suffix(".json").read_text())["box_calibration"] == want


def test_a_corrupt_existing_card_is_an_error_not_a_lost_calibration(tiny, tmp_path):
    """Re-exporting over a card that cannot be read stops (naming it) instead of silently
    writing a card without the detector calibration."""
    d, _, _ = tiny
    out = tmp_path / "m.onnx"
    out.with_suffix(".json").write_text("{broken")
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert str(out.with_suffix(".json")) in r.output and "box calibration" in r.output
    assert not out.exists()
    assert out.with_suffix(".json").read_text() == "{broken"


def test_export_argument_errors_name_the_flags(tiny, tmp_path):
    d, _, _ = tiny
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(tmp_path / "m.pb")])
    assert r.exit_code == 2 and "--out" in r.output and "must end in .onnx" in r.output
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(tmp_path / "m.onnx"), "--int8"])
    assert r.exit_code == 2 and "--int8 needs --data" in r.output
    assert not (tmp_path / "m.onnx").exists()
    # below the CLI the same mistakes name no flag
    with pytest.raises(ex.ExportError) as e:
        ex.export_checkpoint(d / "best.pt", tmp_path / "m.onnx", int8=True)
    assert "--" not in str(e.value)


def test_flip_averaging_keeps_a_flip_shift_nets_left_right_offset(tiny, tmp_path):
    """A net trained with flip_shift b reads labels b x IOD right of the mirror-symmetric place; its
    mirror-averaged graph moves the mirrored reading back by 2b x IOD, as training's flip did.
    Checked through ONNX Runtime on a net whose answer is a fixed face (whatever the crop), so the
    expected output is known exactly."""
    from fkp_live.schemas import IBUG68

    d, _, task = tiny
    rng = np.random.default_rng(6)
    face = torch.tensor(rng.uniform(0.2, 0.8, (68, 2)), dtype=torch.float32)

    class FixedFace(torch.nn.Module):
        def forward(self, x):
            b = x.shape[0]
            return face.expand(b, 68, 2) + 0 * x.mean(), torch.zeros(b)

    b_shift = 0.05
    graph = ex.FlipAverage(FixedFace(), IBUG68.mirror_array(), 64, b_shift, IBUG68.ocular)
    ex.export_onnx(graph, task, tmp_path / "s.onnx")
    ex.make_card(task, "s").save(tmp_path / "s.json")
    lm = Landmarker(tmp_path / "s.onnx", device="cpu")
    got = lm.run(lm.normalise(rng.integers(0, 256, (2, 64, 64, 1), dtype=np.uint8)))[0]
    p = face.numpy()
    back = p[IBUG68.mirror_array()].copy()
    back[:, 0] = 63 / 64 - back[:, 0]
    e = IBUG68.ocular_points(back)
    back[:, 0] += 2 * b_shift * np.linalg.norm(e[1] - e[0])
    for pts in got:
        np.testing.assert_allclose(pts, (p + back) / 2, atol=1e-5)
    plain = ex.FlipAverage(FixedFace(), IBUG68.mirror_array(), 64)  # b = 0: the plain mirror
    np.testing.assert_allclose(plain(torch.zeros(1, 1, 64, 64))[0][0].numpy()[:, 0],
                               (p[:, 0] + 63 / 64 - p[IBUG68.mirror_array(), 0]) / 2, atol=1e-6)
    run = tmp_path / "run"
    run.mkdir()
    shifted = task.with_(augment={**task.augment, "flip_shift": b_shift})
    torch.save({"model": build_model(shifted).state_dict(), "task": shifted.to_dict(), "epoch": 0, "val": {}},
               run / "best.pt")
    # an ensemble of nets trained with different flip_shift cannot be mirror-averaged as one
    r = CliRunner().invoke(fkp_train, ["export", str(run / "best.pt"), "--out", str(tmp_path / "x.onnx"),
                                       "--flip-average", "--ensemble", str(d / "best.pt")])
    assert r.exit_code == 2 and "flip_shift" in r.output, r.output


def test_shift_averaging_moves_each_reading_back_by_its_shift(tiny, tmp_path):
    """`--shift-average d`: the crop is read moved by (+d, +d) and (-d, -d) pixels and the two
    readings, moved back, averaged. A net that reads a bright spot's centre of mass (it moves
    with the picture) must come out where the plain net reads it, through ONNX Runtime; a reading
    not moved back would be d/64 off."""
    d, _, task = tiny
    ys, xs = np.mgrid[0:64, 0:64].astype(np.float32)
    grid = torch.tensor(np.stack([xs, ys]) / 64.0)  # pixel j at fraction j/64

    class CentreOfMass(torch.nn.Module):
        def forward(self, x):
            w = torch.relu(x[:, 0] - x.amin(dim=(2, 3))[:, 0, None, None])  # (B, 64, 64), border 0
            c = (w[:, None] * grid).sum(dim=(2, 3)) / w.sum(dim=(1, 2))[:, None]  # (B, 2)
            return c[:, None, :].expand(-1, 68, 2), torch.zeros(x.shape[0])

    spot = np.exp(-(((xs - 22.3) ** 2 + (ys - 37.6) ** 2) / 18.0))
    crops = (255 * spot)[None, :, :, None].round().astype(np.uint8)
    results = {}
    for name, graph in (("plain", CentreOfMass()), ("shifted", ex.ShiftAverage(CentreOfMass(), 5, 64))):
        ex.export_onnx(graph, task, tmp_path / f"{name}.onnx")
        ex.make_card(task, name).save(tmp_path / f"{name}.json")
        lm = Landmarker(tmp_path / f"{name}.onnx", device="cpu")
        results[name] = lm.run(lm.normalise(crops))[0][0, 0]
    assert np.abs(results["plain"] * 64 - [22.3, 37.6]).max() < 0.1
    np.testing.assert_allclose(results["shifted"], results["plain"], atol=1e-4)
    # one view alone, not moved back, reads the spot 5 px away: the test can tell
    one = ex.ShiftAverage(CentreOfMass(), 5, 64)
    one.moves.zero_()
    got = one(torch.tensor(crops.transpose(0, 3, 1, 2), dtype=torch.float32))[0][0, 0].numpy()
    assert np.allclose(got, results["plain"], atol=1e-4)  # +5 and -5 cancel in the mean ...
    one.shifts = [(5, 5)]
    one.moves = torch.zeros(1, 2)
    got = one(torch.tensor(crops.transpose(0, 3, 1, 2), dtype=torch.float32))[0][0, 0].numpy()
    assert np.abs(got - results["plain"] - 5 / 64).max() < 1e-3  # ... but each view is 5 px off
    # the crossed reading (X): the crop moved by +5 px and its mirror image made from the crop
    # moved by -5 px; a centre of mass is mirror-symmetric, so it too must read where the plain net does
    crossed = ex.FlipAverage(CentreOfMass(), np.arange(68), 64, offset=5)
    ex.export_onnx(crossed, task, tmp_path / "crossed.onnx")
    ex.make_card(task, "crossed").save(tmp_path / "crossed.json")
    lm = Landmarker(tmp_path / "crossed.onnx", device="cpu")
    np.testing.assert_allclose(lm.run(lm.normalise(crops))[0][0, 0], results["plain"], atol=1e-4)
    x = torch.tensor(crops.transpose(0, 3, 1, 2), dtype=torch.float32)
    with torch.no_grad():
        views = torch.cat([x, torch.flip(x, dims=[3])])
        moved = torch.nn.functional.pad(x, (5, 5, 5, 5), mode="replicate")
        seen = []  # what the wrapped net is shown: the views moved +5 and (mirrored) -5 px
        class Spy(CentreOfMass):
            def forward(self, v):
                seen.append(v)
                return super().forward(v)
        ex.FlipAverage(Spy(), np.arange(68), 64, offset=5)(x)
    assert torch.equal(seen[0][:1], moved[:, :, :64, :64]) and torch.equal(seen[0][1:], torch.flip(moved[:, :, 10:74, 10:74], dims=[3]))
    assert not torch.equal(seen[0], views)
    with pytest.raises(ex.ExportError, match="crossed reading"):
        ex.FlipAverage(CentreOfMass(), np.arange(68), 64, offset=16)
    # the CLI: flip and shift averaging together, recorded in the card; 0 and too large refused
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(tmp_path / "fs.onnx"),
                                       "--flip-average", "--shift-average", "3"])
    assert r.exit_code == 0, r.output
    desc = json.loads((tmp_path / "fs.json").read_text())["description"]
    assert "mirror image" in desc and "+-3 px" in desc
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(tmp_path / "x2.onnx"),
                                       "--readings", "X", "--shift-average", "2"])
    assert r.exit_code == 0, r.output
    desc = json.loads((tmp_path / "x2.json").read_text())["description"]
    assert "moved by +2 px on the diagonal and with the mirror image of it moved by -2 px" in desc
    r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--out", str(tmp_path / "x.onnx"),
                                       "--shift-average", "20"])
    assert r.exit_code != 0 and "shift average" in r.output and not (tmp_path / "x.onnx").exists()


def test_readings_choose_what_each_net_reads_weighted_by_their_readings(tiny, tmp_path):
    """`--ensemble B.pt --readings F,P`: the first net read plain and mirrored, the second plain,
    the three readings averaged (2:1 between the nets), through ONNX Runtime; bad specs refused
    with the option named, exit 2."""
    d, _, task = tiny
    torch.manual_seed(5)
    other = build_model(task).eval()
    with torch.no_grad():
        other.heat.weight.normal_(0, 50.0)
    b = tmp_path / "b"
    b.mkdir()
    torch.save({"model": other.state_dict(), "task": task.to_dict(), "epoch": 0, "val": {}}, b / "best.pt")
    runs = {"aF": [str(d / "best.pt"), "--flip-average"], "b": [str(b / "best.pt")],
            "mix": [str(d / "best.pt"), "--ensemble", str(b / "best.pt"), "--readings", "F,P"]}
    for name, args in runs.items():
        r = CliRunner().invoke(fkp_train, ["export", *args, "--out", str(tmp_path / f"{name}.onnx")])
        assert r.exit_code == 0, r.output
    desc = json.loads((tmp_path / "mix.json").read_text())["description"]
    assert "net 1 reads each crop with its mirror image" in desc and "net 2 reads each crop plain" in desc
    crops = np.random.default_rng(6).integers(0, 256, (3, 64, 64, 1), dtype=np.uint8)
    got = {}
    for name in runs:
        lm = Landmarker(tmp_path / f"{name}.onnx", device="cpu")
        got[name] = lm.run(lm.normalise(crops))[0]
    assert np.abs(got["aF"] - got["b"]).max() * 64 > 0.05
    np.testing.assert_allclose(got["mix"], (2 * got["aF"] + got["b"]) / 3, atol=2e-5)
    for args, words in ((["--readings", "F"], "1 given for 2 nets"), (["--readings", "F,Q"], "unknown reading 'Q'"),
                        (["--readings", "S,P"], "--shift-average"), (["--readings", "X,P"], "--shift-average"),
                        (["--readings", "F,P", "--flip-average"], "leave out --flip-average")):
        r = CliRunner().invoke(fkp_train, ["export", str(d / "best.pt"), "--ensemble", str(b / "best.pt"),
                                           "--out", str(tmp_path / "bad.onnx"), *args])
        assert r.exit_code == 2, r.output
        assert words in r.output
        assert not (tmp_path / "bad.onnx").exists()
