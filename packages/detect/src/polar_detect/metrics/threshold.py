"""F1-maximising pixel threshold (chosen on validation) and thresholded pixel metrics.

Convention everywhere: a pixel is predicted anomalous iff ``score >= threshold``; pixels
where the optional ``ignore`` mask of ``update`` is nonzero are left out of every count.
The threshold is a score value of the data (a distinct validation score); among equal F1
values the highest threshold wins.

Exact and histogram modes choose the *same* threshold.  In histogram mode (memory bounded,
``_curve.ScoreAccumulator``) one pass fills the per-bin counts; a bin lower edge then gives
the exact F1 of the lowest score in that bin, and ``2 (TP0 + p) / (TP0 + p + FP0 + P)``
(every positive of the bin above the threshold, none of its negatives) bounds the F1 of any
threshold inside a bin holding ``p`` positives below ``TP0`` true and ``FP0`` false
positives.  Every bin whose bound reaches the best edge F1 may hold the maximiser; a second
pass over the same data (:meth:`F1OptimalThreshold.refine`) keeps the distinct scores of
those bins only, and the F1 of each is computed with the same arithmetic as exact mode, so
threshold, F1, precision and recall are bit-identical.  Memory of the second pass: the
distinct scores in the candidate bins (a few bins in practice).
"""
from __future__ import annotations

import numpy as np

from polar_detect.metrics._curve import ScoreAccumulator, to_numpy
from polar_detect.metrics.roc import _prepare, _StreamingScores


def _f1_arrays(cp: np.ndarray, cq: np.ndarray, total_pos: float):
    """Precision, recall and F1 of cumulative counts (one arithmetic for both modes)."""
    prec = cp / np.maximum(cp + cq, 1e-300)
    rec = cp / total_pos
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)
    return prec, rec, f1


def _pick(thr, cp, cq, total_pos, extra: dict) -> dict:
    prec, rec, f1 = _f1_arrays(cp, cq, total_pos)
    k = int(np.argmax(f1))                       # thresholds descend: the first max is the highest
    return {"threshold": float(thr[k]), "f1": float(f1[k]), "precision": float(prec[k]),
            "recall": float(rec[k]), **extra}


NO_POSITIVE = {"threshold": None, "f1": None, "precision": None, "recall": None,
               "note": "no positive pixel to choose a threshold on"}


def _best_f1(acc: ScoreAccumulator) -> dict:
    thr, cp, cq, _, _ = acc.sweep()
    if not cp.size or cp[-1] == 0:
        return dict(NO_POSITIVE)
    return _pick(thr, cp, cq, cp[-1], {**acc.state_dict(), "exact": acc.mode == "exact"})


