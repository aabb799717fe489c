"""SimpleNet end to end at toy size: train -> predict (contract format, read by evaluate),
guarded resume (bitwise equal to an uninterrupted run), checkpoint safety (a crafted pickle
is refused without running), ONNX export equal to torch."""
import json
import shutil

import numpy as np
import pytest
import tifffile
import torch

from polar_detect.evaluate import main as evaluate_main
from polar_detect.simplenet import store
from polar_detect.simplenet.__main__ import main
from polar_detect.simplenet.cli import open_train
from polar_detect.simplenet.train import TrainConfig, train

from .draem_tiny import dataset, snapshot, write_trap
from .simplenet_tiny import FAST, one_thread, train_simplenet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("simplenet")
    data = dataset(root / "data", n_train=6, n_test=3)
    return data, one_thread(lambda: train_simplenet(data, root / "model"))


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


def test_resume_equals_uninterrupted(tiny, tmp_path):
    data, _ = tiny

    class A:
        pass
    a = A()
    a.data, a.modality = str(data), "intensity"
    ds, _ = open_train(a)
    cfg = TrainConfig(epochs=3, hidden=16, batch_patches=64, max_patches=240, batch_images=4)

    def run(out, stop=None):
        from polar_detect.ensemble.sources import BackboneSource
        from polar_detect.patchcore.encoding import InputEncoding
        src = [BackboneSource(encoding=InputEncoding("intensity"))]
        return train(src, ds, out, cfg, progress=False, stop_after_epoch=stop)

    def both():
        run(tmp_path / "full")
        run(tmp_path / "part", stop=1)
        assert not (tmp_path / "part" / "model.safetensors").exists()
        assert (tmp_path / "part" / "checkpoint.safetensors").exists()
        run(tmp_path / "part")                     # resumes after epoch 1
    one_thread(both)
    a_t, a_m = store.read(tmp_path / "full" / "model.safetensors", store.MODEL_FORMAT)
    b_t, b_m = store.read(tmp_path / "part" / "model.safetensors", store.MODEL_FORMAT)
    assert set(a_t) == set(b_t)
    for k in a_t:
        assert torch.equal(a_t[k], b_t[k]), k
    assert [h["loss"] for h in a_m["meta"]["history"]] == [h["loss"] for h in b_m["meta"]["history"]]


def test_pickled_files_are_refused_without_running(tiny, tmp_path, capsys):
    data, model = tiny
    marker = tmp_path / "PWNED"
    m = shutil.copytree(model, tmp_path / "m")
    write_trap(m / "model.safetensors", marker)
    assert main(["predict", "--model", str(m), "--data", str(data), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors: not a simplenet/ensemble safetensors file" in err and "unpickled" in err
    assert not marker.exists() and not (tmp_path / "p").exists()
    (m / "model.safetensors").unlink()
    write_trap(m / "checkpoint.safetensors", marker)          # train would resume from it
    before = snapshot(m)
    assert main(["train", "--data", str(data), "--out", str(m), *FAST]) == 2
    assert "checkpoint.safetensors: not a simplenet/ensemble safetensors file" in capsys.readouterr().err
    assert not marker.exists() and snapshot(m) == before
    (m / "checkpoint.safetensors").unlink()
    write_trap(m / "model.pt", marker)                        # a pickle beside it is never opened
    assert main(["predict", "--model", str(m), "--data", str(data), "--out", str(tmp_path / "p")]) == 2
    assert "model.safetensors: missing" in capsys.readouterr().err
    assert not marker.exists()


def test_onnx_export_matches_torch(tiny, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from polar_detect.simplenet.export import verify
    data, model = tiny
    out = tmp_path / "sn.onnx"
    assert main(["export", "--model", str(model), "--out", str(out), "--size", "56x40"]) == 0
    net, _ = store.load_model(model)
    x = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(5))   # batch axis is dynamic
    r = verify(out, net, x)
    tol = 2e-5 * max(1.0, r["map_range"])          # float32 rounding at the maps' magnitude
    assert r["max_abs_diff_map"] <= tol and r["max_abs_diff_score"] <= tol, r
