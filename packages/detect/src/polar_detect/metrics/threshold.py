"""F1-maximising pixel threshold (chosen on validation) and thresholded pixel metrics.

Convention everywhere: a pixel is predicted anomalous iff ``score >= threshold``; pixels
where the optional ``ignore`` mask of ``update`` is nonzero are left out of every count.
The threshold is a score value taken from the sweep (a distinct validation score in exact
mode, a bin lower edge in histogram mode); among equal F1 values the highest threshold wins.
"""
from __future__ import annotations

import numpy as np

from ._curve import ScoreAccumulator, to_numpy
from .roc import _prepare, _StreamingScores


def _best_f1(acc: ScoreAccumulator) -> dict:
    thr, cp, cq, _, _ = acc.sweep()
    if not cp.size or cp[-1] == 0:
        return {"threshold": None, "f1": None, "precision": None, "recall": None,
                "note": "no positive pixel to choose a threshold on"}
    prec = cp / np.maximum(cp + cq, 1e-300)
    rec = cp / cp[-1]
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)
    k = int(np.argmax(f1))
    return {"threshold": float(thr[k]), "f1": float(f1[k]), "precision": float(prec[k]),
            "recall": float(rec[k]), **acc.state_dict()}


class F1OptimalThreshold(_StreamingScores):
    """Stateful F1-maximising threshold: ``update(preds, target)``; ``compute()`` -> dict."""

    def compute(self) -> dict:
        return _best_f1(self.acc)


def f1_optimal_threshold(preds, target) -> dict:
    """Exact F1-maximising threshold: {"threshold", "f1", "precision", "recall"}."""
    m = F1OptimalThreshold(mode="exact")
    m.update(preds, target)
    return m.compute()


def _prf(tp, fp, fn, tn) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": int(tp), "fp": int(fp), "fn": int(fn),
            "tn": int(tn)}


class ThresholdedPRF:
    """Stateful pixel precision/recall/F1 at a fixed threshold (counts only)."""

    def __init__(self, threshold: float):
        self.threshold = float(threshold)
        self.reset()

    def reset(self):
        self.tp = self.fp = self.fn = self.tn = 0

    def update(self, preds, target, ignore=None) -> None:
        s, t = _prepare(preds, target, ignore)
        p = s >= self.threshold
        self.tp += int(np.count_nonzero(p & t))
        self.fp += int(np.count_nonzero(p & ~t))
        self.fn += int(np.count_nonzero(~p & t))
        self.tn += int(np.count_nonzero(~p & ~t))

    def compute(self) -> dict:
        return {"threshold": self.threshold, **_prf(self.tp, self.fp, self.fn, self.tn)}


def binary_prf_at_threshold(preds, target, threshold: float) -> dict:
    m = ThresholdedPRF(threshold)
    m.update(to_numpy(preds), to_numpy(target))
    return m.compute()
