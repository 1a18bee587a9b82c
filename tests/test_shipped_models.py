"""Every shipped model loads, matches its card, and finds the points of held-out real faces."""
import numpy as np
import pytest

from fkp_live.card import ModelCard, models_dir
from fkp_live.track.landmarker import Landmarker

from conftest import DATA, ROOT
SHIPPED = sorted(p.stem for p in (ROOT / "models").glob("*.onnx"))
# (task whose data and crop convention the model was trained with, dataset, split, NME limit)
HELD_OUT = {
    "ibug68": ("ibug68", "300w", "test", 0.06),
    "ibug68.int8": ("ibug68", "300w", "test", 0.06),
    "ibug68.fp16": ("ibug68", "300w", "test", 0.06),
    "ibug68-accurate": ("ibug68", "300w", "test", 0.05),
    "ibug68-accurate.int8": ("ibug68", "300w", "test", 0.05),
    "imm58": ("imm58-crop", "imm", "val", 0.08),
    "kaggle15": ("kaggle15-crop", "300w", "test", 0.08),
}


def test_the_default_and_the_seed_models_ship():
    assert {"ibug68", "imm58"} <= set(SHIPPED)
    assert models_dir() == ROOT / "models"


@pytest.mark.parametrize("name", SHIPPED)
def test_model_matches_its_card(name):
    lm = Landmarker(name, device="cpu")
    card = ModelCard.load((ROOT / "models" / name).with_suffix(".json"))
    inp = lm.session.get_inputs()[0]
    assert inp.shape[1:] == [card.channels, card.input_size, card.input_size]
    assert lm.session.get_outputs()[0].shape[1:] == [lm.schema.n, 2]
    assert card.training.get("command", "").startswith("fkp-train fit"), "the card says how it was trained"
    assert card.licence and card.metrics
    assert (ROOT / "models" / f"{name}.onnx").stat().st_size < 10e6


@pytest.mark.parametrize("name", [n for n in SHIPPED if n in HELD_OUT])
def test_model_finds_points_on_held_out_faces(name):
    task_name, folder, split, limit = HELD_OUT[name]
    if not (DATA / folder).is_dir():
        pytest.skip(f"{DATA / folder} not found (shared data is only in CI and dev checkouts)")
    from train.datasets import load_split
    from train.export import evaluate_onnx
    from train.tasks import get

    card = ModelCard.load((ROOT / "models" / name).with_suffix(".json"))
    task = get(task_name)
    task = task.with_(size=(card.input_size, card.input_size))  # the task's crops at the model's size
    samples, _ = load_split(task, DATA / folder, split)
    m = evaluate_onnx(ROOT / "models" / f"{name}.onnx", card, samples[:80], task)
    assert m["nme_io"] / 100 < limit, m
    assert m["presence_mean"] > 0.9, "faces are recognised as faces"


@pytest.mark.parametrize("name", ["ibug68"])
def test_presence_drops_without_a_face(name):
    """Crops of background (no face) get a low presence score, so the runtime re-detects."""
    lm = Landmarker(name, device="cpu")
    rng = np.random.default_rng(0)
    flat = np.full((4, lm.size, lm.size, lm.card.channels), 90, np.uint8)
    noise = rng.integers(0, 255, (4, lm.size, lm.size, lm.card.channels), dtype=np.uint8)
    _, conf = lm.run(lm.normalise(np.concatenate([flat, noise])))
    assert conf.max() < 0.5, conf


def test_fast_and_accurate_name_the_68_point_models():
    from fkp_live.card import ALIASES, resolve

    assert resolve("fast")[0] == ROOT / "models" / "ibug68.int8.onnx", "INT8 on a CPU"
    assert resolve("fast", gpu=True)[0] == ROOT / "models" / "ibug68.fp16.onnx", "FP16 on a GPU"
    assert resolve("accurate")[0] == ROOT / "models" / "ibug68-accurate.int8.onnx"
    assert resolve(None)[0] == resolve("fast")[0], "the fast model is the default"
    assert Landmarker("accurate", device="cpu").onnx_path.name == "ibug68-accurate.int8.onnx"
    for alias, name in ALIASES.items():
        assert name in SHIPPED, f"--model {alias} names {name}, which must ship"


def test_bench_prints_latency_and_metrics_of_each_model():
    from click.testing import CliRunner

    from train.cli import main as fkp_train

    r = CliRunner().invoke(fkp_train, ["bench", "ibug68.int8", "kaggle15", "--runs", "5"])
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.output.splitlines() if line.startswith(("ibug68.int8 ", "kaggle15 "))]
    assert [row[0] for row in rows] == ["ibug68.int8", "kaggle15"], r.output
    for row in rows:
        assert row[1] == "CPU"
        b1, b4_per_face, b4 = map(float, row[3:6])
        assert 0 < b1 and 0 < b4_per_face and abs(b4 - 4 * b4_per_face) < 0.02 * b4 + 0.01
        assert any(f.startswith("nme_io=") for f in row[6:]), "the card's held-out metrics are printed"
