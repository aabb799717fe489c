"""SfP model/checkpoint files (polar_detect.models.sfp.store): round trip, format checks, NaN
history allowed, optimizer state restored exactly."""
import math

import pytest
import torch

from polar_detect.models.sfp import store
from polar_detect.models.sfp.model import NetConfig, SfPNet


def test_round_trip_keeps_tensors_and_a_nan_history(tmp_path):
    net = SfPNet(NetConfig(colour=1, widths=(4, 8)))
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    meta = {"format": store.MODEL_FORMAT, "train": {"history": [{"epoch": 1, "loss": float("nan")}]}}
    store.save(tmp_path / store.MODEL_FILE, tensors, meta)
    got, got_meta = store.read(tmp_path / store.MODEL_FILE, store.MODEL_FORMAT)
    assert got.keys() == tensors.keys() and all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert math.isnan(got_meta["train"]["history"][0]["loss"])
    assert store.read_meta(tmp_path / store.MODEL_FILE, store.MODEL_FORMAT)["format"] == store.MODEL_FORMAT


def test_wrong_format_and_pickles_are_refused(tmp_path):
    path = store.save(tmp_path / store.MODEL_FILE, {"model.w": torch.zeros(2)}, {"format": store.MODEL_FORMAT})
    with pytest.raises(store.ModelFileError, match=r"checkpoint/1|model/1"):
        store.read(path, store.CKPT_FORMAT)                       # a model is not a checkpoint
    pk = tmp_path / "pickle.safetensors"
    torch.save({"w": torch.zeros(2)}, pk)
    with pytest.raises(store.ModelFileError, match="SfP"):
        store.read(pk, store.MODEL_FORMAT)


def test_optimizer_state_round_trip(tmp_path):
    torch.manual_seed(0)
    net = SfPNet(NetConfig(colour=1, widths=(4, 8)))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(1, 4, 16, 16)).sum().backward()
        opt.step()
    tensors, part = store.optimizer_tensors(opt)
    assert all(k.startswith(store.OPTIMIZER_PREFIX) for k in tensors)
    store.save(tmp_path / store.CKPT_FILE, tensors, {"format": store.CKPT_FORMAT, "optimizer": part})
    t, meta = store.read(tmp_path / store.CKPT_FILE, store.CKPT_FORMAT)
    fresh = torch.optim.AdamW(net.parameters(), lr=1e-3)
    store.restore_optimizer(fresh, t, meta, tmp_path / store.CKPT_FILE)
    a, b = opt.state_dict()["state"], fresh.state_dict()["state"]
    assert a.keys() == b.keys() and len(a) == len(list(net.parameters()))
    for i in a:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(a[i][name], b[i][name])
        assert float(a[i]["step"]) == float(b[i]["step"]) == 2.0
