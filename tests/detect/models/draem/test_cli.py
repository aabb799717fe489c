"""``python -m polar_detect.models.draem train|predict`` on a tiny hand-written dataset.

What the CLI writes is checked against the Python API on the same trained files: each
score and map in predictions.json must be what ``PolarDRAEM.predict`` gives for that
sample (the mean over the chosen inputs), so a mix-up of samples, inputs or resolutions
in the CLI fails here.
"""
import hashlib
import json

import numpy as np
import pytest
import tifffile

from polar_detect.dataset.build import build_from_renders
from polar_detect.dataset.manifest import read_manifest
from polar_detect.dataset.torch_dataset import PolarDataset
from polar_detect.models.draem.__main__ import main
from polar_detect.models.draem.polar import PolarDRAEM

from tests.detect.draem_tiny import dataset
from tests.detect.fake_render import MIXED, NORMAL8, make_render


def _dataset(root):
    """Minimal contract-section-2 dataset: intensity (3 ch) + aolp (2 ch), 40x56, 4 + 4 samples."""
    return dataset(root, n_test=4, aolp=True, n_anomalous=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def _api_predictions(model_dir, data, inputs=None) -> dict:
    """{id: (map (H, W), score)} of the test split through the Python API."""
    model = PolarDRAEM.load(model_dir, "cpu", inputs)
    sets = {k: PolarDataset(data, "test", [k], size=None) for k in model.inputs}
    out = {}
    for i in range(len(sets[model.inputs[0]])):
        items = {k: ds[i] for k, ds in sets.items()}
        amap, score = model.predict({k: it["image"][None] for k, it in items.items()})
        out[str(items[model.inputs[0]]["id"])] = (amap[0].numpy(), float(score[0]))
    return out


def _check_against_api(pred_dir, model_dir, data, inputs=None) -> dict:
    p = json.loads((pred_dir / "predictions.json").read_text())
    api = _api_predictions(model_dir, data, inputs)
    assert set(p["scores"]) == set(p["maps"]) == set(api) == {"000004", "000005", "000006", "000007"}
    for sid, (amap, score) in api.items():
        m = tifffile.imread(pred_dir / p["maps"][sid])
        assert m.dtype == np.float32 and m.shape == (40, 56)      # dataset resolution
        assert 0.0 <= m.min() and m.max() <= 1.0                  # a probability of "anomalous"
        np.testing.assert_allclose(m, amap, atol=1e-6)
        assert p["scores"][sid] == pytest.approx(score, abs=1e-6)
    return p


def test_train_then_predict(tmp_path):
    data = _dataset(tmp_path / "data")
    model = tmp_path / "model"
    rc = main(["train", "--data", str(data), "--inputs", "R+phi", "--out", str(model),
               "--preset", "small", "--epochs", "1", "--size", "32", "--batch-size", "2"])
    assert rc == 0
    cfg = json.loads((model / "draem.json").read_text())
    assert cfg["inputs"] == ["intensity", "aolp"] and cfg["size"] == [32, 32]
    tc = json.loads((model / "aolp" / "train_config.json").read_text())
    assert tc["ssim_max_val"] == 2.0 and tc["simulator"]["texture_range"] == [-1.0, 1.0]
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--data", str(data), "--split", "test",
                 "--out", str(pred)]) == 0
    p = _check_against_api(pred, model, data)
    assert p["model"] == "draem:intensity+aolp" and p["split"] == "test"
    assert p["manifest_sha256"] == hashlib.sha256((data / "manifest.json").read_bytes()).hexdigest()
    assert all((pred / "overlays" / f"{sid}.png").is_file() for sid in p["scores"])
    # a subset of the trained inputs (Table II rows from one training run)
    assert main(["predict", "--model", str(model), "--data", str(data), "--inputs", "R",
                 "--out", str(tmp_path / "pred_r"), "--no-overlay"]) == 0
    pr = _check_against_api(tmp_path / "pred_r", model, data, "intensity")
    assert pr["model"] == "draem:intensity" and not (tmp_path / "pred_r" / "overlays").exists()
    # the two-input score is the mean of the per-input scores
    pa = _api_predictions(model, data, "aolp")
    for sid, score in p["scores"].items():
        assert score == pytest.approx((pr["scores"][sid] + pa[sid][1]) / 2, abs=1e-6)
    assert main(["predict", "--model", str(model), "--data", str(data), "--inputs", "n",
                 "--out", str(tmp_path / "pred_n")]) == 2
    assert not (tmp_path / "pred_n").exists()


