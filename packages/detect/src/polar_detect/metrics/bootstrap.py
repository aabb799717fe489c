"""Stratified bootstrap confidence intervals for image-level metrics (AUROC by default).

A resample draws, with replacement and independently, as many anomalous images from the
anomalous ones and as many normal images from the normal ones as the data hold (stratified:
every resample keeps the class counts, so AUROC is always defined).  The interval is the
percentile interval of the metric over the resamples: ``[q((1 - level) / 2), q((1 + level) / 2)]``
(``numpy.quantile``, linear interpolation).  Resamples come from
``numpy.random.default_rng(seed)`` in a fixed order (:func:`stratified_bootstrap_indices`), so
the interval is a pure function of (scores, labels, n_resamples, level, seed).

:func:`bootstrap_ci` takes any ``metric(scores, labels) -> float``;
:func:`auroc_bootstrap_ci` is it for :func:`polar_detect.metrics.binary_auroc` (the one AUROC).
"""
from __future__ import annotations

import numpy as np

from polar_detect.metrics._curve import to_numpy
from polar_detect.metrics.roc import binary_auroc

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
DEFAULT_SEED = 0


def _check(scores, labels):
    s = to_numpy(scores, np.float64).ravel()
    y = to_numpy(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size: {s.shape} vs {y.shape}")
    if s.size and not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return s, y


def stratified_bootstrap_indices(labels, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED):
    """(n_resamples, n) int array: row r lists the image indices of resample r (the first
    n_pos columns anomalous images, the rest normal ones)."""
    y = to_numpy(labels).ravel().astype(bool)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    rng = np.random.default_rng(seed)
    cols = []
    for idx in (pos, neg):
        if idx.size:
            cols.append(idx[rng.integers(0, idx.size, size=(n_resamples, idx.size))])
    return np.concatenate(cols, axis=1) if cols else np.zeros((n_resamples, 0), np.int64)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [a, 1.0 - a])
    return float(lo), float(hi)


def _result(point, values, level, n_resamples, seed, metric):
    lo, hi = _interval(values, level) if values.size else (float("nan"), float("nan"))
    return {"point": float(point), "low": lo, "high": hi, "level": float(level),
            "n_resamples": int(n_resamples), "seed": int(seed), "method": "stratified percentile bootstrap",
            "metric": metric}


def bootstrap_ci(metric, scores, labels, n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                 seed: int = DEFAULT_SEED, name: str | None = None) -> dict:
    """Percentile interval of ``metric(scores, labels)`` over stratified resamples.

    Returns ``{"point", "low", "high", "level", "n_resamples", "seed", "method", "metric"}``;
    NaN bounds (and point) when a class is absent."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    s, y = _check(scores, labels)
    name = name or getattr(metric, "__name__", "metric")
    if not y.any() or y.all():
        return _result(float("nan"), np.zeros(0), level, n_resamples, seed, name)
    idx = stratified_bootstrap_indices(y, n_resamples, seed)
    values = np.array([metric(s[r], y[r]) for r in idx], np.float64)
    return _result(metric(s, y), values, level, n_resamples, seed, name)


def auroc_bootstrap_ci(scores, labels, n_resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL,
                       seed: int = DEFAULT_SEED) -> dict:
    """:func:`bootstrap_ci` of :func:`polar_detect.metrics.binary_auroc`."""
    return bootstrap_ci(binary_auroc, scores, labels, n_resamples, level, seed, name="auroc")
