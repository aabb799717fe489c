"""Shared machinery: a score accumulator with weighted positives/negatives.

Every curve metric in this package (ROC/PR, PRO, sPRO, F1 threshold) is a sweep of a
threshold ``t`` over the scores, with "predicted positive" meaning ``score >= t``.  At each
threshold it needs two cumulative sums over the pixels predicted positive:

* ``pos``: a per-pixel positive weight (1 for ROC, ``1/|region|`` for PRO, a rank-dependent
  saturation weight for sPRO),
* ``neg``: a per-pixel negative weight (1 for pixels outside every ground-truth region).

:class:`ScoreAccumulator` collects ``(score, pos, neg)`` triples in one of two modes:

``exact``
    keeps every triple; the sweep visits every distinct score (ties are one step).
``hist``
    a fixed-bin histogram over ``value_range`` (values outside are clipped into the edge
    bins, which keeps the binning monotone).  Memory is O(bins) whatever the data size.
    The sweep visits the bin lower edges; this is the exact sweep of the *quantised*
    scores, so every curve point is exact at those thresholds and only the order of
    pixels that share a bin is lost.  The resulting area error is bounded, from the
    histogram itself, by ``sum_b dPos_b * dNeg_b / 2`` (see :func:`area_error_bound`).
``auto``
    exact until more than ``max_exact`` triples were added, then converts itself to a
    histogram over the range seen so far (later values outside it are clipped, still
    monotone, so the bound stays valid).
"""
from __future__ import annotations

import numpy as np

DEFAULT_BINS = 1 << 16
DEFAULT_MAX_EXACT = 1 << 22


