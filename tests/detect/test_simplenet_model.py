"""SimpleNet's parts: truncated L1 loss, Gaussian-noise anomalies, and a discriminator that
learns to separate obvious anomalies on a toy set."""
from pathlib import Path

import numpy as np
import pytest
import torch

from polar_detect.metrics import binary_auroc
from polar_detect.simplenet.model import SimpleNetHead, truncated_l1
from polar_detect.simplenet.train import TrainConfig, make_optimizer, run_epoch


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


def _toy(n, g, offset=0.0):
    """Normal patches on a 2-D plane inside 8-D (plus small noise); anomalies leave the plane."""
    basis = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))[0]
    z = torch.randn(n, 2, generator=g) * 2
    x = z @ basis[:, :2].T + 0.05 * torch.randn(n, 8, generator=g)
    return x + offset * basis[:, 2:3].T * torch.sign(torch.randn(n, 1, generator=g))


def test_discriminator_separates_obvious_anomalies():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    bank = _toy(4000, g)
    cfg = TrainConfig(hidden=32, noise_std=0.5, epochs=15, batch_patches=256)
    head = SimpleNetHead(8, cfg.hidden, cfg.noise_std, cfg.margin)
    before = None
    normal, anomalous = _toy(500, g), _toy(500, g, offset=2.0)
    x = torch.cat([normal, anomalous])
    y = np.r_[np.zeros(500), np.ones(500)]
    with torch.no_grad():
        head.eval()
        before = binary_auroc((-head.discriminator(head.adaptor(x))).numpy(), y)
    opt = make_optimizer(head, cfg)
    for e in range(cfg.epochs):
        hist = run_epoch(head, opt, bank, cfg, e, Path("."))
    with torch.no_grad():
        s = head.patch_scores(x.T.reshape(1, 8, 1, -1)).reshape(-1).numpy()
    after = binary_auroc(s, y)
    assert hist["real_acc"] > 0.9 and hist["fake_acc"] > 0.9, hist
    assert after > 0.97, (before, after)
    assert after > before + 0.2             # learned, not an accident of the initialisation


def test_patch_scores_shape_and_sign():
    head = SimpleNetHead(4, 8).eval()
    f = torch.randn(2, 4, 3, 5)
    s = head.patch_scores(f)
    assert s.shape == (2, 3, 5)
    q = head.adaptor(f.permute(0, 2, 3, 1).reshape(-1, 4))
    assert torch.allclose(s.reshape(-1), -head.discriminator(q))
