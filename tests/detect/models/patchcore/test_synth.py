"""Synthetic brushed plates (polar_detect.models.patchcore.synth): loader-contract items generated
from (seed, split, index), masks on the drawn anomaly, and the on-disk dataset round trip."""
import numpy as np
import pytest
import torch

from polar_detect.models.patchcore.synth import SyntheticPlates, write_dataset


def test_items_are_a_pure_function_of_seed_split_and_index():
    a, b = SyntheticPlates(4, 32, 0.5, seed=3, split="test"), SyntheticPlates(4, 32, 0.5, seed=3, split="test")
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in (3, 0, 2, 1))     # any access order
    assert all(torch.equal(a[i]["mask"], b[i]["mask"]) for i in range(4))
    other_split = SyntheticPlates(4, 32, 0.5, seed=3, split="val")
    other_seed = SyntheticPlates(4, 32, 0.5, seed=4, split="test")
    assert not torch.equal(a[0]["image"], other_split[0]["image"])
    assert not torch.equal(a[0]["image"], other_seed[0]["image"])
    assert a[1]["id"] == "test_00001"
    with pytest.raises(IndexError):
        a[4]


def test_anomalies_follow_the_fraction_and_the_mask():
    normal = SyntheticPlates(6, 48, 0.0, seed=0)
    assert all(normal[i]["label"] == 0 and not normal[i]["mask"].any() for i in range(6))
    plates = SyntheticPlates(60, 48, 0.5, seed=1, split="test")
    labels = [plates[i]["label"] for i in range(60)]
    assert 18 <= sum(labels) <= 42                                   # ~ Binomial(60, 0.5)
    for i in np.flatnonzero(labels)[:8]:
        it = plates[int(i)]
        m = it["mask"][0].bool()
        assert it["image"].shape == (3, 48, 48) and torch.equal(it["image"][0], it["image"][2])
        assert 0 < int(m.sum()) < 48 * 48 // 4
        assert torch.equal(it["instance_mask"] > 0, m)
        inside, outside = it["image"][0][m], it["image"][0][~m]
        assert float(inside.mean()) < 0.3 or bool(torch.all(inside == 0.97))   # dark stain or bright scratch
        assert abs(float(inside.mean()) - float(outside.mean())) > 0.2      # an obvious anomaly


def test_write_dataset_round_trips_through_the_loader(tmp_path):
    from polar_detect.dataset.torch_dataset import PolarDataset
    man = write_dataset(tmp_path / "plates", n_train=3, n_val=2, n_test=4, size=32, anomaly_fraction=0.5, seed=2)
    splits = [s["split"] for s in man["samples"]]
    assert splits.count("train") == 3 and splits.count("val") == 2 and splits.count("test") == 4
    assert all(s["label"] == 0 for s in man["samples"] if s["split"] == "train")
    ds = PolarDataset(tmp_path / "plates", "test", ["intensity"], normalise=False)
    plates = SyntheticPlates(4, 32, 0.5, seed=2, split="test")
    for i in range(len(ds)):
        it, want = ds[i], plates[i]
        assert it["id"] == want["id"] and it["label"] == want["label"]
        assert torch.allclose(it["image"][0], want["image"][0], atol=1e-6)
        assert torch.equal(it["mask"], want["mask"])
