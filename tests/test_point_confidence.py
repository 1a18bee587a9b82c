"""Per-point confidence: the output `train.point_confidence` adds to a heatmap graph leaves its
points and presence as they were, reaches `Face.point_confidence` and the live messages, is a
clear error where the model has none, and scores occluded points lower than visible ones."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import DATA, ROOT, SHIPPED, needs_data, needs_shipped_model
from fkp_live.card import ModelError
from fkp_live.track.landmarker import POINT_CONFIDENCE, Landmarker

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'fkp-live[dev]')")

from train.occlusion import auc, measure  # noqa: E402
from train.point_confidence import PointConfidenceError, add_point_confidence, main  # noqa: E402


@pytest.fixture(scope="module")
def pc_model(tmp_path_factory):
    if not SHIPPED.exists():
        pytest.skip("the shipped model is not there")
    out = tmp_path_factory.mktemp("pc") / "fast-pc.onnx"
    import onnx

    if any(o.name == POINT_CONFIDENCE for o in onnx.load(str(SHIPPED)).graph.output):  # the shipped files carry it
        shutil.copy(SHIPPED, out)
        shutil.copy(SHIPPED.with_suffix(".json"), out.with_suffix(".json"))
    else:
        assert main([str(SHIPPED), str(out)]) == 0
    return out


def test_auc_is_the_rank_probability():
    rng = np.random.default_rng(1)
    s = rng.normal(size=300).round(1)  # ties on purpose
    hidden = rng.random(300) < 0.3
    vis, hid = s[~hidden], s[hidden]
    brute = ((vis[:, None] > hid[None]).sum() + 0.5 * (vis[:, None] == hid[None]).sum()) / (len(vis) * len(hid))
    assert auc(s, hidden) == pytest.approx(brute)
    assert auc([2, 3, 0, 1], [False, False, True, True]) == 1.0


@needs_shipped_model
def test_the_added_output_leaves_points_and_presence_unchanged(tmp_path):
    import onnx

    # the shipped file without its confidence output, then with it added again
    m = onnx.load(str(SHIPPED))
    def ours(name):
        return name == POINT_CONFIDENCE or name.startswith(POINT_CONFIDENCE + "/")

    g = m.graph
    for field in (g.output, g.node, g.initializer):
        keep = [x for x in field if not (ours(x.name) or any(ours(o) for o in getattr(x, "output", [])))]
        del field[:]
        field.extend(keep)
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    shutil.copy(SHIPPED.with_suffix(".json"), bare.with_suffix(".json"))
    again = tmp_path / "again.onnx"
    assert main([str(bare), str(again)]) == 0
    plain = Landmarker(bare, device="cpu")
    withpc = Landmarker(again, device="cpu", point_confidence=True)
    x = np.random.default_rng(0).standard_normal((3, 1, plain.size, plain.size)).astype(np.float32)
    p1, c1 = plain.run(x)
    p2, c2, pc = withpc.run_all(x)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(c1, c2)
    assert pc.shape == (3, 68) and pc.dtype == np.float32
    assert (pc >= 0).all() and (pc <= 1).all()
    assert plain.run_all(x)[2] is None  # not asked for: not read
    # the shipped file gives the same points and confidence
    p3, c3, pc3 = Landmarker(SHIPPED, device="cpu", point_confidence=True).run_all(x)
    np.testing.assert_array_equal(p1, p3)
    np.testing.assert_allclose(pc, pc3, atol=1e-6)
    card = json.loads(again.with_suffix(".json").read_text())
    assert card["name"] == "again"


@needs_shipped_model
def test_a_model_without_the_output_is_a_clear_error(model_path):
    with pytest.raises(ModelError, match=f"no per-point confidence.*{POINT_CONFIDENCE}.*train.point_confidence"):
        Landmarker(model_path, device="cpu", point_confidence=True)


def test_a_graph_without_heatmaps_or_with_the_output_is_refused(model_path, tmp_path, pc_model):
    with pytest.raises(PointConfidenceError, match="no heatmap softmax"):
        add_point_confidence(model_path, tmp_path / "x.onnx", 68)
    with pytest.raises(PointConfidenceError, match="already"):
        add_point_confidence(pc_model, tmp_path / "y.onnx", 68)
    assert main([str(pc_model), str(pc_model)]) == 2


@needs_shipped_model
def test_every_shipped_68_point_variant_gives_the_confidence(tmp_path):
    """FP32, INT8 and FP16 (whose softmax runs in float16), the mirror-averaged `accurate` too."""
    names = [p.name for p in sorted((ROOT / "models").glob("ibug68*.onnx"))]
    assert len(names) >= 6
    for name in names:
        lm = Landmarker(ROOT / "models" / name, device="cpu", point_confidence=True)
        x = np.zeros((2, 1, lm.size, lm.size), np.float32)
        assert lm.run_all(x)[2].shape == (2, 68)


@needs_shipped_model
def test_faces_and_live_messages_carry_the_confidence(pc_model):
    from fkp_live import Tracker, run
    from fkp_live.io.send import record, snapshot
    from fkp_live.io.sinks import Sink
    from fkp_live.io.sources import DemoSource

    seen = []

    class Keep(Sink):
        def write(self, frame, faces):
            seen.append(record(snapshot(frame, faces)))

    with DemoSource(frames=5) as src, Tracker(pc_model, device="cpu", point_confidence=True) as t:
        run(src, t, [Keep()])
    pcs = [f["point_confidence"] for m in seen for f in m["faces"]]
    assert len(pcs) == 5 and all(len(p) == 68 for p in pcs)
    # the demo's face is clear: most of its points are read with a sharp heatmap
    assert np.median(pcs) > 0.4


@needs_data
@needs_shipped_model
def test_occluded_points_score_lower_than_visible_ones(pc_model):
    res = measure(str(pc_model), str(DATA / "300w"), "test", repeats=1, limit=80)
    assert res["hidden_points"] > 500 and res["visible_points"] > 1500
    assert res["mean_hidden"] < res["mean_visible"] < res["mean_clear"] + 0.02
    assert res["auc"] > 0.7
    assert res["auc_hidden_vs_same_points_clear"] > 0.85


def _torch_confidence(model, x, sigma=0.05):
    """The confidence computed in torch from the net's own heatmaps, as the module doc defines it."""
    import torch

    maps = []
    hook = model.decode.register_forward_pre_hook(lambda m, args: maps.append(args[0]))
    with torch.no_grad():
        model(torch.from_numpy(x))
    hook.remove()
    hm = maps[0]
    b, n, h, w = hm.shape
    p = torch.softmax(hm.reshape(b, n, h * w) * model.decode.beta, dim=-1).reshape(b, n, h, w)
    xs = ((torch.arange(w) + 0.5) / w).double()
    ys = ((torch.arange(h) + 0.5) / h).double()
    px, py = p.sum(2).double(), p.sum(3).double()  # the marginals over x and over y
    var = ((px * xs ** 2).sum(-1) - (px * xs).sum(-1) ** 2) + ((py * ys ** 2).sum(-1) - (py * ys).sum(-1) ** 2)
    return (1.0 / (1.0 + var / (2 * sigma ** 2))).numpy()


