"""DRÆM training (polar_detect.models.draem.train): learning, resume, stale-state refusals, batches of one, non-finite losses."""
import json
import shutil

import numpy as np
import pytest
import torch

from polar_detect.metrics import binary_auroc
from polar_detect.models.draem.__main__ import main
from polar_detect.models.draem.infer import predict_dataset
from polar_detect.models.draem.synthetic import SyntheticDataset
from polar_detect.store import StaleStateError
from polar_detect.models.draem.train import (CHECKPOINT, FINAL, TrainingError, epoch_batches,
                                             load_model, preset, read_model, train)

from tests.detect.draem_tiny import TINY, TRAIN_FAST, copy_model, dataset, rewrite_image, snapshot


pytestmark = pytest.mark.usefixtures("one_thread")


#: Image AUROC the briefly trained tiny model must reach (chance = 0.5).
MIN_AUROC = 0.8


def test_tiny_model_separates_obvious_anomalies(tmp_path, capsys):
    train_set = SyntheticDataset(32, 64, 3, anomalous=0.0, seed=1)
    test_set = SyntheticDataset(32, 64, 3, anomalous=0.5, seed=2)
    cfg = preset("small", recon_width=8, disc_width=8, epochs=30, batch_size=8, lr=1e-3)
    model = train(train_set, tmp_path, cfg, progress=False)
    res = list(predict_dataset(model, test_set, batch_size=16))
    labels = [test_set[i]["label"] for i in range(len(test_set))]
    a = binary_auroc([s for _, _, s in res], labels)
    with capsys.disabled():
        print(f"\n[draem] tiny model (8/8, 120 steps) image AUROC = {a:.3f} "
              f"(chance 0.5, required >= {MIN_AUROC})")
    assert a >= MIN_AUROC


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_equals_uninterrupted(tmp_path):
    data = SyntheticDataset(8, 32, 3, seed=5)
    cfg = preset("small", recon_width=4, disc_width=4, epochs=3, batch_size=4, lr=1e-3,
                 milestones=(0.34, 0.67))                    # lr decays at epochs 1 and 2
    full = _state(train(data, tmp_path / "a", cfg, progress=False))
    train(data, tmp_path / "b", cfg, progress=False, stop_after_epoch=1)
    assert (tmp_path / "b" / CHECKPOINT).exists() and not (tmp_path / "b" / FINAL).exists()
    from polar_detect.models.draem import store
    assert store.read_meta(tmp_path / "b" / CHECKPOINT, store.CHECKPOINT_FORMAT)["epoch"] == 1
    resumed = _state(train(data, tmp_path / "b", cfg, progress=False))
    assert full.keys() == resumed.keys()
    diff = max(float((full[k].double() - resumed[k].double()).abs().max()) for k in full)
    assert diff <= 1e-6, diff
    # and an interrupted run that is NOT resumed differs (the test can fail)
    fresh = _state(train(data, tmp_path / "c", preset("small", recon_width=4, disc_width=4,
                                                      epochs=2, batch_size=4, lr=1e-3),
                         progress=False))
    assert max(float((full[k].double() - fresh[k].double()).abs().max())
               for k in full if full[k].is_floating_point()) > 1e-6
    m, meta = load_model(tmp_path / "a" / FINAL)
    assert meta["size"] == [32, 32] and len(meta["history"]) == 3


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


def test_checkpoint_restores_optimizer_and_scheduler(tmp_path):
    from polar_detect.models.draem.train import _restore, build
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
