"""What every test file shares: where the project and the shared data are, and the data marker.

Tests that need ../shared/data are marked `@needs_data` (imported from here) and skip with a reason
on a fresh clone, where that folder is absent; CI has it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import fake_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VIDEOS = DATA / "videos"

needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared test data not found at {DATA} (only present in CI / dev checkouts)")
SHIPPED = ROOT / "models" / "ibug68.int8.onnx"  # the default on a CPU (`fast`)
needs_shipped_model = pytest.mark.skipif(
    not (SHIPPED.exists() and SHIPPED.with_suffix(".json").exists()),
    reason="the shipped default models/ibug68.int8.onnx + .json is not there yet (accuracy tests wait for it)")


def dlib_model_file() -> Path:
    """dlib's shape_predictor_68_face_landmarks.dat as `pip install face_recognition_models` ships
    it; skips the calling test when dlib or that file is not installed."""
    import importlib.util

    pytest.importorskip("dlib", reason="dlib is not installed (pip install dlib-bin)")
    spec = importlib.util.find_spec("face_recognition_models")
    where = list(spec.submodule_search_locations or []) if spec else []
    f = Path(where[0]) / "models" / "shape_predictor_68_face_landmarks.dat" if where else None
    if f is None or not f.is_file():
        pytest.skip("dlib's 68-point model is not installed (pip install face_recognition_models)")
    return f


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    """A small real ONNX model + card (see fake_model)."""
    return fake_model.build(tmp_path_factory.mktemp("model"))


def model_params():
    """The models plumbing tests run against: the stand-in always, the shipped one when present."""
    ids = ["fake"]
    if SHIPPED.exists() and SHIPPED.with_suffix(".json").exists():
        ids.append("shipped")
    return ids


@pytest.fixture(params=model_params())
def any_model(request, model_path) -> str:
    return str(model_path) if request.param == "fake" else str(SHIPPED)
