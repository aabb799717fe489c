"""Sequential coreset rule (issue 6) against a brute-force reference; greedy k-center."""
import numpy as np
import pytest
import torch

from polar_detect.models.patchcore.coreset import SequentialCoreset, greedy_kcenter, meld


def brute_force(points: np.ndarray, size: int) -> np.ndarray:
    """The rule written out literally, recomputing everything for every point (float64)."""
    M = []
    for p in points:
        if len(M) < size:
            M.append(p.copy())
            continue
        A = np.stack(M)
        d_p = np.sqrt(((A - p) ** 2).sum(1)).min()
        D = np.sqrt(((A[:, None] - A[None]) ** 2).sum(-1))
        np.fill_diagonal(D, np.inf)
        i, j = np.unravel_index(np.argmin(D), D.shape)   # first (row-major) smallest entry
        if d_p > D[i, j]:
            M[min(i, j)] = p.copy()
    return np.stack(M)


@pytest.mark.parametrize("seed,n,dim,size,chunk", [(0, 300, 4, 12, 7), (1, 400, 16, 25, 64),
                                                   (2, 250, 2, 9, 1000)])
def test_replacement_rule_matches_brute_force(seed, n, dim, size, chunk):
    rng = np.random.default_rng(seed)
    # mixture: clusters + outliers, so replacements keep happening late in the stream
    x = np.concatenate([rng.normal(size=(n // 2, dim)) * 0.3,
                        rng.normal(size=(n - n // 2, dim)) * 2.0])
    rng.shuffle(x)
    ref = brute_force(x, size)
    cs = SequentialCoreset(size, dim, chunk_size=chunk, dtype=torch.float64)
    for s in range(0, n, 37):                      # arbitrary call boundaries
        cs.update(torch.from_numpy(x[s: s + 37]))
    np.testing.assert_allclose(cs.points.numpy(), ref, rtol=0, atol=1e-12)
    # D_M kept incrementally equals the recomputed matrix
    A = cs.points.numpy()
    D = np.sqrt(((A[:, None] - A[None]) ** 2).sum(-1))
    np.fill_diagonal(D, np.inf)
    np.testing.assert_allclose(cs.D.numpy(), D, atol=1e-9)
    np.testing.assert_allclose(cs.row_min.numpy(), D.min(1), atol=1e-9)


def test_min_pairwise_distance_never_decreases():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 8, generator=g, dtype=torch.float64) * torch.rand(3000, 1, generator=g,
                                                                             dtype=torch.float64) * 3
    cs = SequentialCoreset(40, 8, chunk_size=50, dtype=torch.float64)
    cs.update(x[:40])
    prev, replaced = cs.min_pairwise(), 0
    for s in range(40, len(x), 10):
        replaced += cs.update(x[s: s + 10])
        cur = cs.min_pairwise()
        assert cur >= prev - 1e-12, (s, prev, cur)
        prev = cur
    assert replaced > 10                               # the property was exercised


def test_meld_equals_sequential_over_union():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(60, 6, generator=g, dtype=torch.float64)
    b = torch.randn(45, 6, generator=g, dtype=torch.float64) * 2 + 1
    merged = meld([a, b], 30, chunk_size=16)
    ref = brute_force(torch.cat([a, b]).numpy(), 30)
    np.testing.assert_allclose(merged.numpy(), ref, atol=1e-12)
    # and differs from the other order (order matters, so the test can tell)
    assert not np.allclose(meld([b, a], 30).numpy(), ref)


def test_greedy_kcenter_covers_better_than_random():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(2000, 5, generator=g), torch.randn(20, 5, generator=g) + 12])
    sel = greedy_kcenter(x, 30, proj_dim=None)
    assert len(set(sel.tolist())) == 30
    cover = torch.cdist(x, x[sel]).min(1).values.max()
    rnd = torch.cdist(x, x[torch.randperm(len(x), generator=g)[:30]]).min(1).values.max()
    assert cover < rnd and (sel >= 2000).any()          # the far cluster is covered
