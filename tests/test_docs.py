"""The runnable examples in the public API's docstrings (Tracker, Face, run, the sinks, the
overlay, the landmarker, the smoother, the analyser) still run and print what they say."""
import doctest
import importlib

import pytest

MODULES = ["fkp_live.engine", "fkp_live.io.text", "fkp_live.settings", "fkp_live.single", "fkp_live.track.tracker", "fkp_live.render.draw",
           "fkp_live.frame", "fkp_live.track.smooth", "fkp_live.track.landmarker", "fkp_live.analysis.analyser"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
