"""Fuzzing (issue 13): random and mutated bytes where fkp-live reads files (images, videos, models,
cards). The only acceptable answers are the intended ones: a result, or exit 2 with one error line;
never a traceback, never exit 1 with a raw exception. Few examples each, so it runs in seconds."""
from __future__ import annotations

import json
import shutil

import cv2
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fkp_live.card import ModelCard, ModelError
from fkp_live.commands.run import run as cli_run

FAST = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# a mutation: cut the file at a fraction of its length, then overwrite some bytes
mutations = st.tuples(st.floats(0.05, 1.0),
                      st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(0, 255)), max_size=12))


def mutate(data: bytes, mutation) -> bytes:
    cut, edits = mutation
    b = bytearray(data[: max(1, int(len(data) * cut))])
    for where, value in edits:
        b[int(where * len(b))] = value
    return bytes(b)


def invoke(*args):
    res = CliRunner().invoke(cli_run, [str(a) for a in args] + ["--no-display"], catch_exceptions=False)
    out = res.output
    assert "Traceback" not in out, out
    assert res.exit_code in (0, 2), out  # 1 would be an unexpected exception turned into one line
    if res.exit_code == 2:
        assert len([line for line in out.splitlines() if "error:" in line]) == 1, out
    return res.exit_code, out


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    from fkp_live.io.sources import DemoSource
    from runtime_helpers import write_video

    d = tmp_path_factory.mktemp("seeds")
    imgs = [cv2.resize(f.image, (160, 120)) for f in DemoSource(frames=6)]
    cv2.imwrite(str(d / "face.jpg"), imgs[0])
    cv2.imwrite(str(d / "face.png"), imgs[0])
    write_video(d / "face.mp4", imgs, fps=10)
    return d


# ----------------------------------------------------------------------------------------------
# The card loader: anything that is not a valid card is a ModelError, nothing else.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
card_fields = st.fixed_dictionaries({}, optional={
    "name": json_values, "schema": st.sampled_from(["ibug68", "nope"]) | json_values,
    "input_size": st.integers(-4, 300) | json_values, "channels": st.sampled_from([1, 3]) | json_values,
    "mean": json_values, "std": json_values, "crop_scale": json_values, "box_calibration": json_values,
    "format_version": json_values, "input_name": json_values})



@FAST
@given(value=json_values | card_fields)
def test_card_loader_random_json_is_only_a_model_error(tmp_path_factory, value):
    path = tmp_path_factory.mktemp("card") / "m.json"
    path.write_text(json.dumps(value))
    try:
        ModelCard.load(path)
    except ModelError:
        pass


@FAST
@given(data=st.binary(max_size=200))
def test_card_loader_random_bytes_is_only_a_model_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("card") / "m.json"
    path.write_bytes(data)
    try:
        ModelCard.load(path)
    except ModelError:
        pass


# ----------------------------------------------------------------------------------------------
@FAST
@given(m=mutations, kind=st.sampled_from(["face.jpg", "face.png"]))
def test_mutated_images(tmp_path_factory, seeds, model_path, m, kind):
    folder = tmp_path_factory.mktemp("imgs")
    (folder / kind).write_bytes(mutate((seeds / kind).read_bytes(), m))
    code, out = invoke("--images", folder, "--model", model_path, "--detector", "haar")
    if code == 2:
        assert "could be read" in out


@FAST
@given(data=st.binary(max_size=600))
def test_random_bytes_as_an_image(tmp_path_factory, model_path, data):
    folder = tmp_path_factory.mktemp("imgs")
    (folder / "x.jpg").write_bytes(data)
    invoke("--images", folder, "--model", model_path, "--detector", "haar")


@FAST
@given(m=mutations)
def test_mutated_videos(tmp_path_factory, seeds, model_path, m):
    video = tmp_path_factory.mktemp("vid") / "v.mp4"
    video.write_bytes(mutate((seeds / "face.mp4").read_bytes(), m))
    invoke("--video", video, "--model", model_path, "--detector", "haar")


@FAST
@given(data=st.binary(max_size=2000))
def test_random_bytes_as_a_video(tmp_path_factory, model_path, data):
    video = tmp_path_factory.mktemp("vid") / "v.mp4"
    video.write_bytes(data)
    code, _ = invoke("--video", video, "--model", model_path, "--detector", "haar")
    assert code == 2


@FAST
@given(m=mutations)
def test_mutated_models(tmp_path_factory, model_path, m):
    d = tmp_path_factory.mktemp("model")
    bad = d / "m.onnx"
    bad.write_bytes(mutate(model_path.read_bytes(), m))
    shutil.copy(model_path.with_suffix(".json"), bad.with_suffix(".json"))
    invoke("--demo", "--demo-frames", "2", "--model", bad, "--detector", "haar")


@FAST
@given(value=card_fields)
def test_mutated_cards_through_the_cli(tmp_path_factory, model_path, value):
    d = tmp_path_factory.mktemp("model")
    m = d / "m.onnx"
    shutil.copy(model_path, m)
    card = json.loads(model_path.with_suffix(".json").read_text())
    card.update(value)
    m.with_suffix(".json").write_text(json.dumps(card))
    invoke("--demo", "--demo-frames", "2", "--model", m, "--detector", "haar")
