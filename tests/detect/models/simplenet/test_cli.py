"""``python -m polar_detect.models.simplenet`` (polar_detect.models.simplenet.cli) end to end at
toy size: train -> predict (contract format, read by evaluate), up-to-date / refused reruns,
checkpoint safety (a crafted pickle is refused without running)."""
import json
import shutil

import numpy as np
import pytest
import tifffile

from polar_detect.evaluation.evaluate import main as evaluate_main
from polar_detect.models.simplenet import store
from polar_detect.models.simplenet.__main__ import main

from tests.detect.draem_tiny import snapshot, write_trap
from tests.detect.simplenet_tiny import FAST


def test_predict_writes_contract_and_evaluate_reads_it(tiny, tmp_path, capsys):
    data, model = tiny
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--data", str(data), "--out", str(out), "--quiet"]) == 0
    pred = json.loads((out / "predictions.json").read_text())
    assert set(pred["scores"]) == {"000006", "000007", "000008"} and pred["split"] == "test"
    for sid, rel in pred["maps"].items():
        m = tifffile.imread(out / rel)
        assert m.dtype == np.float32 and m.shape == (40, 56)
        assert pred["scores"][sid] == pytest.approx(float(m.max()), rel=1e-5)     # image score = map max
    assert pred["timing"]["images"] == 3 and pred["timing"]["images_per_s"] > 0
    assert evaluate_main(["--pred", str(out), "--data", str(data), "--out", str(tmp_path / "eval"),
                          "--no-report", "--bootstrap", "10"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["image"]["auroc"] is not None


def test_rerun_is_up_to_date_and_other_config_is_refused(tiny, tmp_path, capsys):
    data, model = tiny
    m = shutil.copytree(model, tmp_path / "m")
    before = snapshot(m)
    assert main(["train", "--data", str(data), "--out", str(m), *FAST]) == 0
    assert "up to date" in capsys.readouterr().out
    assert snapshot(m) == before
    assert main(["train", "--data", str(data), "--out", str(m), *FAST, "--noise-std", "0.7"]) == 2
    err = capsys.readouterr().err
    assert "different training run" in err and "noise_std 0.5 -> 0.7" in err and "--restart" in err
    assert snapshot(m) == before
    assert main(["train", "--data", str(data), "--out", str(m), *FAST, "--noise-std", "0.7", "--restart"]) == 0
    _, meta = store.load_model(m)
    assert meta["run"]["train_config"]["noise_std"] == 0.7


def test_changed_data_is_refused(tiny, tmp_path, capsys):
    data, model = tiny
    d = shutil.copytree(data, tmp_path / "data")
    m = shutil.copytree(model, tmp_path / "m")
    p = d / "samples" / "000000" / "intensity.tiff"
    tifffile.imwrite(p, np.full_like(tifffile.imread(p), 0.5), photometric="rgb")
    assert main(["train", "--data", str(d), "--out", str(m), *FAST]) == 2
    assert "dataset content" in capsys.readouterr().err


def test_pickled_files_are_refused_without_running(tiny, tmp_path, capsys):
    data, model = tiny
    marker = tmp_path / "PWNED"
    m = shutil.copytree(model, tmp_path / "m")
    write_trap(m / "model.safetensors", marker)
    assert main(["predict", "--model", str(m), "--data", str(data), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors: not a polar_detect simplenet/ensemble safetensors file" in err and "unpickled" in err
    assert not marker.exists() and not (tmp_path / "p").exists()
    (m / "model.safetensors").unlink()
    write_trap(m / "checkpoint.safetensors", marker)          # train would resume from it
    before = snapshot(m)
    assert main(["train", "--data", str(data), "--out", str(m), *FAST]) == 2
    assert "checkpoint.safetensors: not a polar_detect simplenet/ensemble safetensors file" in capsys.readouterr().err
    assert not marker.exists() and snapshot(m) == before
    (m / "checkpoint.safetensors").unlink()
    write_trap(m / "model.pt", marker)                        # a pickle beside it is never opened
    assert main(["predict", "--model", str(m), "--data", str(data), "--out", str(tmp_path / "p")]) == 2
    assert "model.safetensors: missing" in capsys.readouterr().err
    assert not marker.exists()
