"""Image/pixel AUROC and AP against scikit-learn (exact mode) and against the stated bounds
(histogram mode); ignore masks in the stateful pixel metrics (ROC and, with it, F1 threshold,
thresholded PRF, AUPRO and AU-sPRO) against scikit-learn on the kept pixels."""
import cv2
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from polar_detect.metrics import (AUPRO, AUsPRO, BinaryROC, F1OptimalThreshold, ThresholdedPRF, binary_auroc,
                                  binary_average_precision)


def _cases():
    rng = np.random.default_rng(7)
    for k in range(6):
        n = int(rng.integers(20, 3000))
        t = rng.random(n) < rng.uniform(0.05, 0.6)
        s = rng.normal(size=n) + t * rng.uniform(0, 2)
        if k % 2:  # heavy ties
            s = np.round(s, 1)
        t[0], t[1] = True, False
        yield s, t


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: f"n{len(c[0])}")
def test_functional_matches_sklearn(case):
    s, t = case
    assert binary_auroc(s, t) == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    assert binary_average_precision(s, t) == pytest.approx(average_precision_score(t, s), abs=1e-12)


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: f"n{len(c[0])}")
def test_stateful_batches_match_sklearn(case):
    s, t = case
    m = BinaryROC(mode="exact")
    for chunk in np.array_split(np.arange(s.size), 5):
        m.update(s[chunk], t[chunk])
    r = m.compute()
    assert r["auroc"] == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    assert r["ap"] == pytest.approx(average_precision_score(t, s), abs=1e-12)
    assert r["auroc_error_bound"] == 0.0


def test_hand_made_known_answers():
    t = np.array([0, 0, 1, 1], bool)
    assert binary_auroc([0.1, 0.2, 0.8, 0.9], t) == 1.0
    assert binary_auroc([0.9, 0.8, 0.2, 0.1], t) == 0.0
    assert binary_auroc([0.5] * 4, t) == 0.5           # all tied: half credit
    assert binary_average_precision([0.5] * 4, t) == 0.5  # = prevalence
    # one tie across classes: pairs (0.8>0.1),(0.8>0.5)... AUROC = (1 + 0.5 + 1 + 1)/4
    assert binary_auroc([0.1, 0.5, 0.5, 0.9], t) == pytest.approx(0.875)
    assert np.isnan(binary_auroc([0.1, 0.2], [1, 1]))


def test_torch_input():
    torch = pytest.importorskip("torch")
    s = torch.tensor([0.1, 0.4, 0.35, 0.8])
    t = torch.tensor([0, 0, 1, 1])
    assert binary_auroc(s, t) == pytest.approx(roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]))


def test_histogram_mode_within_stated_bounds():
    rng = np.random.default_rng(3)
    s = rng.random(200_000)
    t = rng.random(s.size) < s ** 2
    exact_auc, exact_ap = roc_auc_score(t, s), average_precision_score(t, s)
    for bins in (16, 256, 65536):
        m = BinaryROC(mode="hist", bins=bins, value_range=(0.0, 1.0))
        m.update(s, t)
        r = m.compute()
        assert abs(r["auroc"] - exact_auc) <= r["auroc_error_bound"] + 1e-12
        assert r["ap_lower"] - 1e-12 <= exact_ap <= r["ap_upper"] + 1e-12
    assert r["auroc_error_bound"] < 1e-4 and abs(r["auroc"] - exact_auc) < 1e-4  # 65536 bins: tight
    # coarse bins must actually be approximate (the bound is not vacuous-zero)
    m = BinaryROC(mode="hist", bins=4, value_range=(0.0, 1.0))
    m.update(s, t)
    assert m.compute()["auroc_error_bound"] > 1e-3


def test_histogram_exact_when_bins_separate_values():
    rng = np.random.default_rng(1)
    s = (rng.integers(0, 8, 5000) + 0.5) / 8  # one value per bin
    t = rng.random(s.size) < s
    m = BinaryROC(mode="hist", bins=8, value_range=(0.0, 1.0))
    m.update(s, t)
    r = m.compute()
    assert r["auroc"] == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    assert r["ap"] == pytest.approx(average_precision_score(t, s), abs=1e-12)


def test_auto_mode_switches_to_histogram_and_keeps_bound():
    rng = np.random.default_rng(5)
    m = BinaryROC(mode="auto", bins=1024, max_exact=10_000)
    ss, tt = [], []
    for _ in range(6):
        s = rng.normal(size=4000)
        t = rng.random(s.size) < 1 / (1 + np.exp(-2 * s))
        m.update(s, t)
        ss.append(s)
        tt.append(t)
    r = m.compute()
    assert r["mode"] == "hist"
    s, t = np.concatenate(ss), np.concatenate(tt)
    assert abs(r["auroc"] - roc_auc_score(t, s)) <= r["auroc_error_bound"] + 1e-12
    assert r["ap_lower"] <= average_precision_score(t, s) <= r["ap_upper"]


# ------------------------------------------------------------------ metrics with ignore
def test_stateful_metrics_ignore_matches_masked_sklearn():
    rng = np.random.default_rng(0)
    a = rng.random((3, 20, 20))
    t = rng.random((3, 20, 20)) < 0.2
    g = (rng.random((3, 20, 20)) < 0.3) & ~t
    roc = BinaryROC(mode="exact")
    f1 = F1OptimalThreshold(mode="exact")
    prf = ThresholdedPRF(0.5)
    for ai, ti, gi in zip(a, t, g):
        roc.update(ai, ti, gi)
        f1.update(ai, ti, gi)
        prf.update(ai, ti, gi)
    k = ~g
    assert roc.compute()["auroc"] == pytest.approx(roc_auc_score(t[k], a[k]), abs=1e-12)
    assert roc.compute()["n_neg"] == (~t & k).sum()
    p, r, _ = precision_recall_curve(t[k], a[k])
    assert f1.compute()["f1"] == pytest.approx((2 * p * r / np.maximum(p + r, 1e-300)).max(), abs=1e-12)
    assert prf.compute()["fp"] == ((a >= 0.5) & ~t & k).sum()
    with pytest.raises(ValueError, match="ignore mask"):
        BinaryROC().update(a[0], t[0], g[0][:5])
    # AU-sPRO without saturation equals AUPRO with the same ignore mask (regions = components)
    sp, pro = AUsPRO(0.3, mode="exact"), AUPRO(0.3, mode="exact")
    for ai, ti, gi in zip(a, t, g):
        n, lab = cv2.connectedComponents((ti & ~gi).astype(np.uint8), connectivity=8)
        regs = np.stack([lab == j for j in range(1, n)]) if n > 1 else np.zeros((0,) + ai.shape, bool)
        sp.update(ai, regs, ignore=gi)
        pro.update(ai, ti, gi)
    assert sp.compute()["value"] == pytest.approx(pro.compute()["value"], abs=1e-12)
