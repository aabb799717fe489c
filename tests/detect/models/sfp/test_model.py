"""The SfP network (polar_detect.models.sfp.model): unit normals at any input size."""
import pytest
import torch

from polar_detect.models.sfp.model import NetConfig, SfPNet


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", [(2, 4, 48, 64), (1, 4, 37, 53), (3, 12, 20, 30)])
def test_outputs_are_unit_normals_of_the_input_size(shape):
    colour = shape[1] // 4
    net = SfPNet(NetConfig(colour=colour, widths=(8, 16, 32))).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (shape[0], 3, *shape[2:])
    assert torch.allclose(y.norm(dim=1), torch.ones(shape[0], *shape[2:]), atol=1e-5)
