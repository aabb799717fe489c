"""DRÆM anomaly simulator: binary masks, beta range, anomaly-free fraction, determinism."""
import numpy as np
import pytest
import torch

from polar_detect.models.draem.simulate import (AnomalySimulator, SimulatedDataset, SimulatorConfig,
                                         TextureBank, perlin_mask, perlin_noise)
from polar_detect.models.draem.synthetic import SyntheticDataset


@pytest.fixture(scope="module")
def bank():
    return TextureBank()          # offline default: scikit-image images + procedural


def _image(seed=0, c=3, s=64):
    return np.random.default_rng(seed).uniform(0.2, 0.8, (c, s, s)).astype(np.float32)


def _correlation_length(n: np.ndarray) -> int:
    """First horizontal lag (px) at which the mean autocorrelation of the rows drops below 1/2."""
    z = n - n.mean()
    for lag in range(1, n.shape[1]):
        if (z[:, :-lag] * z[:, lag:]).mean() / (z * z).mean() < 0.5:
            return lag
    return n.shape[1]


def test_perlin_noise_is_gradient_noise_on_its_lattice():
    """Gradient noise: exactly zero on the lattice, smooth between, correlation length equal to
    a fixed fraction of the cell (halving the cell halves it), a pure function of the stream."""
    shape = (96, 192)
    n = perlin_noise(shape, (4, 8), np.random.default_rng(0))
    assert n.shape == shape and n.dtype == np.float32
    assert np.all(n[::24, ::24] == 0)                                    # lattice points (cell 24 px)
    assert np.abs(np.diff(n, axis=1)).max() < 0.2 and np.abs(n).max() <= np.sqrt(2)
    coarse = np.median([_correlation_length(perlin_noise(shape, (4, 8), np.random.default_rng(s))) for s in range(8)])
    fine = np.median([_correlation_length(perlin_noise(shape, (4, 16), np.random.default_rng(s))) for s in range(8)])
    assert 1.6 <= coarse / fine <= 2.5, (coarse, fine)
    assert np.array_equal(n, perlin_noise(shape, (4, 8), np.random.default_rng(0)))
    assert not np.allclose(n, perlin_noise(shape, (4, 8), np.random.default_rng(1)))
    odd = perlin_noise((50, 70), (4, 8), np.random.default_rng(0))        # shape not divisible by res
    assert odd.shape == (50, 70) and np.isfinite(odd).all() and odd.std() > 0.05


def test_masks_binary_and_nonempty(bank):
    sim = AnomalySimulator(SimulatorConfig(anomaly_free=0.0), bank)
    for i in range(60):
        m = perlin_mask((48, 80), np.random.default_rng(i))
        assert set(np.unique(m)) <= {0.0, 1.0}
        out = sim(_image(i, c=2), np.random.default_rng(i))
        assert out["mask"].shape == (1, 64, 64) and out["image"].shape == (2, 64, 64)
        assert set(np.unique(out["mask"])) == {0.0, 1.0} and out["label"] == 1


def test_beta_range_and_blend(bank):
    lo, hi = 0.3, 0.45
    sim = AnomalySimulator(SimulatorConfig(anomaly_free=0.0, beta_range=(lo, hi)), bank)
    betas = []
    for i in range(100):
        img = _image(i)
        out = sim(img, np.random.default_rng(100 + i))
        betas.append(out["beta"])
        keep = out["mask"][0] == 0
        assert np.array_equal(out["image"][:, keep], img[:, keep])   # outside M untouched
        # inside M: (1 - beta) * I + beta * A with A in [0, 1]
        inside = out["image"][:, ~keep]
        assert np.all(inside >= (1 - out["beta"]) * img[:, ~keep] - 1e-6)
        assert np.all(inside <= (1 - out["beta"]) * img[:, ~keep] + out["beta"] + 1e-6)
    betas = np.array(betas)
    assert betas.min() >= lo and betas.max() <= hi
    assert betas.min() < lo + 0.02 and betas.max() > hi - 0.02            # range is used


@pytest.mark.parametrize("frac", [0.5, 0.2])
def test_anomaly_free_fraction(bank, frac):
    sim = AnomalySimulator(SimulatorConfig(anomaly_free=frac), bank)
    labels = [sim(_image(0, s=32), np.random.default_rng([7, i]))["label"] for i in range(400)]
    free = 1 - np.mean(labels)
    assert abs(free - frac) < 0.075, free        # 3 sigma of a binomial(400, 0.5) fraction
    normal = [sim(_image(0, s=32), np.random.default_rng([7, i])) for i in range(20)]
    for out in normal:
        if out["label"] == 0:
            assert not out["mask"].any() and np.array_equal(out["image"], _image(0, s=32))


def test_deterministic_for_seed(bank):
    base = SyntheticDataset(6, 64, 3, seed=3)
    a = SimulatedDataset(base, AnomalySimulator(bank=bank), seed=11)
    b = SimulatedDataset(base, AnomalySimulator(bank=TextureBank()), seed=11)
    c = SimulatedDataset(base, AnomalySimulator(bank=bank), seed=12)
    for ds in (a, b, c):
        ds.set_epoch(2)
    same = [torch.equal(a[i]["augmented"], b[i]["augmented"]) and
            torch.equal(a[i]["mask"], b[i]["mask"]) for i in range(6)]
    assert all(same)
    assert any(not torch.equal(a[i]["augmented"], c[i]["augmented"]) for i in range(6))
    a.set_epoch(3)
    assert any(not torch.equal(a[i]["mask"], b[i]["mask"]) for i in range(6))


def test_texture_folder(tmp_path):
    from PIL import Image
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(tmp_path / "t.png")
    bank = TextureBank(tmp_path)
    assert len(bank) == 1
    assert bank.sample((64, 64), np.random.default_rng(0)).shape == (64, 64, 3)
    with pytest.raises(FileNotFoundError):
        TextureBank(tmp_path / "empty_missing")
