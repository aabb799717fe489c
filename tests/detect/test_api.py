"""polar_detect's public API (train / predict / evaluate) equals the command lines."""
import json

import numpy as np
import pytest
import tifffile

import polar_detect
from polar_detect.evaluation.evaluate import main as evaluate_main
from polar_detect.models.draem.__main__ import main as draem_main
from polar_detect.models.patchcore.__main__ import main as patchcore_main
from tests.detect.draem_tiny import TRAIN_FAST, dataset

DRAEM = {"inputs": "R", "preset": "small", "epochs": 1, "size": 32, "batch_size": 2}
PATCHCORE = {"modality": "intensity", "size": 32, "coreset_size": 40, "epochs": 1, "no_download": True,
             "quiet": True}
PATCHCORE_ARGS = ["--modality", "intensity", "--size", "32", "--coreset-size", "40", "--epochs", "1",
                  "--no-download", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return dataset(tmp_path_factory.mktemp("api") / "data", n_train=4, n_test=3)


def _same_predictions(a, b):
    """Same header, scores and (bitwise) anomaly maps (predictions.json contract)."""
    pa, pb = (json.loads((d / "predictions.json").read_text()) for d in (a, b))
    head = [k for k in pa if k not in ("scores", "maps")]
    assert {k: pa[k] for k in head} == {k: pb[k] for k in head}
    assert pa["scores"] == pb["scores"] and sorted(pa["maps"]) == sorted(pb["maps"]) == sorted(pa["scores"])
    for sid, rel in pa["maps"].items():
        assert np.array_equal(tifffile.imread(a / rel), tifffile.imread(b / pb["maps"][sid]))


def _same_metrics(api_metrics, cli_out):
    cli = json.loads((cli_out / "metrics.json").read_text())
    assert api_metrics["image"]["auroc"] == cli["image"]["auroc"]
    assert api_metrics["pixel"]["auroc"] == cli["pixel"]["auroc"]


def test_draem_through_the_api_equals_the_cli(data, tmp_path):
    model = polar_detect.train("draem", data, tmp_path / "api", **DRAEM)
    assert draem_main(["train", "--data", str(data), "--inputs", "R", "--out", str(tmp_path / "cli"),
                       *TRAIN_FAST]) == 0
    a = (model / "intensity" / "model.safetensors").read_bytes()
    assert polar_detect.api.model_kind(model) == "draem"
    pred = polar_detect.predict(model, data, tmp_path / "pa", no_overlay=True)
    assert draem_main(["predict", "--model", str(tmp_path / "cli"), "--data", str(data), "--out",
                       str(tmp_path / "pc"), "--no-overlay"]) == 0
    _same_predictions(pred, tmp_path / "pc")
    m = polar_detect.evaluate(pred, data, tmp_path / "ea", report=False, n_bootstrap=0)
    assert evaluate_main(["--pred", str(tmp_path / "pc"), "--data", str(data), "--out", str(tmp_path / "ec"),
                          "--no-report", "--bootstrap", "0"]) == 0
    _same_metrics(m, tmp_path / "ec")
    assert m["image"]["auroc"] is not None and 0.0 <= m["image"]["auroc"] <= 1.0
    assert (model / "intensity" / "model.safetensors").read_bytes() == a      # predict did not touch it


def test_patchcore_through_the_api_equals_the_cli(data, tmp_path):
    model = polar_detect.train("patchcore", data, tmp_path / "api.safetensors", **PATCHCORE)
    assert patchcore_main(["train", "--data", str(data), "--out", str(tmp_path / "cli.safetensors"),
                           *PATCHCORE_ARGS]) == 0
    assert polar_detect.api.model_kind(model) == "patchcore"
    pred = polar_detect.predict(model, data, no_download=True, quiet=True)
    assert pred == tmp_path / "api_pred"
    assert patchcore_main(["predict", "--model", str(tmp_path / "cli.safetensors"), "--data", str(data),
                           "--out", str(tmp_path / "pc"), "--no-download", "--quiet"]) == 0
    _same_predictions(pred, tmp_path / "pc")
    m = polar_detect.evaluate(pred, data, tmp_path / "ea", report=False, n_bootstrap=0)
    assert evaluate_main(["--pred", str(tmp_path / "pc"), "--data", str(data), "--out", str(tmp_path / "ec"),
                          "--no-report", "--bootstrap", "0"]) == 0
    _same_metrics(m, tmp_path / "ec")
    # the anomalous test image (bright square) scores above the normal ones
    scores = json.loads((pred / "predictions.json").read_text())["scores"]
    assert scores["000006"] > max(v for k, v in scores.items() if k != "000006")


@pytest.mark.parametrize("call, message", [
    (lambda d, t: polar_detect.train("yolo", d, t / "m"), r"unknown model 'yolo'; choose from draem, patchcore"),
    (lambda d, t: polar_detect.train("draem", d, t / "m", epoch=1), r"draem train: unknown option 'epoch'"),
    (lambda d, t: polar_detect.train("draem", d, t / "m", preset="huge"), r"draem train: .*invalid choice: 'huge'"),
    (lambda d, t: polar_detect.train("draem", d, t / "m", epochs="x"), r"draem train: .*--epochs.*invalid int"),
    (lambda d, t: polar_detect.evaluate(t, d, t / "e", fpr=0.1), r"evaluate: unknown option 'fpr'"),
    (lambda d, t: polar_detect.evaluate(t, d, t / "e", fpr_limit=2.0), r"evaluate: --fpr-limit"),
    (lambda d, t: polar_detect.predict(t / "none", d), r"none.*missing"),
])
def test_bad_calls_raise_value_errors_naming_the_problem(data, tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(data, tmp_path)
    assert not (tmp_path / "m").exists() and not (tmp_path / "e").exists()


def test_import_stays_light():
    import subprocess
    import sys
    code = ("import sys, polar_detect; assert 'torch' not in sys.modules; "
            "assert callable(polar_detect.train) and 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