class F1OptimalThreshold(_StreamingScores):
    """Stateful F1-maximising threshold: ``update(preds, target, ignore)``; ``compute()`` -> dict.

    Exact mode: one pass. Histogram mode: ``compute()`` after the first pass gives the best
    bin lower edge (``"exact": False``); call :meth:`start_refinement`, feed the same data to
    :meth:`refine`, and ``compute()`` gives the exact-mode result (module docstring)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._clear_refinement()

    def _clear_refinement(self):
        self._cand = self._refined = self._above = None
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def reset(self):
        super().reset()
        self._clear_refinement()

    @property
    def needs_refinement(self) -> bool:
        """True in histogram mode until :meth:`refine` passes have been completed."""
        return self.acc.mode == "hist" and self._refined is None and bool(self.acc.pos_hist.sum())

    def update(self, preds, target, ignore=None) -> None:
        self._clear_refinement()
        super().update(preds, target, ignore)

    def start_refinement(self) -> None:
        """Mark the bins that may hold the maximiser (their F1 bound reaches the best edge)."""
        ph, nh = self.acc.pos_hist, self.acc.neg_hist
        above_p = np.cumsum(ph[::-1])[::-1] - ph           # positives in higher bins
        above_n = np.cumsum(nh[::-1])[::-1] - nh
        total = float(ph.sum())
        edge = _best_f1(self.acc)["f1"] or 0.0
        bound = 2 * (above_p + ph) / np.maximum(above_p + ph + above_n + total, 1e-300)
        self._cand = ((ph + nh) > 0) & (bound >= edge * (1 - 1e-9))
        self._above = (above_p, above_n)
        self._parts = []

    def refine(self, preds, target, ignore=None) -> None:
        """Second pass: the same data as ``update``; keeps the distinct candidate-bin scores."""
        if self._cand is None:
            raise RuntimeError("call start_refinement() after the first pass")
        s, t = _prepare(preds, target, ignore)
        keep = self._cand[self.acc.bin_index(s)]
        if not keep.any():
            return
        v, inv = np.unique(s[keep].astype(np.float64), return_inverse=True)
        tk = t[keep].astype(np.float64)
        self._parts.append((v, np.bincount(inv, weights=tk, minlength=v.size),
                            np.bincount(inv, weights=1.0 - tk, minlength=v.size)))
        if len(self._parts) > 64:
            self._parts = [self._merge()]

    def _merge(self):
        v = np.concatenate([p[0] for p in self._parts])
        u, inv = np.unique(v, return_inverse=True)
        pos = np.bincount(inv, weights=np.concatenate([p[1] for p in self._parts]), minlength=u.size)
        neg = np.bincount(inv, weights=np.concatenate([p[2] for p in self._parts]), minlength=u.size)
        return u, pos, neg

    def finish_refinement(self) -> dict:
        """Exact F1 at every distinct candidate score; the result equals exact mode's."""
        v, pos, neg = self._merge() if self._parts else (np.zeros(0), np.zeros(0), np.zeros(0))
        v, pos, neg = v[::-1], pos[::-1], neg[::-1]        # descending scores
        b = self.acc.bin_index(v)
        start = np.r_[True, b[1:] != b[:-1]]               # first value of each bin group
        group = np.cumsum(start) - 1
        cum_p, cum_n = np.cumsum(pos), np.cumsum(neg)
        base_p = (cum_p - pos)[start][group]               # counts of earlier groups
        base_n = (cum_n - neg)[start][group]
        cp = self._above[0][b] + (cum_p - base_p)
        cq = self._above[1][b] + (cum_n - base_n)
        total = float(self.acc.pos_hist.sum())
        extra = {**self.acc.state_dict(), "exact": True,
                 "refined": {"candidate_bins": int(self._cand.sum()), "candidate_scores": int(v.size)}}
        self._refined = _pick(v, cp, cq, total, extra) if v.size else dict(NO_POSITIVE)
        return self._refined

    def compute(self) -> dict:
        if self._refined is not None:
            return dict(self._refined)
        if self._cand is not None and self.acc.mode == "hist":
            return self.finish_refinement()
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


# ------------------------------------------------------------------ degenerate thresholds
#: A threshold is *degenerate* when it flags more than this fraction of the normal pixels or
#: of the normal images: recall at such a threshold is trivially satisfied (everything is
#: flagged), so the thresholded metrics are not results.
DEGENERATE_FRACTION = 0.5
#: metrics.json sections whose values depend on the pixel threshold.
THRESHOLD_DEPENDENT = ("thresholded", "defect_wise_recall", "instance_detection_rate")


def threshold_degeneracy(normal_px_flagged: int, normal_px: int, normal_img_flagged: int,
                         normal_imgs: int, limit: float = DEGENERATE_FRACTION) -> dict:
    """How much of the normal data a threshold flags, and whether that is "most" of it
    (> ``limit``, a fraction): ``{"degenerate", "limit", "normal_pixels_flagged",
    "normal_pixels", "normal_pixel_fraction", "normal_images_flagged", "normal_images",
    "normal_image_fraction", "reason", "affects"}``. Fractions are None without normal data."""
    px = normal_px_flagged / normal_px if normal_px else None
    im = normal_img_flagged / normal_imgs if normal_imgs else None
    why = []
    if px is not None and px > limit:
        why.append(f"{normal_px_flagged:,} of {normal_px:,} normal pixels ({100 * px:.2f} %)")
    if im is not None and im > limit:
        why.append(f"{normal_img_flagged} of {normal_imgs} normal images ({100 * im:.0f} %)")
    reason = None
    if why:
        reason = ("it flags " + " and ".join(why) + f", more than {100 * limit:g} %: recall at this threshold is "
                  "trivially satisfied (pixel F1, R_DW / mR_DW and detection rates are not results)")
    return {"degenerate": bool(why), "limit": limit, "normal_pixels_flagged": int(normal_px_flagged),
            "normal_pixels": int(normal_px), "normal_pixel_fraction": px,
            "normal_images_flagged": int(normal_img_flagged), "normal_images": int(normal_imgs),
            "normal_image_fraction": im, "reason": reason, "affects": list(THRESHOLD_DEPENDENT)}
