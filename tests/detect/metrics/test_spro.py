"""AU-sPRO against a brute-force implementation written here."""
import math

import numpy as np
import pytest

from polar_detect.metrics import AUsPRO, aupro, auspro
from tests.detect.metrics.test_pro import trapezoid_to_limit


def brute_auspro(maps, regions, sats, rels, limit=0.05):
    regs = []
    for i, (rs, st, rl) in enumerate(zip(regions, sats, rels)):
        for r, thr, rel in zip(rs, st, rl):
            area = int(r.sum())
            if area == 0:
                continue
            sat = math.floor(thr * area) if rel else min(thr, area)
            regs.append((i, r, max(sat, 1)))
    neg = [~np.any(rs, axis=0) if len(rs) else np.ones(m.shape, bool) for m, rs in zip(maps, regions)]
    n_neg = sum(int(x.sum()) for x in neg)
    fprs, ys = [], []
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        pred = [m >= t for m in maps]
        ys.append(np.mean([min(1.0, (pred[i] & r).sum() / sat) for i, r, sat in regs]))
        fprs.append(sum(int((p & n).sum()) for p, n in zip(pred, neg)) / n_neg)
    return trapezoid_to_limit(fprs, ys, limit)


def random_case(seed, n=3, size=20):
    rng = np.random.default_rng(seed)
    maps, regions, sats, rels = [], [], [], []
    for i in range(n):
        k = int(rng.integers(0 if i else 1, 4))
        rs = np.zeros((k, size, size), bool)
        for j in range(k):
            x, y = rng.integers(0, size - 6, 2)
            w, h = rng.integers(1, 8, 2)
            rs[j, y:y + h, x:x + w] = True  # regions may overlap
        s = rng.random((size, size)) + 0.5 * rs.any(axis=0)
        if seed % 2:
            s = np.round(s, 1)
        maps.append(s)
        regions.append(rs)
        rel = list(rng.random(k) < 0.5)
        sats.append([float(rng.uniform(0.1, 1.0)) if r else float(rng.integers(1, 30)) for r in rel])
        rels.append(rel)
    return maps, regions, sats, rels


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0.05, 0.3])
def test_auspro_matches_brute_force(seed, limit):
    maps, regions, sats, rels = random_case(seed)
    assert auspro(maps, regions, sats, rels, fpr_limit=limit) == pytest.approx(
        brute_auspro(maps, regions, sats, rels, limit), abs=1e-9)


def test_known_answer_saturation():
    s = np.full((10, 10), 0.5)
    r = np.zeros((1, 10, 10), bool)
    r[0, 0, :] = True            # 10-pixel region
    s[0, :5] = 0.9               # half of it found before any false positive
    s[0, 5:] = 0.1
    # absolute saturation 5 px: the region saturates at t=0.9, FPR 0 -> area 1
    assert auspro([s], [r], [[5.0]], [[False]]) == pytest.approx(1.0)
    assert auspro([s], [r], [[0.5]], [[True]]) == pytest.approx(1.0)   # 50 % of 10 px
    assert auspro([s], [r], [[1.0]], [[True]]) == pytest.approx(0.5)   # no saturation: PRO
    assert auspro([s], [r], [[8.0]], [[False]]) == pytest.approx(5 / 8)


def test_unsaturated_equals_aupro_on_components():
    rng = np.random.default_rng(2)
    m = np.zeros((2, 16, 16), bool)
    m[0, 2:5, 2:6] = m[0, 10:12, 9:15] = m[1, 4:9, 4:6] = True
    s = rng.random(m.shape) + 0.4 * m
    regions = [np.stack([m[0] & (np.arange(16)[:, None] < 8), m[0] & (np.arange(16)[:, None] >= 8)]), m[1][None]]
    assert auspro(list(s), regions, fpr_limit=0.05) == pytest.approx(aupro(s, m, fpr_limit=0.05), abs=1e-12)


def test_histogram_mode_within_bound():
    maps, regions, sats, rels = random_case(8, n=5, size=32)
    exact = auspro(maps, regions, sats, rels)
    h = AUsPRO(mode="hist", bins=256, value_range=(0.0, 1.5))
    for a, r, st, rl in zip(maps, regions, sats, rels):
        h.update(a, r, st, rl)
    res = h.compute()
    assert abs(res["value"] - exact) <= res["error_bound"] + 1e-12