def test_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "m")])
    assert rc == 2 and "manifest.json" in capsys.readouterr().err
    rc = main(["predict", "--model", str(tmp_path / "nomodel"), "--data", str(tmp_path),
               "--out", str(tmp_path / "p")])
    assert rc == 2 and "nomodel" in capsys.readouterr().err


def test_nan_prediction_is_refused(trained, tmp_path, capsys):
    """A plain image folder with a NaN pixel: no map with NaN is written, exit 2."""
    _, model = trained
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        a = np.full((40, 56, 3), 0.4, np.float32)
        if i == 1:
            a[3, 3, 0] = np.nan
        tifffile.imwrite(folder / f"im{i}.tiff", a, photometric="rgb")
    rc = main(["predict", "--model", str(model), "--data", str(folder), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and "im1.tiff" in err and "non-finite" in err
    assert not (tmp_path / "p").exists()


def test_draem_predict_checks_the_training_normalisation(tmp_path, capsys):
    """draem stores its training normalisation; predict warns on a dataset with another one,
    refuses it with --norm-mismatch error (before predicting), and is quiet with --norm-from."""
    import torch
    from polar_detect.models.draem.__main__ import main as draem
    train = make_render(tmp_path / "train", NORMAL8[:4], seed=1, intensity_gain=3.0)
    ev = make_render(tmp_path / "eval", MIXED, seed=2)
    build_from_renders([f"{train}:train"], tmp_path / "tr", "intensity", progress=False)
    build_from_renders([f"{ev}:eval"], tmp_path / "same", "intensity", norm_from=tmp_path / "tr", progress=False)
    build_from_renders([ev], tmp_path / "other", "intensity", progress=False)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert draem(["train", "--data", str(tmp_path / "tr"), "--inputs", "R", "--out", str(tmp_path / "m"),
                      "--preset", "small", "--epochs", "1", "--size", "32", "--batch-size", "2"]) == 0
        cfg = json.loads((tmp_path / "m" / "draem.json").read_text())
        assert cfg["normalisation"]["intensity"]["scale"] == read_manifest(tmp_path / "tr")["modalities"]["intensity"]["scale"]
        capsys.readouterr()
        common = ["predict", "--model", str(tmp_path / "m"), "--split", "test", "--no-overlay"]
        assert draem(common + ["--data", str(tmp_path / "same"), "--out", str(tmp_path / "p1")]) == 0
        assert "normalisation" not in capsys.readouterr().err
        assert json.loads((tmp_path / "p1" / "predictions.json").read_text())["normalisation_check"]["status"] == "match"
        assert draem(common + ["--data", str(tmp_path / "other"), "--out", str(tmp_path / "p2")]) == 0
        err = capsys.readouterr().err
        assert "other/manifest.json: normalisation differs" in err and "intensity: scale" in err
        assert json.loads((tmp_path / "p2" / "predictions.json").read_text())["normalisation_check"]["status"] == "mismatch"
        assert draem(common + ["--data", str(tmp_path / "other"), "--out", str(tmp_path / "p3"),
                               "--norm-mismatch", "error"]) == 2
        assert "--norm-from" in capsys.readouterr().err
        assert not (tmp_path / "p3" / "predictions.json").exists()
    finally:
        torch.set_num_threads(n)