def to_numpy(x, dtype=None) -> np.ndarray:
    """Array-like (numpy, torch tensor, list) -> numpy array (no torchvision, torch optional)."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if dtype is not None:
        a = a.astype(dtype, copy=False)
    return a


def check_finite(scores: np.ndarray, what: str = "scores") -> None:
    if scores.size and not np.isfinite(scores).all():
        raise ValueError(f"{what} contain NaN or infinite values")


def _compact(w: np.ndarray) -> np.ndarray:
    """A weight array in the smallest faithful dtype (0/1 weights as bool)."""
    if w.dtype == bool:
        return np.array(w)
    if w.strides == (0,) or w.size == 1:  # a broadcast scalar
        v = float(w.flat[0]) if w.size else 0.0
        return np.full(w.shape, bool(v)) if v in (0.0, 1.0) else np.full(w.shape, v)
    return np.array(w, dtype=np.float64)


class ScoreAccumulator:
    """Collects (score, positive weight, negative weight); see the module docstring."""

    def __init__(self, mode: str = "auto", bins: int = DEFAULT_BINS,
                 value_range: tuple[float, float] | None = None,
                 max_exact: int = DEFAULT_MAX_EXACT):
        if mode not in ("auto", "exact", "hist"):
            raise ValueError(f"mode must be auto|exact|hist, not {mode!r}")
        if mode == "hist" and value_range is None:
            raise ValueError("mode='hist' needs value_range=(lo, hi)")
        self.requested_mode = mode
        self.bins = int(bins)
        self.value_range = None if value_range is None else (float(value_range[0]), float(value_range[1]))
        self.max_exact = int(max_exact)
        self.reset()

    # ---------------------------------------------------------------- state
    def reset(self) -> None:
        self.mode = "hist" if self.requested_mode == "hist" else "exact"
        self._scores: list[np.ndarray] = []
        self._pos: list[np.ndarray] = []
        self._neg: list[np.ndarray] = []
        self._n = 0
        self._lo = np.inf
        self._hi = -np.inf
        self.pos_hist = self.neg_hist = None
        self._sweep = None
        if self.mode == "hist":
            self._init_hist(*self.value_range)

    def _init_hist(self, lo: float, hi: float) -> None:
        if not hi > lo:
            hi = lo + 1.0
        self.value_range = (lo, hi)
        self.pos_hist = np.zeros(self.bins, np.float64)
        self.neg_hist = np.zeros(self.bins, np.float64)

    def bin_index(self, scores: np.ndarray) -> np.ndarray:
        lo, hi = self.value_range
        idx = np.floor((scores.astype(np.float64) - lo) * (self.bins / (hi - lo)))
        return np.clip(idx, 0, self.bins - 1).astype(np.int64)

    def bin_edges(self) -> np.ndarray:
        lo, hi = self.value_range
        return lo + (hi - lo) * np.arange(self.bins, dtype=np.float64) / self.bins

    @property
    def n(self) -> int:
        return self._n

    def update(self, scores, pos, neg) -> None:
        s = to_numpy(scores).ravel()
        if s.dtype.kind not in "f":
            s = s.astype(np.float64)
        check_finite(s)
        p = np.broadcast_to(to_numpy(pos).ravel(), s.shape)
        q = np.broadcast_to(to_numpy(neg).ravel(), s.shape)
        if s.size == 0:
            return
        self._sweep = None
        self._n += s.size
        self._lo = min(self._lo, float(s.min()))
        self._hi = max(self._hi, float(s.max()))
        if self.mode == "exact":
            self._scores.append(s.copy())
            self._pos.append(_compact(p))
            self._neg.append(_compact(q))
            if self.requested_mode == "auto" and self._n > self.max_exact:
                self._to_hist()
        else:
            self._add_hist(s, p, q)

    def _add_hist(self, s, p, q) -> None:
        idx = self.bin_index(s)
        self.pos_hist += np.bincount(idx, weights=p.astype(np.float64), minlength=self.bins)
        self.neg_hist += np.bincount(idx, weights=q.astype(np.float64), minlength=self.bins)

    def _to_hist(self) -> None:
        lo, hi = (self.value_range if self.value_range is not None else (self._lo, self._hi))
        self._init_hist(lo, hi)
        self.mode = "hist"
        for s, p, q in zip(self._scores, self._pos, self._neg):
            self._add_hist(s, p, q)
        self._scores, self._pos, self._neg = [], [], []

    # ---------------------------------------------------------------- sweep
    def sweep(self):
        """Return ``(thresholds, cum_pos, cum_neg, step_pos, step_neg)``.

        Thresholds descend; entry k holds the sums over pixels with ``score >= thresholds[k]``
        (hist: ``bin >= k``).  ``step_*`` are the increments of each step (ties / one bin);
        empty bins are dropped.  Cached until the next update.
        """
        if self._sweep is None:
            self._sweep = self._compute_sweep()
        thr, cp, cq = self._sweep
        dp = np.diff(np.r_[0.0, cp])
        dq = np.diff(np.r_[0.0, cq])
        return thr, cp, cq, dp, dq

    def _compute_sweep(self):
        if self.mode == "exact":
            if not self._scores:
                z = np.zeros(0)
                return z, z, z
            s = np.concatenate(self._scores)
            order = np.argsort(s)[::-1]
            s = s[order]
            last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]  # end of each tie group
            thr = s[last].astype(np.float64)
            del s
            cp = np.cumsum(np.concatenate(self._pos)[order], dtype=np.float64)[last]
            cq = np.cumsum(np.concatenate(self._neg)[order], dtype=np.float64)[last]
        else:
            keep = (self.pos_hist != 0) | (self.neg_hist != 0)
            edges = self.bin_edges()
            thr = edges[keep][::-1]
            cp = np.cumsum(self.pos_hist[keep][::-1])
            cq = np.cumsum(self.neg_hist[keep][::-1])
        return thr, cp, cq

    def state_dict(self) -> dict:
        return {"mode": self.mode, "bins": self.bins if self.mode == "hist" else None,
                "value_range": list(self.value_range) if self.mode == "hist" else None,
                "n": self._n}


# -------------------------------------------------------------------- curve helpers
def rates(cp, cq, pos_total=None, neg_total=None):
    """Cumulative sums -> (x = FPR, y = TPR-like) starting at (0, 0)."""
    pos_total = cp[-1] if pos_total is None else pos_total
    neg_total = cq[-1] if neg_total is None else neg_total
    x = np.r_[0.0, cq / neg_total] if neg_total > 0 else np.r_[0.0, np.zeros_like(cq)]
    y = np.r_[0.0, cp / pos_total] if pos_total > 0 else np.r_[0.0, np.zeros_like(cp)]
    return x, y


def area_up_to(x: np.ndarray, y: np.ndarray, limit: float = 1.0, normalise: bool = True) -> float:
    """Trapezoid area under a curve with non-decreasing x, from 0 to ``limit``.

    The curve is cut at ``x = limit`` by linear interpolation on the segment crossing it.
    With ``normalise`` the area is divided by ``limit`` (so a perfect detector scores 1).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    inside = x <= limit
    xs, ys = x[inside], y[inside]
    if (~inside).any():
        j = np.flatnonzero(~inside)[0]
        x0, y0, x1, y1 = x[j - 1], y[j - 1], x[j], y[j]
        yl = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        xs, ys = np.r_[xs, limit], np.r_[ys, yl]
    area = float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))
    return area / limit if normalise else area


def area_error_bound(x: np.ndarray, y: np.ndarray, limit: float = 1.0, normalise: bool = True) -> float:
    """Largest possible difference between the area of this (binned) curve and the area of
    the exact curve whose points inside each step are unknown.

    Inside one step from (x0, y0) to (x1, y1) the exact staircase stays in the box
    [x0, x1] x [y0, y1] (both monotone), so its area there differs from the trapezoid by at
    most (x1 - x0)(y1 - y0)/2; on the step crossing ``limit`` by at most (y1 - y0)(limit - x0).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    dx, dy = np.diff(x), np.diff(y)
    full = x[1:] <= limit
    err = float(np.sum(dx[full] * dy[full]) / 2.0)
    cross = np.flatnonzero(~full)
    if cross.size:
        j = cross[0]
        err += float(dy[j] * max(0.0, limit - x[j]))
    return err / limit if normalise else err
