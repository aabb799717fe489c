"""The in-memory synthetic dataset (polar_detect.models.draem.synthetic) used by tests and
benchmarks: loader-contract items, the anomalous fraction, masks matching the drawn squares."""
import torch

from polar_detect.models.draem.synthetic import SyntheticDataset


def test_items_follow_the_loader_contract_and_the_anomalous_fraction():
    ds = SyntheticDataset(10, 32, 2, anomalous=0.3, seed=4)
    assert len(ds) == 10
    assert [ds[i]["label"] for i in range(10)] == [0] * 7 + [1] * 3      # the last ones are anomalous
    for i in range(10):
        it = ds[i]
        assert it["image"].shape == (2, 32, 32) and it["image"].dtype == torch.float32
        assert float(it["image"].min()) >= 0 and float(it["image"].max()) <= 1
        assert it["id"] == f"{i:06d}"
        assert torch.equal(it["instance_mask"], it["mask"][0].long())
        assert bool(it["mask"].any()) == bool(it["label"])


def test_mask_is_the_square_of_constant_extreme_value():
    ds = SyntheticDataset(4, 64, 3, anomalous=1.0, seed=7)
    for i in range(4):
        it = ds[i]
        m = it["mask"][0].bool()
        ys, xs = torch.nonzero(m, as_tuple=True)
        side = int(ys.max() - ys.min() + 1)
        assert int(xs.max() - xs.min() + 1) == side and int(m.sum()) == side * side     # a square
        assert 64 // 8 <= side <= 64 // 4
        inside = it["image"][:, m]
        assert torch.all(inside == inside[0, 0]) and min(abs(float(inside[0, 0]) - v) for v in (0.05, 0.95)) < 1e-6
        assert not torch.any(it["image"][:, ~m] == inside[0, 0])


def test_seeded_and_smooth():
    a, b, c = SyntheticDataset(3, 32, 1, seed=1), SyntheticDataset(3, 32, 1, seed=1), SyntheticDataset(3, 32, 1, seed=2)
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(3))
    assert not torch.equal(a[0]["image"], c[0]["image"])
    img = a[0]["image"][0]
    assert float((img[:, 1:] - img[:, :-1]).abs().max()) < 0.1        # normal images: smooth, no edges
