"""PatchCoreModel (the nn.Module): shapes, determinism, score = max of the map, memory bank as
a buffer, nearest-neighbour distances against brute force, map geometry."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polar_detect.backbones import FeatureConfig, FeatureExtractor
from polar_detect.models.patchcore.encoding import InputEncoding
from polar_detect.models.patchcore.model import PatchCoreModel, knn_distance


class BlockMeans(nn.Module):
    """Stand-in extractor: the mean of each 4x4 block of each channel (features = pixels)."""

    dim = 3
    cfg = FeatureConfig(weights="random")

    def forward(self, x):
        return F.avg_pool2d(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, 4)


@pytest.fixture(scope="module")
def random_extractor():
    torch.manual_seed(0)
    return FeatureExtractor(FeatureConfig(weights="random"))


def _images(n, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_score_is_map_max_and_deterministic(random_extractor):
    mem = torch.randn(50, random_extractor.dim, generator=torch.Generator().manual_seed(1))
    m = PatchCoreModel(random_extractor, mem, k=1).eval()
    x = _images(3, 48)
    amap, score = m(x)
    assert amap.shape == (3, 48, 48) and score.shape == (3,)
    assert torch.equal(score, amap.flatten(1).max(1).values)
    amap2, score2 = m(x)
    assert torch.equal(amap, amap2) and torch.equal(score, score2)
    # each image is scored on its own: batch composition does not change a result
    single, s1 = m(x[1])
    assert torch.allclose(single[0], amap[1], atol=1e-5) and torch.allclose(s1[0], score[1], atol=1e-5)


def test_memory_bank_is_a_buffer_that_moves_with_the_module(random_extractor):
    mem = torch.randn(10, random_extractor.dim)
    m = PatchCoreModel(random_extractor, mem)
    assert "memory" in dict(m.named_buffers()) and "memory" in m.state_dict()
    assert not any(p is m.memory for p in m.parameters())
    m64 = PatchCoreModel(random_extractor, mem).to(torch.float64)
    assert m64.memory.dtype == torch.float64 and torch.equal(m64.memory, mem.double())
    assert PatchCoreModel(BlockMeans(), torch.zeros(4, 3)).to("meta").memory.device.type == "meta"
    untrained = PatchCoreModel(random_extractor)
    assert not untrained.trained and untrained.memory.shape == (0, random_extractor.dim)
    with pytest.raises(RuntimeError, match="not trained"):
        untrained(_images(1))


@pytest.mark.parametrize("k", [1, 3])
def test_knn_distance_matches_brute_force_in_any_chunking(k):
    g = torch.Generator().manual_seed(2)
    q, mem = torch.randn(200, 8, generator=g, dtype=torch.float64), torch.randn(30, 8, generator=g, dtype=torch.float64)
    ref = torch.cdist(q, mem).topk(k, 1, largest=False).values.mean(1)
    for budget in (None, 30, 31 * 7, 10 ** 6):           # one point per chunk .. one chunk
        torch.testing.assert_close(knn_distance(q, mem, k, budget), ref, atol=1e-9, rtol=0)
    # k larger than the bank: the mean over all of it
    torch.testing.assert_close(knn_distance(q, mem[:2], 5), torch.cdist(q, mem[:2]).mean(1), atol=1e-9, rtol=0)


def test_map_peaks_on_the_anomalous_block_and_zero_on_normal_images():
    normal = torch.full((1, 3, 32, 32), 0.5)
    m = PatchCoreModel(BlockMeans(), BlockMeans()(normal).permute(0, 2, 3, 1).reshape(-1, 3),
                       blur_sigma=0)
    amap, score = m(normal)
    assert float(score) == 0 and float(amap.abs().max()) == 0
    bad = normal.clone()
    bad[:, :, 20:24, 8:12] = 1.0                          # exactly block (5, 2)
    amap, score = m(bad)
    hot = amap[0] > 0
    assert hot[20:24, 8:12].all() and int(hot.sum()) == 16   # nearest upsampling: no shift
    assert float(score) == pytest.approx(3 ** 0.5 * 0.5, rel=1e-6)
    blurred = PatchCoreModel(BlockMeans(), m.memory, blur_sigma=2.0)(bad)[0][0]
    assert blurred.argmax() // 32 in range(20, 24) and blurred.argmax() % 32 in range(8, 12)


def test_encoding_is_applied_to_stored_values():
    enc = InputEncoding("intensity", scale=2.0)
    normal = torch.full((1, 1, 16, 16), 1.0)               # stored 1.0 -> encoded 0.5
    mem = BlockMeans()(normal / 2).permute(0, 2, 3, 1).reshape(-1, 3)
    m = PatchCoreModel(BlockMeans(), mem, encoding=enc, blur_sigma=0)
    assert float(m(normal)[1]) == 0
    assert float(PatchCoreModel(BlockMeans(), mem, blur_sigma=0)(normal)[1]) == pytest.approx(0.5 * 3 ** 0.5)
