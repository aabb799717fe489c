"""F1-maximising threshold and thresholded pixel metrics."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from polar_detect.metrics import F1OptimalThreshold, binary_prf_at_threshold, f1_optimal_threshold


def test_hand_made_f1_max():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    t = np.array([0, 0, 1, 0, 1, 1], bool)
    # t=.6: F1 .5; .5: .8; .4: 2/3; .3: P 3/4 R 1 -> 6/7; .2: .75; .1: 2/3
    r = f1_optimal_threshold(s, t)
    assert r["threshold"] == pytest.approx(0.3)
    assert r["f1"] == pytest.approx(6 / 7)
    assert r["precision"] == pytest.approx(0.75) and r["recall"] == pytest.approx(1.0)


def test_threshold_applied_to_test():
    r = binary_prf_at_threshold([0.2, 0.3, 0.31, 0.9, 0.1], [0, 1, 0, 1, 1], 0.3)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 1)  # score >= threshold is positive
    assert r["f1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(4))
def test_random_vs_brute_force_sweep(seed):
    rng = np.random.default_rng(seed)
    s = np.round(rng.random(500), 2)
    t = rng.random(500) < s
    best = max(f1_score(t, s >= u) for u in np.unique(s))
    r = f1_optimal_threshold(s, t)
    assert r["f1"] == pytest.approx(best, abs=1e-12)
    assert f1_score(t, s >= r["threshold"]) == pytest.approx(best, abs=1e-12)
    prf = binary_prf_at_threshold(s, t, r["threshold"])
    assert prf["precision"] == pytest.approx(precision_score(t, s >= r["threshold"]))
    assert prf["recall"] == pytest.approx(recall_score(t, s >= r["threshold"]))


def test_histogram_threshold_is_bin_edge_and_near_optimal():
    rng = np.random.default_rng(0)
    s = rng.random(50_000)
    t = rng.random(s.size) < s ** 4
    m = F1OptimalThreshold(mode="hist", bins=1024, value_range=(0.0, 1.0))
    m.update(s, t)
    r = m.compute()
    assert r["threshold"] * 1024 == pytest.approx(round(r["threshold"] * 1024))
    assert f1_score(t, s >= r["threshold"]) == pytest.approx(r["f1"], abs=1e-9)
    assert r["f1"] >= f1_optimal_threshold(s, t)["f1"] - 0.01
