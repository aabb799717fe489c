"""The DRÆM networks (polar_detect.models.draem.model): shapes, the discriminative net's input,
config round trip and the reference initialisation."""
import pytest
import torch

from polar_detect.models.draem.infer import predict
from polar_detect.models.draem.model import DRAEM

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", [(64, 64), (40, 72)])
def test_shapes(shape):
    m = DRAEM(3, 8, 4).eval()
    rec, logits = m(torch.rand(2, 3, 64, 64))
    assert rec.shape == (2, 3, 64, 64) and logits.shape == (2, 2, 64, 64)
    maps, scores = predict(m, torch.rand(2, 3, *shape))
    assert maps.shape == (2, *shape) and scores.shape == (2,)
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_discriminative_net_sees_input_and_reconstruction():
    """Paper Sec. 3.2: the discriminative sub-network gets ``concat(input, reconstruction)``,
    so its logits change when either half changes."""
    torch.manual_seed(0)
    m = DRAEM(2, 4, 4).eval()
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        rec, logits = m(x)
        assert torch.equal(rec, m.reconstructive(x))
        assert torch.equal(logits, m.discriminative(torch.cat([x, rec], dim=1)))
        swapped = m.discriminative(torch.cat([rec, x], dim=1))
    assert not torch.allclose(logits, swapped)                  # the order of the halves matters


def test_config_round_trip_and_reference_init():
    m = DRAEM.from_preset(3, "small")
    assert m.config() == {"channels": 3, "recon_width": 16, "disc_width": 8}
    clone = DRAEM(**m.config())
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    bn = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    w = torch.cat([b.weight.detach() for b in bn])
    assert torch.equal(torch.cat([b.bias.detach() for b in bn]), torch.zeros_like(w))
    assert abs(float(w.mean()) - 1.0) < 0.01 and 0.01 < float(w.std()) < 0.03     # N(1, 0.02)
    conv = torch.cat([c.weight.detach().flatten() for c in m.modules() if isinstance(c, torch.nn.Conv2d)])
    assert abs(float(conv.mean())) < 0.002 and 0.018 < float(conv.std()) < 0.022      # N(0, 0.02)
