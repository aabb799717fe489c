"""SimpleNet training (polar_detect.models.simplenet.train): the discriminator learns to separate obvious anomalies; resume equals an uninterrupted run."""
from pathlib import Path

import numpy as np
import torch

from polar_detect.metrics import binary_auroc
from polar_detect.models.simplenet import store
from polar_detect.models.simplenet.cli import open_train
from polar_detect.models.simplenet.model import SimpleNetHead
from polar_detect.models.simplenet.train import TrainConfig, make_optimizer, run_epoch, train

from tests.detect.simplenet_tiny import one_thread



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


def test_resume_equals_uninterrupted(tiny, tmp_path):
    data, _ = tiny

    class A:
        pass
    a = A()
    a.data, a.modality = str(data), "intensity"
    ds, _ = open_train(a)
    cfg = TrainConfig(epochs=3, hidden=16, batch_patches=64, max_patches=240, batch_images=4)

    def run(out, stop=None):
        from polar_detect.models.ensemble.sources import BackboneSource
        from polar_detect.models.patchcore.encoding import InputEncoding
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
