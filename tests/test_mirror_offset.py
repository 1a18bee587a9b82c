"""`fkp-train mirror-offset`: mirrored samples are exact mirrors, and the command splits the x
offset into the labels' part (its sign turns in the mirror) and the pipeline's (it does not)."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import DATA, needs_data
from fkp_live import schemas
from train.cli import main as fkp_train
from train.data import Sample
from train.evaluate import mirror_sample
from train.nets import build_model
from train.tasks import get


def test_a_mirrored_sample_is_the_mirror_image_and_mirroring_twice_gives_it_back():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 57), dtype=np.uint8)
    pts = np.stack([rng.integers(0, 57, 68), rng.integers(0, 40, 68)], axis=1).astype(np.float32)
    mask = rng.random(68) > 0.2
    s = Sample(img, pts, mask, "x")
    perm = schemas.IBUG68.mirror_array()
    m = mirror_sample(s, schemas.IBUG68)
    for i in range(68):  # the pixel under each mirrored point is the one under the original point
        j = perm[i]
        x, y = m.points[i].astype(int)
        assert m.image[y, x] == img[int(pts[j, 1]), int(pts[j, 0])]
        assert m.mask[i] == mask[j]
    back = mirror_sample(m, schemas.IBUG68)
    np.testing.assert_array_equal(back.image, img)
    np.testing.assert_allclose(back.points, pts)
    np.testing.assert_array_equal(back.mask, mask)


@needs_data
def test_mirror_offset_command_on_real_faces(tmp_path):
    task = get("ibug68").with_(size=(64, 64), net_args={"width": 0.5, "decoder": 16})
    torch.manual_seed(0)
    torch.save({"model": build_model(task).state_dict(), "task": task.to_dict(), "epoch": 0, "val": {}},
               tmp_path / "best.pt")
    r = CliRunner().invoke(fkp_train, ["mirror-offset", str(tmp_path / "best.pt"), "--data", str(DATA / "300w"),
                                       "--split", "val", "--every", "20"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    o, m = res["original"]["dx_pct_iod"], res["mirrored"]["dx_pct_iod"]
    assert res["faces"] == 6
    assert res["label_offset_b_pct_iod"] == pytest.approx((m - o) / 2, abs=1e-3)
    assert res["pipeline_offset_c_pct_iod"] == pytest.approx((m + o) / 2, abs=1e-3)
