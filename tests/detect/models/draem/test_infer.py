"""DRÆM inference (polar_detect.models.draem.infer): image score, batch independence."""
import pytest
import torch

from polar_detect.models.draem.infer import predict
from polar_detect.models.draem.model import DRAEM


pytestmark = pytest.mark.usefixtures("one_thread")


def test_score_is_the_max_of_the_mean_filtered_map_and_batch_independent():
    """Paper Sec. 3.4: image score = max of the 21x21 mean-filtered map; an image scores the
    same alone and in a batch (eval mode: no batch statistics leak between images)."""
    torch.manual_seed(0)
    m = DRAEM(3, 8, 4)
    m.train()                                   # predict must switch to eval itself
    x = torch.rand(3, 3, 64, 64)
    maps, scores = predict(m, x)
    alone_maps, alone_scores = predict(m, x[1:2])
    assert torch.allclose(maps[1], alone_maps[0], atol=1e-5)
    assert torch.allclose(scores[1], alone_scores[0], atol=1e-5)
    filtered = torch.nn.functional.avg_pool2d(maps[:, None], 21, stride=1, padding=10)
    assert torch.allclose(scores, filtered.amax(dim=(1, 2, 3)), atol=1e-4)
