"""Binary AUROC and average precision (image level and pixel level).

Stateful form (the one implementation): :class:`BinaryROC` (``update(preds, target, ignore=None)`` then ``compute()``;
pixels where ``ignore`` is nonzero are left out), exact or memory-bounded (fixed-bin histogram; see ``_curve``).  Functional forms (exact,
all data in memory) feed one exact ``BinaryROC``: :func:`binary_auroc`,
:func:`binary_average_precision`, :func:`binary_roc_curve`, :func:`binary_pr_curve`.  Conventions follow scikit-learn:
AUROC is the trapezoid area of the ROC (ties are one step, i.e. half credit), AP is
``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds.

Histogram mode error bounds (computed from the data, reported by ``compute()``):

* AUROC: ``|AUROC_hist - AUROC_exact| <= sum_b P_b N_b / (2 P N)`` (pairs sharing a bin are
  the only ones whose order is lost; the histogram gives them half credit).
* AP: exact AP lies in ``[ap_lower, ap_upper]``; inside a bin holding p positives and n
  negatives after TP0/FP0 higher-ranked ones, each positive's precision lies between
  ``(TP0+i)/(TP0+i+FP0+n)`` and ``(TP0+p)/(TP0+p+FP0)``.
"""
from __future__ import annotations

import numpy as np
from scipy.special import digamma

from polar_detect.metrics._curve import (DEFAULT_BINS, DEFAULT_MAX_EXACT, ScoreAccumulator, area_error_bound,
                     area_up_to, rates, to_numpy)


def _prepare(preds, target, ignore=None):
    """Flattened (scores, bool target); pixels where ``ignore`` is true are dropped."""
    s = to_numpy(preds).ravel()
    t = to_numpy(target).ravel()
    if s.shape != t.shape:
        raise ValueError(f"preds and target differ in size: {s.shape} vs {t.shape}")
    if s.dtype.kind not in "f":
        s = s.astype(np.float64)
    t = t.astype(bool)
    if ignore is not None:
        keep = ~keep_mask(ignore, s.shape)
        s, t = s[keep], t[keep]
    return s, t


def keep_mask(ignore, shape) -> np.ndarray:
    """``ignore`` (array-like, nonzero = ignored) flattened and checked against ``shape``."""
    g = to_numpy(ignore).ravel().astype(bool)
    if g.shape != tuple(shape):
        raise ValueError(f"ignore mask and preds differ in size: {g.shape} vs {tuple(shape)}")
    return g


def _roc_from_sweep(thr, cp, cq):
    fpr, tpr = rates(cp, cq)
    return fpr, tpr, np.r_[np.inf, thr]


def _ap_from_sweep(cp, cq):
    if cp.size == 0 or cp[-1] <= 0:
        return float("nan")
    dp = np.diff(np.r_[0.0, cp])
    prec = np.where(cp + cq > 0, cp / np.maximum(cp + cq, 1e-300), 1.0)
    return float(np.sum(dp * prec) / cp[-1])


def _ap_bounds(cp, cq):
    """Bounds of the exact AP given only per-bin counts (see module docstring)."""
    P = cp[-1]
    dp = np.diff(np.r_[0.0, cp])
    dn = np.diff(np.r_[0.0, cq])
    tp0 = cp - dp
    fp0 = cq - dn
    upper = dp * np.where(dp > 0, cp / np.maximum(cp + fp0, 1e-300), 0.0)
    # sum_{i=1..p} (a+i)/(a+i+c) = p - c * (psi(a+c+p+1) - psi(a+c+1)),  a = TP0, c = FP0 + n
    a, c = tp0, cq
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = dp - c * (digamma(a + c + dp + 1) - digamma(a + c + 1))
    lower = np.where(dp > 0, np.where(c > 0, lower, dp), 0.0)
    lo = float(np.sum(lower) / P)
    hi = float(np.sum(upper) / P)
    slack = 1e-9  # floating-point slack of the digamma differences
    return max(0.0, lo - slack), min(1.0, hi + slack)


