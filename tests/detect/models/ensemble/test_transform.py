"""The global transformation block (resize -> concatenate -> standardise/balance -> PCA)
against scikit-learn, and the streaming moments against a one-shot computation."""
import numpy as np
import pytest
import torch

from polar_detect.models.ensemble.transform import (GlobalTransform, MomentAccumulator, flatten_patches,
                                             resize_concat)

sklearn = pytest.importorskip("sklearn")
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

CHANNELS = [5, 3, 1]          # e.g. a backbone, a DRÆM encoder, a PatchCore distance map


def _maps(seed=0, batches=4):
    """Correlated features of three 'sources' in very different units, as (B, D, h, w) maps:
    shared latent factors mixed per source, scaled 1 / 40 / 0.01, plus noise."""
    g = np.random.default_rng(seed)
    mix = [g.normal(size=(4, c)) for c in CHANNELS]
    scale = [1.0, 40.0, 0.01]
    maps = []
    for _ in range(batches):
        z = g.normal(size=(3, 6, 7, 4))
        parts = [np.einsum("bhwk,kc->bchw", z, m) * s + g.normal(size=(3, c, 6, 7)) * 0.1 * s
                 for m, s, c in zip(mix, scale, CHANNELS)]
        maps.append(torch.tensor(np.concatenate(parts, 1), dtype=torch.float32))
    return maps


def _rows(maps):
    return torch.cat([flatten_patches(m) for m in maps]).double().numpy()


def test_moments_stream_equals_one_shot():
    maps = _maps()
    acc = MomentAccumulator(sum(CHANNELS))
    for m in maps:
        acc.update(flatten_patches(m))
    x = _rows(maps)
    np.testing.assert_allclose(acc.mean.numpy(), x.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(acc.covariance().numpy(), np.cov(x, rowvar=False, bias=True), rtol=1e-9, atol=1e-9)


def _fit(maps, n, balance):
    acc = MomentAccumulator(sum(CHANNELS))
    for m in maps:
        acc.update(flatten_patches(m))
    return GlobalTransform.fit(acc, CHANNELS, n, balance)


def _same_up_to_sign(a, b, atol):
    """Columns (components) of a and b equal up to a per-column sign."""
    s = np.sign(np.sum(a * b, axis=0))
    np.testing.assert_allclose(a * s, b, atol=atol)


@pytest.mark.parametrize("n", [2, 4, 9])
def test_channel_balance_is_standard_scaler_then_pca(n):
    maps = _maps()
    t = _fit(maps, n, "channel")
    x = _rows(maps)
    ref = PCA(n).fit(StandardScaler().fit_transform(x))
    _same_up_to_sign(t.components.double().numpy().T, ref.components_.T, atol=1e-4)
    with torch.no_grad():
        y = flatten_patches(torch.cat([t(m) for m in maps])).double().numpy()
    _same_up_to_sign(y, ref.transform(StandardScaler().fit_transform(x)), atol=1e-3)
    assert t.info["explained_variance_ratio"] == pytest.approx(ref.explained_variance_ratio_.sum(), rel=1e-5)


def test_source_balance_is_block_scaling_then_pca():
    """``source``: centre, scale every source block to total variance D / S, then PCA."""
    maps = _maps()
    t = _fit(maps, 4, "source")
    x = _rows(maps)
    xc = x - x.mean(0)
    d, s, blocks, start = x.shape[1], len(CHANNELS), [], 0
    for c in CHANNELS:
        v = xc[:, start:start + c].var(0).sum()
        blocks.append(xc[:, start:start + c] * np.sqrt(d / (s * v)))
        start += c
    z = np.concatenate(blocks, 1)
    np.testing.assert_allclose(z.var(0).sum(), d, rtol=1e-9)             # total variance D
    ref = PCA(4).fit(z)
    _same_up_to_sign(t.components.double().numpy().T, ref.components_.T, atol=1e-4)
    with torch.no_grad():
        y = t.rows(torch.tensor(x, dtype=torch.float32)).double().numpy()
    _same_up_to_sign(y, ref.transform(z), atol=1e-3)


def test_source_balance_gives_each_source_equal_variance():
    """Without balancing, the 40x-scaled source would take the top component alone."""
    maps = _maps()
    for balance in ("source", "channel"):
        t = _fit(maps, 9, balance)
        with torch.no_grad():
            z = flatten_patches(torch.cat([t.standardise(m) for m in maps])).double().numpy()
        start, per = 0, []
        for c in CHANNELS:
            per.append(z[:, start:start + c].var(0).sum())
            start += c
        want = [sum(CHANNELS) / 3] * 3 if balance == "source" else CHANNELS
        np.testing.assert_allclose(per, want, rtol=1e-4)


def test_all_channels_is_a_rotation():
    """N = D keeps the Euclidean geometry of the balanced features (distances preserved)."""
    maps = _maps()
    t = _fit(maps, sum(CHANNELS), "source")
    c = t.components.double()
    np.testing.assert_allclose((c @ c.T).numpy(), np.eye(sum(CHANNELS)), atol=1e-5)
    with torch.no_grad():
        a, b = t.standardise(maps[0]), t(maps[0])
    np.testing.assert_allclose(a.norm(dim=1).numpy(), b.norm(dim=1).numpy(), rtol=1e-4, atol=1e-5)


def test_resize_concat_bilinear_to_first():
    a, b = torch.rand(2, 3, 6, 8), torch.rand(2, 1, 3, 4)
    out = resize_concat([a, b])
    assert out.shape == (2, 4, 6, 8)
    assert torch.equal(out[:, :3], a)
    ref = torch.nn.functional.interpolate(b, size=(6, 8), mode="bilinear", align_corners=False)
    assert torch.equal(out[:, 3:], ref)


def test_out_dim_bounds():
    with pytest.raises(ValueError, match="PCA output channels"):
        GlobalTransform(4, 5)
