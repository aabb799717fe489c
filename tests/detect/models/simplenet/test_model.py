"""SimpleNet's head (polar_detect.models.simplenet.model): truncated L1 loss, Gaussian-noise
anomalies, patch scores."""
import pytest
import torch

from polar_detect.models.simplenet.model import SimpleNetHead, truncated_l1


def test_truncated_l1_values():
    real = torch.tensor([1.0, 0.5, 0.0, -1.0])     # hinge max(0, 0.5 - s): 0, 0, 0.5, 1.5
    fake = torch.tensor([-1.0, -0.5, 0.0, 1.0])    # hinge max(0, 0.5 + s): 0, 0, 0.5, 1.5
    assert float(truncated_l1(real, fake, 0.5)) == pytest.approx(0.5 + 0.5)
    assert float(truncated_l1(torch.ones(3), -torch.ones(3), 0.5)) == 0.0    # both beyond the margin


def test_anomalous_features_are_gaussian_noise():
    head = SimpleNetHead(16, 8, noise_std=0.3)
    q = torch.randn(20000, 16)
    eps = head.anomalous(q, torch.Generator().manual_seed(1)) - q
    assert float(eps.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(eps.std()) == pytest.approx(0.3, rel=0.02)
    again = head.anomalous(q, torch.Generator().manual_seed(1)) - q
    assert torch.equal(eps, again)                  # seeded: reproducible


def test_patch_scores_shape_and_sign():
    head = SimpleNetHead(4, 8).eval()
    f = torch.randn(2, 4, 3, 5)
    s = head.patch_scores(f)
    assert s.shape == (2, 3, 5)
    q = head.adaptor(f.permute(0, 2, 3, 1).reshape(-1, 4))
    assert torch.allclose(s.reshape(-1), -head.discriminator(q))
