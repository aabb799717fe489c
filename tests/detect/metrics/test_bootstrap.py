"""Stratified percentile bootstrap intervals (polar_detect.metrics.bootstrap): equal to a brute
force over the same resamples, stratified (class counts kept), deterministic, narrowing with
more data, and covering a known AUROC about as often as the level says."""
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from polar_detect.metrics import auroc_bootstrap_ci, binary_auroc, bootstrap_ci, stratified_bootstrap_indices


def test_bootstrap_matches_brute_force_and_is_stratified():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(12, bool), np.zeros(20, bool)]
    s = rng.normal(size=32) + y
    s[3] = s[20]  # a tie across classes
    idx = stratified_bootstrap_indices(y, 300, seed=4)
    assert idx.shape == (300, 32) and (y[idx].sum(axis=1) == 12).all()    # class counts kept
    brute = np.array([roc_auc_score(y[i], s[i]) for i in idx])
    ci = auroc_bootstrap_ci(s, y, n_resamples=300, seed=4)
    assert ci["low"] == pytest.approx(np.quantile(brute, 0.025), abs=1e-12)
    assert ci["high"] == pytest.approx(np.quantile(brute, 0.975), abs=1e-12)
    assert ci["point"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ci["low"] <= ci["point"] <= ci["high"]
    generic = bootstrap_ci(binary_auroc, s, y, n_resamples=300, seed=4)
    assert (generic["low"], generic["high"]) == pytest.approx((ci["low"], ci["high"]), abs=1e-12)
    assert auroc_bootstrap_ci(s, y, n_resamples=300, seed=4) == ci                  # deterministic


def test_bootstrap_narrows_with_more_data_and_edge_cases():
    rng = np.random.default_rng(2)

    def width(n):
        y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        ci = auroc_bootstrap_ci(rng.normal(size=2 * n) + y, y, n_resamples=500)
        return ci["high"] - ci["low"]

    assert width(400) < 0.5 * width(25)
    perfect = auroc_bootstrap_ci([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert perfect["low"] == perfect["high"] == perfect["point"] == 1.0
    one_class = auroc_bootstrap_ci([0.1, 0.2], [0, 0])
    assert np.isnan(one_class["low"]) and np.isnan(one_class["point"])
    with pytest.raises(ValueError, match="level"):
        auroc_bootstrap_ci([0.1, 0.9], [0, 1], level=1.5)


def test_interval_covers_a_known_auroc_at_about_its_level():
    """Normal scores N(0, 1), anomalous N(d, 1): the true AUROC is Phi(d / sqrt 2). Over many
    independent data sets the 95 % interval holds it in about 95 % of them (percentile
    bootstrap with 40 + 40 images: a little under), and the 50 % interval in about half."""
    d = 1.0
    true_auroc = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    hits95 = hits50 = 0
    n_sets = 150
    for k in range(n_sets):
        s = rng.normal(size=80) + d * y
        ci = auroc_bootstrap_ci(s, y, n_resamples=200, seed=k)
        assert ci["low"] <= ci["point"] <= ci["high"]
        hits95 += ci["low"] <= true_auroc <= ci["high"]
        half = auroc_bootstrap_ci(s, y, n_resamples=200, level=0.5, seed=k)
        assert ci["low"] <= half["low"] <= half["high"] <= ci["high"]          # nested intervals
        hits50 += half["low"] <= true_auroc <= half["high"]
    assert 0.88 <= hits95 / n_sets <= 0.99, hits95
    assert 0.35 <= hits50 / n_sets <= 0.65, hits50


def test_stratified_indices_keep_each_class_in_its_columns():
    y = np.array([0, 1, 0, 0, 1, 0, 0], bool)
    idx = stratified_bootstrap_indices(y, 500, seed=2)
    assert idx.shape == (500, 7)
    assert y[idx[:, :2]].all() and not y[idx[:, 2:]].any()      # first n_pos columns anomalous, then normal
    assert set(np.unique(idx)) == set(range(7))                 # every image can be drawn
    counts = np.bincount(idx[:, 2:].ravel(), minlength=7)[~y]
    assert counts.min() > 0.8 * counts.mean()                   # uniform within a class
    assert np.array_equal(idx, stratified_bootstrap_indices(y, 500, seed=2))
    assert not np.array_equal(idx, stratified_bootstrap_indices(y, 500, seed=3))
    with pytest.raises(ValueError, match="n_resamples"):
        stratified_bootstrap_indices(y, 0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in size"):
        auroc_bootstrap_ci([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="NaN or infinite"):
        auroc_bootstrap_ci([0.1, np.inf], [0, 1])
