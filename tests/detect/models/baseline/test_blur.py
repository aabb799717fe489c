"""The blurred-object-mask baseline (polar_detect.models.baseline.blur): the map is the part mask
blurred (higher inside the part than far outside it), its predictions pass the contract check,
and a dataset without part masks is refused before anything is written."""
import json

import numpy as np
import pytest
import tifffile

from polar_detect.dataset.__main__ import main as dataset_main
from polar_detect.dataset.encodings import DatasetError
from polar_detect.models.baseline.__main__ import main
from polar_detect.models.baseline.blur import blurred_object_mask, predict_dataset
from polar_detect.predictions import check_predictions

from tests.detect.draem_tiny import dataset
from tests.detect.evaluation.ignore_data import _without_object_mask, data  # noqa: F401 - fixture
from tests.detect.fake_render import PART, anomaly, make_render


def test_blurred_mask_is_high_inside_low_far_outside():
    m = np.zeros((40, 60), np.uint16)
    m[10:30, 15:45] = 3                                           # any non-zero id is "part"
    a = blurred_object_mask(m, 3.0)
    assert a.dtype == np.float32 and a.shape == m.shape
    assert np.all((a >= 0) & (a <= 1))
    assert a[20, 30] > 0.99 and a[0, 0] < 1e-6                    # centre vs far outside
    assert a[20, 30] > a[10, 30] > a[5, 30]                       # decreasing across the edge
    assert (a[9, 30] + a[10, 30]) / 2 == pytest.approx(0.5, abs=0.01)   # half way on a straight edge
    assert np.array_equal(blurred_object_mask(m, 0), (m > 0).astype(np.float32))
    full = blurred_object_mask(np.ones((20, 20)), 2.0)            # outside the image is background
    assert full[10, 10] > 0.99 and full[0, 0] < full[0, 10] < 0.7 and full[0, 0] < 0.4
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        blurred_object_mask(np.ones((4, 4, 3)), 1.0)


def test_predictions_pass_the_contract_and_score_the_part(tmp_path):
    specs = [[]] * 6 + [[anomaly(1, "dent", (6, 6, 12, 12))], [anomaly(1, "scratch", (8, 5, 20, 8))], [], []]
    make_render(tmp_path / "render", specs, seed=1)
    assert dataset_main(["build", "--render", str(tmp_path / "render"), "--out", str(tmp_path / "data"),
                         "--train-ratio", "0.5", "--val-fraction", "0.25", "--seed", "0", "--no-progress"]) == 0
    pred = predict_dataset(tmp_path / "data", tmp_path / "pred", "test,val", sigma=2.0)
    entries = check_predictions(tmp_path / "pred", tmp_path / "data")
    man = json.loads((tmp_path / "data" / "manifest.json").read_text())
    want = {s["id"] for s in man["samples"] if s["split"] in ("test", "val")}
    assert {e.sample.id for e in entries} == want and all(e.map is not None for e in entries)
    assert pred["split"] == "test" and pred["threshold"] is None and pred["baseline"]["sigma_px"] == 2.0
    x0, y0, x1, y1 = PART
    for sid, rel in pred["maps"].items():
        a = tifffile.imread(tmp_path / "pred" / rel)
        assert a[(y0 + y1) // 2, (x0 + x1) // 2] > 0.9 and a[0, 0] < 0.05 and a[-1, -1] < 0.05
        assert pred["scores"][sid] == pytest.approx(float(a.max()))


def test_dataset_without_part_masks_is_refused_unwritten(tmp_path, capsys):
    data = dataset(tmp_path / "data")
    with pytest.raises(DatasetError, match="object_mask"):
        predict_dataset(data, tmp_path / "pred", "test")
    assert main(["predict", "--data", str(data), "--out", str(tmp_path / "p2"), "--split", "test"]) == 2
    assert "object_mask" in capsys.readouterr().err
    assert main(["predict", "--data", str(data), "--out", str(tmp_path / "p3"), "--sigma", "-1"]) == 2
    assert not (tmp_path / "pred").exists() and not (tmp_path / "p2").exists() and not (tmp_path / "p3").exists()


def test_baseline_bad_input(data, tmp_path, capsys):
    data_dir, _ = data
    assert main(["predict", "--data", str(data_dir), "--split", "tst", "--out", str(tmp_path / "o")]) == 2
    assert "unknown split 'tst'" in capsys.readouterr().err
    assert main(["predict", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope/manifest.json" in capsys.readouterr().err
    assert main(["predict", "--data", str(data_dir), "--out", str(tmp_path / "o"), "--sigma", "-1"]) == 2
    assert "--sigma" in capsys.readouterr().err
    copy, man = _without_object_mask(data_dir, tmp_path)
    assert main(["predict", "--data", str(copy), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "no object_mask" in err
    assert not (tmp_path / "o").exists()
