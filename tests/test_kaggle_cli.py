"""The Kaggle pipeline end to end through fkp-train: convert, fit (masked and the two-model way),
eval, and a submission scored against the held-out truth."""
import json

import pytest
from click.testing import CliRunner

from train.cli import main as fkp_train
from train.data import kaggle

from conftest import DATA
W300 = DATA / "300w" / "afw"
needs_data = pytest.mark.skipif(not W300.is_dir(), reason=f"300-W data not found at {W300}")


def _invoke(args):
    r = CliRunner().invoke(fkp_train, args)
    assert r.exit_code == 0, r.output + (repr(r.exception) if r.exception else "")
    return r.output


@needs_data
def test_convert_fit_submit(tmp_path):
    # 80 real faces are enough to exercise every step quickly
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted(W300.glob("*.pts"))[:80]:
        (src / p.name).write_bytes(p.read_bytes())
        (src / p.with_suffix(".jpg").name).write_bytes(p.with_suffix(".jpg").read_bytes())
    out = tmp_path / "kaggle"
    text = _invoke(["convert", str(src), "--out", str(out)])
    assert "training.csv" in text
    samples, _ = kaggle.read_training(out / "training.csv")
    complete = sum(s.mask.all() for s in samples)
    assert abs(complete - round(0.3 * len(samples))) <= 1
    common = ["--epochs", "1", "--threads", "1", "--batch", "8"]
    for task in ("kaggle15", "kaggle15-big4"):
        _invoke(["fit", "--task", task, "--out", str(tmp_path / task), "--data", str(out / "training.csv"), *common])
    # so few complete rows may leave none in the validation split: a fully labelled copy for that one
    _invoke(["convert", str(src), "--out", str(tmp_path / "full"), "--keep-all", "1.0"])
    _invoke(["fit", "--task", "kaggle15-complete", "--out", str(tmp_path / "kaggle15-complete"),
             "--data", str(tmp_path / "full" / "training.csv"), *common])
    res = json.loads(_invoke(["eval", str(tmp_path / "kaggle15-big4" / "best.pt"), "--data",
                              str(out / "training.csv"), "--split", "all", "--two-model",
                              str(tmp_path / "kaggle15-complete" / "best.pt")]))
    assert res["two_model"] and res["rmse_px"] > 0
    if (out / "test.csv").exists() and kaggle.read_test(out / "test.csv")[0]:
        sub = tmp_path / "submission.csv"
        text = _invoke(["kaggle-submit", str(tmp_path / "kaggle15" / "best.pt"), "--test", str(out / "test.csv"),
                        "--lookup", str(out / "IdLookupTable.csv"), "--out", str(sub),
                        "--truth", str(out / "test_truth.csv")])
        assert "RMSE against" in text
        rows = sub.read_text().splitlines()
        assert rows[0] == "RowId,Location"
        vals = [float(r.split(",")[1]) for r in rows[1:]]
        assert min(vals) >= 0 and max(vals) <= 96


def test_kaggle_submit_rejects_a_non_kaggle_model(tmp_path):
    import torch

    from train.nets import build_model
    from train.tasks import get

    task = get("nose")
    torch.save({"model": build_model(task).state_dict(), "task": task.to_dict()}, tmp_path / "m.pt")
    (tmp_path / "t.csv").write_text("ImageId,Image\n")
    (tmp_path / "l.csv").write_text("RowId,ImageId,FeatureName,Location\n")
    r = CliRunner().invoke(fkp_train, ["kaggle-submit", str(tmp_path / "m.pt"), "--test", str(tmp_path / "t.csv"),
                                       "--lookup", str(tmp_path / "l.csv"), "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 2 and "a kaggle15 model on 96x96 input is needed" in r.output
