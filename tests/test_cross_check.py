"""`fkp-train cross-check`: 68-point readers scored on IMM's faces through a 68-to-58 point map fitted
on IMM's people 1-32 and scored on 33-40."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from train.cli import main as fkp_train
from train.cross_check import apply_map, fit_map, score_reader

from conftest import DATA, needs_shipped_model

IMM = DATA / "imm"


def _objects(text: str) -> list[dict]:
    dec, out, i = json.JSONDecoder(), [], 0
    while (j := text.find("{", i)) >= 0:
        obj, i = dec.raw_decode(text, j)
        out.append(obj)
    return out


def _faces(n=80, seed=0):
    """Random 68-point faces (frame pixels) and 58 points that are a fixed linear function of them."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 160, (68, 2))
    faces = base + rng.normal(0, 4, (n, 68, 2))
    faces = faces * rng.uniform(0.8, 1.3, (n, 1, 1)) + rng.uniform(-30, 30, (n, 1, 2))
    mix = rng.dirichlet(np.ones(68), 58)  # each of the 58 a weighted mean of the 68
    return faces, np.einsum("kj,njc->nkc", mix, faces)


def test_an_exact_linear_relation_is_recovered():
    faces, target = _faces(n=300)  # more faces than the map's 137 inputs
    w = fit_map(faces[:240], target[:240], ridge=1e-6)
    assert np.abs(apply_map(w, faces[240:]) - target[240:]).max() < 1e-3


def test_a_noisier_reader_scores_worse_on_the_held_out_people():
    faces, target = _faces(n=400)
    names = [f"{i:03d}" for i in range(len(faces))]
    person = {n: 1 + i // 10 for i, n in enumerate(names)}  # people 1-40, ten views each
    truth = dict(zip(names, target))
    rng = np.random.default_rng(1)
    clean = score_reader(dict(zip(names, faces)), truth, person, ridge=1e-3)
    noisy = score_reader(dict(zip(names, faces + rng.normal(0, 3, faces.shape))), truth, person, ridge=1e-3)
    assert clean["faces"] == noisy["faces"] == 80 and clean["missed"] == 0
    assert clean["test_nme_io"] < 0.5 < noisy["test_nme_io"]
    assert set(clean["test_regions"]) == {"jaw", "eye", "brow", "mouth", "nose"}


def test_too_few_faces_is_a_clear_error():
    faces, target = _faces(n=10)
    names = [str(i) for i in range(10)]
    with pytest.raises(ValueError, match="too few faces"):
        score_reader(dict(zip(names, faces)), dict(zip(names, target)), {n: 1 for n in names})


def test_no_reader_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(fkp_train, ["cross-check", "--imm", str(tmp_path)])
    assert r.exit_code == 2 and "at least one reader" in r.output, r.output


@needs_shipped_model
@pytest.mark.skipif(not IMM.is_dir(), reason=f"{IMM} not found (shared data is only in CI and dev checkouts)")
def test_the_shipped_model_against_a_blurred_copy_of_its_own_reading(tmp_path):
    """The shipped model's readings, written as labels with noise of about 4 % of the eye distance,
    must score worse than the model itself (the map pools the 68 points, so independent noise costs
    less than its size); an empty label folder is named in the error."""
    from train.cross_check import imm_faces, read_model
    from train.data.ibug import write_pts

    images, _, _ = imm_faces(IMM)
    own = read_model("fast", images)
    rng = np.random.default_rng(0)
    labels = tmp_path / "noisy"
    labels.mkdir()
    for name, pts in own.items():
        write_pts(labels / f"{name}.pts", pts + rng.normal(0, 5, pts.shape))
    r = CliRunner().invoke(fkp_train, ["cross-check", "fast", "--imm", str(IMM), "--labels", str(labels)])
    assert r.exit_code == 0, r.output
    model, noisy = _objects(r.output)
    assert model["reader"] == "fast" and model["faces"] == 48 and model["missed"] == 0
    assert 2.0 < model["test_nme_io"] < 7.0, model
    assert noisy["test_nme_io"] > model["test_nme_io"] + 0.3, (model, noisy)

    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(fkp_train, ["cross-check", "--imm", str(IMM), "--labels", str(empty)])
    assert r.exit_code == 2 and "--labels" in r.output and "empty" in r.output, r.output