def test_export_option_matches_the_heatmaps_in_torch_plain_and_mirror_averaged(tmp_path):
    import torch
    from click.testing import CliRunner

    import tiny_net
    from train.cli import main as fkp_train

    task, model = tiny_net.build()
    with torch.no_grad():  # sharper heatmaps than a fresh net's near-uniform ones
        model.heat.weight.mul_(300.0)
    torch.save({"model": model.state_dict(), "task": task.to_dict(), "epoch": 0, "val": {}}, tmp_path / "best.pt")
    x = np.random.default_rng(4).standard_normal((3, 1, 64, 64)).astype(np.float32)
    want = _torch_confidence(model, x)
    assert want.std() > 0.003  # the crops differ, so does the confidence
    for extra in ([], ["--flip-average"]):
        out = tmp_path / f"m{len(extra)}.onnx"
        r = CliRunner().invoke(fkp_train, ["export", str(tmp_path / "best.pt"), "--out", str(out),
                                           "--point-confidence", *extra])
        assert r.exit_code == 0, r.output
        lm = Landmarker(out, device="cpu", point_confidence=True)
        _, _, pc = lm.run_all(x)
        # the mirror-averaged graph reads the confidence from the unmirrored crop's heatmaps
        np.testing.assert_allclose(pc, want, atol=1e-5)
    r = CliRunner().invoke(fkp_train, ["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "n.onnx")])
    with pytest.raises(ModelError):
        Landmarker(tmp_path / "n.onnx", device="cpu", point_confidence=True)


@needs_shipped_model
def test_cli_writes_c_columns_and_refuses_a_model_without_the_output(pc_model, model_path, tmp_path):
    import csv

    from click.testing import CliRunner

    from fkp_live.commands.run import run as cli

    def invoke(*args):
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        return r.exit_code, r.output

    code, out = invoke("--demo", "--demo-frames", 3, "--no-display", "--model", model_path, "--point-confidence",
                       "--csv", tmp_path / "n.csv")
    assert code == 2 and "gives no per-point confidence" in out and "python -m train.point_confidence" in out
    code, out = invoke("--demo", "--demo-frames", 4, "--no-display", "--model", pc_model, "--point-confidence",
                       "--analysis", "pose", "--csv", tmp_path / "a.csv", "--jsonl", tmp_path / "a.jsonl")
    assert code == 0, out
    rows = list(csv.DictReader(open(tmp_path / "a.csv")))
    header = list(rows[0])
    assert header.index("c_0") == header.index("y_67") + 1 and header.index("pose_Tx") == header.index("c_67") + 1
    c = np.array([[float(r[f"c_{i}"]) for i in range(68)] for r in rows])
    assert c.shape == (4, 68) and ((c > 0) & (c <= 1)).all()
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([f["point_confidence"] for x in lines for f in x["faces"]], c, atol=6e-4)
    # without the flag the columns are not there
    code, out = invoke("--demo", "--demo-frames", 2, "--no-display", "--model", pc_model, "--csv", tmp_path / "b.csv")
    assert code == 0 and "c_0" not in (tmp_path / "b.csv").read_text().splitlines()[0]


def test_csv_rows_without_a_face_keep_the_columns(tmp_path):
    from fkp_live.frame import Frame
    from fkp_live.io.text import CsvSink

    with CsvSink(tmp_path / "e.csv", 68, analysis=["eyes"], point_confidence=True) as sink:
        sink.write(Frame(0, 0.0, np.zeros((8, 8, 3), np.uint8)), [])
    head, row = (tmp_path / "e.csv").read_text().splitlines()
    assert len(row.split(",")) == len(head.split(",")) == 5 + 3 * 68 + 3  # ear_l, ear_r, blink


@needs_shipped_model
def test_many_videos_carry_the_c_columns(pc_model, tmp_path):
    from click.testing import CliRunner

    from fkp_live.commands.run import run as cli
    from fkp_live.io.sources import DemoSource
    from runtime_helpers import write_video

    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "a.mp4", [f.image for f in DemoSource(frames=6)])
    r = CliRunner().invoke(cli, ["--videos", str(tmp_path / "in"), "--out-dir", str(tmp_path / "out"),
                                 "--model", str(pc_model), "--point-confidence"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    head, *rows = (tmp_path / "out" / "a.csv").read_text().splitlines()
    assert head.split(",")[-68:] == [f"c_{i}" for i in range(68)] and len(rows) == 6
