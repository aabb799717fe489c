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


# --- exact and histogram modes agree (issue 16 item 6) ----------------------------------
def _hist_f1(s, t, bins, chunks=5, ignore=None):
    m = F1OptimalThreshold(mode="hist", bins=bins, value_range=(float(s.min()), float(s.max())))
    parts = np.array_split(np.arange(s.size), chunks)
    for ch in parts:
        m.update(s[ch], t[ch], None if ignore is None else ignore[ch])
    edge = m.compute()
    assert m.needs_refinement and edge["exact"] is False
    m.start_refinement()
    for ch in parts:
        m.refine(s[ch], t[ch], None if ignore is None else ignore[ch])
    return edge, m.compute()


@pytest.mark.parametrize("seed", range(12))
def test_histogram_mode_threshold_equals_exact(seed):
    """Same threshold, F1, precision and recall, bit for bit, whatever the binning."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(200, 20_000))
    s = (rng.random(n) ** rng.uniform(0.3, 3)).astype(np.float32)
    if seed % 3 == 0:
        s = np.round(s, 2).astype(np.float32)              # many ties
    t = rng.random(n) < s ** rng.uniform(1, 6)
    ignore = rng.random(n) < 0.1 if seed % 2 else None
    exact = F1OptimalThreshold(mode="exact")
    exact.update(s, t, ignore)
    e = exact.compute()
    edge, h = _hist_f1(s, t, int(rng.integers(4, 300)), ignore=ignore)
    for k in ("threshold", "f1", "precision", "recall"):
        assert h[k] == e[k], (k, h[k], e[k])
    assert h["exact"] is True and h["mode"] == "hist"
    keep = ~ignore if ignore is not None else np.ones(n, bool)
    assert h["threshold"] in set(s[keep].astype(np.float64))     # a score of the data, not a bin edge


def test_histogram_edge_alone_would_differ():
    """The refinement is what makes the modes agree: the bin edge itself is another threshold."""
    rng = np.random.default_rng(0)
    s = rng.random(50_000).astype(np.float32)
    t = rng.random(s.size) < s ** 4
    edge, h = _hist_f1(s, t, 64)
    assert edge["threshold"] != h["threshold"] == f1_optimal_threshold(s, t)["threshold"]


def test_evaluate_exact_and_histogram_modes_give_identical_thresholded_metrics(tmp_path):
    """evaluate with the histogram switch lowered to 10 pixels: threshold, pixel P/R/F1 and
    counts, defect-wise recall and detection rates equal the exact run's (val and test-chosen)."""
    from polar_detect.evaluation import evaluate as ev

    from tests.detect.evaluation.handmade import make_run
    data, pred, vpred, _, _ = make_run(tmp_path, seed=3)
    for val in (vpred, None):
        exact = ev.evaluate(pred, data, tmp_path / "a", val, report=False, quiet=True)
        hist = ev.evaluate(pred, data, tmp_path / "b", val, report=False, quiet=True,
                           max_exact_pixels=10, bins=48)
        assert exact["approximation"]["mode"] == "exact" and hist["approximation"]["mode"] == "hist"
        assert hist["threshold"]["value"] == exact["threshold"]["value"]
        assert hist["thresholded"] == exact["thresholded"]
        assert hist["defect_wise_recall"] == exact["defect_wise_recall"]
        assert hist["instance_detection_rate"] == exact["instance_detection_rate"]
        assert hist["threshold"]["degeneracy"] == exact["threshold"]["degeneracy"]


@pytest.mark.parametrize("seed", range(3))
def test_f1_threshold_and_pr_curve_match_sklearn_precision_recall_curve(seed):
    """The F1-max threshold is the highest threshold of sklearn's PR curve reaching the best
    F1, and ``binary_pr_curve`` holds the same (precision, recall) points as sklearn's."""
    from sklearn.metrics import precision_recall_curve

    from polar_detect.metrics import binary_pr_curve
    rng = np.random.default_rng(seed)
    s = np.round(rng.random(400), 2)
    t = rng.random(400) < s
    p, r, thr = precision_recall_curve(t, s)
    p, r = p[:-1], r[:-1]                                  # sklearn's closing (1, 0) point has no threshold
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    best = f1.max()
    got = f1_optimal_threshold(s, t)
    assert got["f1"] == pytest.approx(best, abs=1e-12)
    assert got["threshold"] == thr[np.isclose(f1, best, rtol=0, atol=1e-12)].max()
    ours_p, ours_r, ours_thr = binary_pr_curve(s, t)
    assert np.allclose(np.sort(ours_thr), thr) and np.allclose(ours_p[::-1], p) and np.allclose(ours_r[::-1], r)
