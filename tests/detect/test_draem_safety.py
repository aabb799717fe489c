"""DRÆM model files are data (issue 20), no stale training state (issue 16), batches of one
and non-finite losses/maps.

* A booby-trapped pickle in any model slot is refused (exit 2) without being unpickled.
* ``train`` resumes / reports up to date only for the same config and dataset; otherwise it
  refuses naming what differs, and ``--restart`` starts over.
* Saving and loading reproduces predictions bit for bit; resuming reproduces training.
* A trailing batch of one is dropped; a one-image training set is refused.
* A non-finite loss stops training naming epoch, batch and files; no NaN map is written.
"""
import json
import shutil

import numpy as np
import pytest
import tifffile
import torch

from polar_detect.draem import store
from polar_detect.draem.__main__ import main
from polar_detect.draem.polar import PolarDRAEM, train_polar
from polar_detect.draem.synthetic import SyntheticDataset
from polar_detect.draem.train import (CHECKPOINT, FINAL, StaleStateError, TrainingError,
                                      epoch_batches, preset, read_model, train)

from .draem_tiny import (TRAIN_FAST, copy_model, dataset, rewrite_image, snapshot,
                         train_model, write_trap)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset dir, trained intensity model dir) - train once, copy per test."""
    root = tmp_path_factory.mktemp("draem_trained")
    torch.set_num_threads(1)
    data = dataset(root / "data")
    return data, train_model(data, root / "model")


TINY = dict(recon_width=4, disc_width=4, batch_size=2, lr=1e-3)


# ------------------------------------------------------------------ pickles are refused
SLOTS = [
    pytest.param("predict", "intensity/model.pt", ["model.pt", "convert-legacy", "--trust-pickle"],
                 id="predict-legacy-model.pt"),
    pytest.param("predict", "intensity/model.safetensors", ["model.safetensors", "not a polar_detect DRÆM safetensors"],
                 id="predict-pickle-renamed-safetensors"),
    pytest.param("train", "intensity/checkpoint.pt", ["checkpoint.pt", "convert-legacy"],
                 id="train-legacy-checkpoint.pt"),
    pytest.param("train", "intensity/model.pt", ["model.pt", "convert-legacy"],
                 id="train-legacy-model.pt"),
    pytest.param("train", "intensity/checkpoint.safetensors", ["checkpoint.safetensors", "not a polar_detect"],
                 id="train-pickle-renamed-checkpoint"),
    pytest.param("train", "intensity/model.safetensors", ["model.safetensors", "not a polar_detect"],
                 id="train-pickle-renamed-model"),
]


@pytest.mark.parametrize("cmd, slot, expect", SLOTS)
def test_pickle_in_a_model_slot_is_refused_unexecuted(trained, tmp_path, capsys, cmd, slot, expect):
    data, model = trained
    marker = tmp_path / "PWNED"
    mdir = copy_model(model, tmp_path / "m")
    for p in (mdir / "intensity").iterdir():       # leave only the trap in the slots
        if p.suffix in (".safetensors", ".pt"):
            p.unlink()
    write_trap(mdir / slot, marker)
    before = snapshot(tmp_path)
    if cmd == "predict":
        rc = main(["predict", "--model", str(mdir), "--data", str(data), "--out", str(tmp_path / "pred")])
    else:
        rc = main(["train", "--data", str(data), "--inputs", "R", "--out", str(mdir), *TRAIN_FAST])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not marker.exists(), "the pickle was executed"
    for s in expect:
        assert s in err, (s, err)
    assert snapshot(tmp_path) == before                      # nothing written, nothing lost


def test_convert_legacy_refuses_trap_even_when_trusted(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    old = tmp_path / "old"
    write_trap(old / "intensity" / "model.pt", marker)
    (old / "draem.json").write_text(json.dumps({"model": "draem", "inputs": ["intensity"], "size": [32, 32]}))
    for extra in ([], ["--trust-pickle"]):
        rc = main(["convert-legacy", str(old), str(tmp_path / "new"), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and not marker.exists() and not (tmp_path / "new").exists(), err
        assert ("--trust-pickle" in err) if not extra else ("model.pt" in err and "Unsupported global" in err)


def test_convert_legacy_round_trip(trained, tmp_path, capsys):
    """A directory in the old pickled layout converts to one that predicts identically."""
    data, model = trained
    old = tmp_path / "old"
    (old / "intensity").mkdir(parents=True)
    net, meta = read_model(model / "intensity" / FINAL)
    torch.save({"model_config": net.config(), "state_dict": net.state_dict(), "meta": meta["meta"]},
               old / "intensity" / "model.pt")
    cfg = json.loads((model / "draem.json").read_text())
    cfg.pop("models")
    (old / "draem.json").write_text(json.dumps(cfg))
    assert main(["predict", "--model", str(old), "--data", str(data), "--out", str(tmp_path / "p0")]) == 2
    assert "convert-legacy" in capsys.readouterr().err
    assert main(["convert-legacy", str(old), str(tmp_path / "new"), "--trust-pickle"]) == 0
    for m, p in ((model, "p1"), (tmp_path / "new", "p2")):
        assert main(["predict", "--model", str(m), "--data", str(data), "--no-overlay",
                     "--out", str(tmp_path / p)]) == 0
    a, b = (json.loads((tmp_path / p / "predictions.json").read_text()) for p in ("p1", "p2"))
    assert a["scores"] == b["scores"]
    # a converted model records no run: training into it is refused, not "up to date"
    rc = main(["train", "--data", str(data), "--inputs", "R", "--out", str(tmp_path / "new"), *TRAIN_FAST])
    assert rc == 2 and "not recorded" in capsys.readouterr().err


# ------------------------------------------------------------------ stale state
def test_changed_config_is_refused_then_restart(trained, tmp_path, capsys):
    data, model = trained
    mdir = copy_model(model, tmp_path / "m")
    before = snapshot(mdir)
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--inputs", "R", "--out", str(mdir), *TRAIN_FAST]) == 0
    assert "up to date" in capsys.readouterr().out
    assert {k: v for k, v in snapshot(mdir).items() if k != "draem.json"} == \
        {k: v for k, v in before.items() if k != "draem.json"}       # not retrained
    rc = main(["train", "--data", str(data), "--inputs", "R", "--out", str(mdir), *TRAIN_FAST, "--epochs", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "train_config.epochs 1 -> 2" in err and "--restart" in err and "model.safetensors" in err
    assert snapshot(mdir) == before
    rc = main(["train", "--data", str(data), "--inputs", "R", "--out", str(mdir), *TRAIN_FAST, "--seed", "3"])
    assert rc == 2 and "train_config.seed 0 -> 3" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--inputs", "R", "--out", str(mdir), *TRAIN_FAST,
                 "--epochs", "2", "--restart"]) == 0
    _, meta = read_model(mdir / "intensity" / FINAL)
    assert len(meta["meta"]["history"]) == 2 and meta["run"]["train_config"]["epochs"] == 2
    assert json.loads((mdir / "intensity" / "train_config.json").read_text())["epochs"] == 2


def test_changed_dataset_is_refused(trained, tmp_path, capsys):
    data, model = trained
    data2 = shutil.copytree(data, tmp_path / "data")
    mdir = copy_model(model, tmp_path / "m")
    before = snapshot(mdir)
    rewrite_image(data2, "000001", 0.5)                 # rebuilt dataset: one training image differs
    rc = main(["train", "--data", str(data2), "--inputs", "R", "--out", str(mdir), *TRAIN_FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "dataset content" in err and "--restart" in err
    assert snapshot(mdir) == before
    # a changed *test* image is not training data: the model stays up to date
    data3 = shutil.copytree(data, tmp_path / "data3")
    rewrite_image(data3, "000005", 0.5)
    assert main(["train", "--data", str(data3), "--inputs", "R", "--out", str(mdir), *TRAIN_FAST]) == 0
    assert "up to date" in capsys.readouterr().out


def test_checkpoint_resumes_only_the_same_run(tmp_path):
    data = SyntheticDataset(6, 32, 3, seed=5)
    cfg = preset("small", epochs=3, milestones=(0.34, 0.67), **TINY)
    full = train(data, tmp_path / "a", cfg, progress=False)
    train(data, tmp_path / "b", cfg, progress=False, stop_after_epoch=1)
    ck = tmp_path / "b" / CHECKPOINT
    assert ck.exists() and not (tmp_path / "b" / FINAL).exists()
    ck_bytes = ck.read_bytes()
    with pytest.raises(StaleStateError, match=r"lr 0.001 -> 0.002.*--restart"):
        train(data, tmp_path / "b", preset("small", epochs=3, milestones=(0.34, 0.67), **{**TINY, "lr": 2e-3}),
              progress=False)
    other = SyntheticDataset(6, 32, 3, seed=6)
    with pytest.raises(StaleStateError, match="dataset content"):
        train(other, tmp_path / "b", cfg, progress=False)
    assert ck.read_bytes() == ck_bytes                 # refused runs leave the checkpoint alone
    logs = []
    resumed = train(data, tmp_path / "b", cfg, progress=False, log=logs.append)
    assert any("resuming after epoch 1" in m for m in logs)
    for k, v in full.state_dict().items():              # CPU: resumed == uninterrupted, exactly
        assert torch.equal(v, resumed.state_dict()[k]), k
    logs.clear()
    again = train(data, tmp_path / "b", cfg, progress=False, log=logs.append)
    assert any("up to date" in m for m in logs)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in resumed.state_dict().items())


def test_inconsistent_model_directory_is_refused(trained, tmp_path, capsys):
    """A per-input model from another run (e.g. a --restart interrupted before draem.json
    was rewritten) does not silently join the ensemble."""
    data, model = trained
    mdir = copy_model(model, tmp_path / "m")
    other = train_model(data, tmp_path / "o", "--seed", "7")
    shutil.copy(other / "intensity" / FINAL, mdir / "intensity" / FINAL)
    rc = main(["predict", "--model", str(mdir), "--data", str(data), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and "is not the model" in err and not (tmp_path / "p").exists()


# ------------------------------------------------------------------ round trip
def test_save_load_round_trip_is_bit_identical(tmp_path):
    sets = {"intensity": SyntheticDataset(4, 32, 3, seed=1), "aolp": SyntheticDataset(4, 32, 2, seed=2)}
    pol = train_polar(lambda k: sets[k], "R+phi", tmp_path, preset("small", epochs=1, **TINY), progress=False)
    loaded = PolarDRAEM.load(tmp_path)
    x = {k: torch.stack([sets[k][i]["image"] for i in range(4)]) for k in sets}
    for k in sets:
        a, b = pol.models[k].state_dict(), loaded.models[k].state_dict()
        assert all(torch.equal(a[n], b[n]) and a[n].dtype == b[n].dtype for n in a)
    (ma, sa), (mb, sb) = pol.predict(x), loaded.predict(x)
    assert torch.equal(ma, mb) and torch.equal(sa, sb)
    assert not any(p.suffix == ".pt" for p in tmp_path.rglob("*"))


def test_checkpoint_restores_optimizer_and_scheduler(tmp_path):
    from polar_detect.draem.train import _restore, build
    data = SyntheticDataset(4, 32, 3, seed=5)
    cfg = preset("small", epochs=4, milestones=(0.25,), **TINY)
    train(data, tmp_path, cfg, progress=False, stop_after_epoch=2)
    model, opt, sched = build(3, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    epoch, history = _restore(tmp_path / CHECKPOINT, model, opt, sched, scaler)
    assert epoch == 2 and len(history) == 2
    assert sched.last_epoch == 2 and opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.2)
    assert isinstance(opt.param_groups[0]["betas"], tuple)
    st = opt.state_dict()["state"]
    assert len(st) == len(list(model.parameters())) and float(st[0]["step"]) == 4.0   # 2 epochs x 2 batches


# ------------------------------------------------------------------ batch of one
def test_epoch_batches_drop_only_a_trailing_single():
    g = lambda e: torch.Generator().manual_seed(e)  # noqa: E731
    assert [len(b) for b in epoch_batches(5, 2, g(0))] == [2, 2]
    assert [len(b) for b in epoch_batches(6, 4, g(0))] == [4, 2]
    assert [len(b) for b in epoch_batches(2, 8, g(0))] == [2]
    seen = set().union(*(i for e in range(6) for b in epoch_batches(5, 2, g(e)) for i in [b]))
    assert seen == set(range(5))                   # the dropped image differs between epochs


def test_last_batch_of_one_trains(tmp_path, capsys):
    """3 training images, batch 2: the old loop died in BatchNorm on the batch of one."""
    data = dataset(tmp_path / "data", n_train=3)
    assert main(["train", "--data", str(data), "--inputs", "R", "--out", str(tmp_path / "m"), *TRAIN_FAST]) == 0
    _, meta = read_model(tmp_path / "m" / "intensity" / FINAL)
    assert np.isfinite(meta["meta"]["history"][0]["total"])


def test_single_image_training_set_is_refused(tmp_path, capsys):
    data = dataset(tmp_path / "data", n_train=1)
    rc = main(["train", "--data", str(data), "--inputs", "R", "--out", str(tmp_path / "m"), *TRAIN_FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "single image" in err and "000000/intensity.tiff" in err
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ non-finite
def test_nan_loss_stops_training_naming_the_batch(tmp_path):
    data = SyntheticDataset(4, 32, 3, seed=1)
    data.items[2]["image"][0, 5, 5] = float("nan")
    with pytest.raises(TrainingError, match=r"epoch 1/2, batch \d/2: non-finite training loss.*id 000002"):
        train(data, tmp_path / "m", preset("small", epochs=2, **TINY), progress=False)
    assert not (tmp_path / "m" / FINAL).exists() and not (tmp_path / "m" / CHECKPOINT).exists()


def test_exploding_input_exits_2_naming_the_file(tmp_path, capsys):
    """A finite but absurdly scaled image (1e20) overflows the loss; the dataset readers
    cannot catch it, the training loop does."""
    data = dataset(tmp_path / "data")
    rewrite_image(data, "000002", 1e20)
    rc = main(["train", "--data", str(data), "--inputs", "R", "--out", str(tmp_path / "m"), *TRAIN_FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "non-finite training loss" in err and "epoch 1/1, batch" in err
    assert "000002/intensity.tiff" in err
    assert not (tmp_path / "m" / "intensity" / FINAL).exists() and not (tmp_path / "m" / "draem.json").exists()


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


def test_nan_weights_are_refused(trained, tmp_path, capsys):
    data, model = trained
    mdir = copy_model(model, tmp_path / "m")
    path = mdir / "intensity" / FINAL
    tensors, meta = store.read(path, store.MODEL_FORMAT)
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key].view(-1)[0] = float("nan")
    store.write(path, tensors, meta)
    rc = main(["predict", "--model", str(mdir), "--data", str(data), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and key in err and "non-finite" in err and not (tmp_path / "p").exists()


def test_torch_load_only_behind_explicit_trust():
    """Loading never unpickles model files: torch.load is left only in the opt-in legacy
    converter and in features.py's reader of the shipped ImageNet weights (installed
    package / torch.hub cache); grep the whole package."""
    import pathlib
    import re

    import polar_detect
    root = pathlib.Path(polar_detect.__file__).parent
    hits = {str(p.relative_to(root)): len(re.findall(r"torch\.load\(|pickle\.loads?\(|import pickle", p.read_text()))
            for p in root.rglob("*.py")}
    assert {k: v for k, v in hits.items() if v} == {"draem/legacy.py": 1, "features.py": 1}


def test_backbone_weights_from_a_user_path_must_be_safetensors(tmp_path):
    """``weights=<path>`` (patchcore --weights) is user input: a pickle there is refused
    unread; the same weights as safetensors load exactly."""
    from safetensors.torch import save_file

    from polar_detect.features import EfficientNetLite0, WeightsUnavailableError, load_backbone
    marker = tmp_path / "PWNED"
    write_trap(tmp_path / "w.pth", marker)
    with pytest.raises(WeightsUnavailableError, match=r"w\.pth: pickled weights are read only"):
        load_backbone("efficientnet_lite0", weights=tmp_path / "w.pth")
    assert not marker.exists()
    ref = EfficientNetLite0()
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    m = load_backbone("efficientnet_lite0", weights=tmp_path / "w.safetensors")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in ref.state_dict().items())