# ------------------------------------------------------------------ stateful
class _StreamingScores:
    """Shared state of the stateful score metrics: a ``ScoreAccumulator`` fed by ``update``."""

    def __init__(self, mode: str = "auto", bins: int = DEFAULT_BINS, value_range=None,
                 max_exact: int = DEFAULT_MAX_EXACT):
        self.acc = ScoreAccumulator(mode, bins, value_range, max_exact)

    def reset(self):
        self.acc.reset()

    def update(self, preds, target, ignore=None) -> None:
        """Add pixels (or images); those where ``ignore`` is nonzero count neither as
        positives nor as negatives."""
        s, t = _prepare(preds, target, ignore)
        self.acc.update(s, t, ~t)


class BinaryROC(_StreamingScores):
    """Streaming AUROC + AP.

    ``mode``: ``exact`` (keeps all scores), ``hist`` (fixed bins over ``value_range``),
    ``auto`` (exact up to ``max_exact`` values, then histogram).  ``compute()`` returns the
    metrics with their error bounds (0 in exact mode).
    """

    def roc_curve(self):
        thr, cp, cq, _, _ = self.acc.sweep()
        return _roc_from_sweep(thr, cp, cq)

    def pr_curve(self):
        thr, cp, cq, _, _ = self.acc.sweep()
        prec = cp / np.maximum(cp + cq, 1e-300)
        rec = cp / cp[-1] if cp.size and cp[-1] > 0 else np.zeros_like(cp)
        return prec, rec, thr

    def compute(self) -> dict:
        thr, cp, cq, _, _ = self.acc.sweep()
        n_pos = float(cp[-1]) if cp.size else 0.0
        n_neg = float(cq[-1]) if cq.size else 0.0
        out = {"n_pos": int(n_pos), "n_neg": int(n_neg), **self.acc.state_dict()}
        if n_pos == 0:
            out.update(auroc=None, ap=None, auroc_error_bound=None, ap_lower=None, ap_upper=None,
                       note="no positive")
            return out
        ap = _ap_from_sweep(cp, cq)
        if n_neg == 0:
            out.update(auroc=None, ap=ap, auroc_error_bound=None, ap_lower=ap, ap_upper=ap,
                       note="no negative")
            return out
        fpr, tpr = rates(cp, cq)
        auroc = area_up_to(fpr, tpr, 1.0)
        if self.acc.mode == "exact":
            err, lo, hi = 0.0, ap, ap
        else:
            err = area_error_bound(fpr, tpr, 1.0)
            lo, hi = _ap_bounds(cp, cq)
        out.update(auroc=auroc, ap=ap, auroc_error_bound=err, ap_lower=lo, ap_upper=hi)
        return out


# ------------------------------------------------------------------ functional
def _exact(preds, target) -> BinaryROC:
    """A :class:`BinaryROC` in exact mode fed with all of ``preds``/``target`` at once."""
    m = BinaryROC(mode="exact")
    m.update(preds, target)
    return m


def _nan_if_none(x) -> float:
    return float("nan") if x is None else float(x)


def binary_roc_curve(preds, target):
    """(fpr, tpr, thresholds); thresholds[0] = inf (nothing positive)."""
    return _exact(preds, target).roc_curve()


def binary_auroc(preds, target) -> float:
    """Area under the ROC curve; NaN when one class is absent."""
    return _nan_if_none(_exact(preds, target).compute()["auroc"])


def binary_pr_curve(preds, target):
    """(precision, recall, thresholds) for descending thresholds."""
    return _exact(preds, target).pr_curve()


def binary_average_precision(preds, target) -> float:
    """Average precision (scikit-learn's definition); NaN when there is no positive."""
    return _nan_if_none(_exact(preds, target).compute()["ap"])
