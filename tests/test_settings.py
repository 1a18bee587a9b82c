"""RunSettings: every command-line option lands in a field of its name, the object pickles (batch
workers get it so), and the rules between options (pose drawn -> pose analysed, analysis needs 68
points, options that go with another) hold in one place for every caller."""
from __future__ import annotations

import dataclasses
import pickle

import pytest

from fkp_live.commands.run import _NOT_SETTINGS, run, settings_from
from fkp_live.schemas import IBUG68, KAGGLE15
from fkp_live.settings import RunSettings, SettingsError


def test_every_option_of_the_command_is_a_field_of_the_settings():
    fields = {f.name for f in dataclasses.fields(RunSettings)}
    options = {p.name for p in run.params} - {"version"}
    assert options - set(_NOT_SETTINGS) <= fields
    # the renamed ones land in their fields
    s = settings_from({**{p.name: p.default for p in run.params if p.name != "version"},
                       "draw_layers": "points,pose", "no_display": True, "verbose": 1})
    assert (s.draw, s.display, s.quiet) == ("points,pose", False, False)


def test_settings_pickle_whole():
    s = RunSettings(videos="clips/", out_dir="out", jobs=4, mp4=True, analysis=("pose", "eyes"), crops="c",
                    crops_every=3, draw="all", threads=None)
    back = pickle.loads(pickle.dumps(s))
    assert back == s and back.kinds == ("pose", "eyes")
    worker = back.one_thread_each()
    assert (worker.threads, worker.mp4_threads) == (1, 1) and worker.jobs == 4


def test_a_drawn_pose_turns_pose_analysis_on_only_where_a_picture_shows_it():
    s = RunSettings(draw="points,pose", analysis="eyes")
    assert s.analysis_wanted(IBUG68, shown=True) == {"pose", "eyes"}
    assert s.analysis_wanted(IBUG68, shown=False) == {"eyes"}
    # 'all' draws pose only where the model gives it; naming pose asks for it
    assert RunSettings(draw="all").analysis_wanted(KAGGLE15, shown=True) == set()
    with pytest.raises(SettingsError, match=r"--draw pose needs a 68-point iBUG model; kaggle15 has 15 points"):
        RunSettings(draw="points,pose").analysis_wanted(KAGGLE15, shown=True)
    with pytest.raises(SettingsError, match=r"--analysis needs a 68-point iBUG model"):
        RunSettings(analysis="mouth").check_model(KAGGLE15)


@pytest.mark.parametrize("kw, option, message", [
    (dict(), None, "give exactly one source"),
    (dict(demo=True, video="a.mp4"), None, "give exactly one source"),
    (dict(demo=True, draw="points,nose"), "--draw", "unknown overlay nose"),
    (dict(demo=True, analysis="pulse"), "--analysis", "unknown analysis pulse"),
    (dict(demo=True, crop_size=64), None, "--crop-size goes with --crops DIR"),
    (dict(demo=True, mp4=True), None, "--mp4 goes with --videos"),
    (dict(demo=True, jobs=2), None, "--jobs goes with --videos"),
    (dict(videos="clips/", csv="a.csv", out_dir="o"), None, "--csv goes with one source"),
    (dict(videos="clips/"), None, "--videos needs --out-dir DIR"),
    (dict(videos="clips/", out_dir="o", shard="4/4"), "--shard", "K must be 0..N-1"),
])
def test_each_check_names_its_option(kw, option, message):
    with pytest.raises(SettingsError, match=message) as e:
        RunSettings(**kw).check()
    assert e.value.option == option


def test_outputs_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(SettingsError, match="must be different files"):
        RunSettings(demo=True, csv=str(tmp_path / "a"), jsonl=str(tmp_path / "a")).check()
    video = tmp_path / "in.mp4"
    video.write_bytes(b"")
    with pytest.raises(SettingsError, match="would overwrite the input"):
        RunSettings(video=str(video), csv=str(video)).check()


def test_one_video_of_a_batch_is_a_single_run_with_its_own_files(tmp_path):
    s = RunSettings(videos="clips/", out_dir=str(tmp_path), mp4=True, crops=str(tmp_path / "crops"),
                    morph_to="face.jpg", analysis="eyes")
    one = s.for_video(tmp_path / "a.csv.part", tmp_path / "a.mp4.part", "a")
    assert (one.csv, one.output, one.crops) == (str(tmp_path / "a.csv.part"), str(tmp_path / "a.mp4.part"),
                                                str(tmp_path / "crops" / "a"))
    assert not one.display and one.morph_to is None and one.jsonl is None and one.kinds == ("eyes",)
