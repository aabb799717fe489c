"""AU-sPRO (MVTec LOCO AD): saturated per-region overlap, area up to FPR 5 %, normalised.

Each ground-truth region r (one per defect annotation; regions may overlap, they are not
split into connected components) has a saturation area ``sat_r``; the region's overlap at
threshold t is ``min(1, |{p in r : s_p >= t}| / sat_r)`` and the sPRO is its mean over all
regions of all images.  The saturation area follows the LOCO ``defects_config.json``
convention: ``relative_saturation`` -> ``floor(saturation_threshold * |r|)``, otherwise
``min(saturation_threshold, |r|)``; it is clamped to at least one pixel.  False positives
are pixels outside every region (of that image), over all images.

Implementation: sort a region's pixels by score (descending); the k-th ranked pixel adds
``(min(k, sat) - min(k-1, sat)) / sat`` to the region's overlap (1/sat for the first
floor(sat) pixels, the fractional rest for the next one, 0 afterwards).  At any threshold,
the pixels at or above it are exactly the top-ranked ones, so the cumulative weight equals
the saturated overlap; ties inside a region only move weight between equal scores.  The
weighted pixels then share the accumulator with PRO/ROC (exact or histogram).
"""
from __future__ import annotations

import math

import numpy as np

from polar_detect.metrics._curve import DEFAULT_BINS, DEFAULT_MAX_EXACT, to_numpy
from polar_detect.metrics.pro import RegionOverlapCurve


def saturation_area(region_area: int, saturation_threshold: float, relative: bool) -> float:
    """LOCO saturation area of a region in pixels (>= 1)."""
    if relative:
        sat = math.floor(saturation_threshold * region_area)
    else:
        sat = min(float(saturation_threshold), float(region_area))
    return float(max(sat, 1.0))


def saturated_weights(scores: np.ndarray, sat: float):
    """Rank weights of one region's pixel scores -> (scores kept, weights) (zero weights dropped)."""
    order = np.argsort(scores, kind="stable")[::-1]
    k = np.arange(1, order.size + 1, dtype=np.float64)
    w = (np.minimum(k, sat) - np.minimum(k - 1, sat)) / sat
    keep = w > 0
    return scores[order][keep], w[keep]


class AUsPRO(RegionOverlapCurve):
    """Stateful AU-sPRO.  ``update(pred, regions, saturation_thresholds, relative)`` per image:
    ``pred`` (H, W); ``regions`` (K, H, W) boolean (K may be 0); thresholds/relative per region.
    """

    empty_note = "no annotated region"

    def __init__(self, fpr_limit: float = 0.05, mode: str = "auto", bins: int = DEFAULT_BINS,
                 value_range=None, max_exact: int = DEFAULT_MAX_EXACT):
        super().__init__(fpr_limit, mode, bins, value_range, max_exact)

    def update(self, pred, regions, saturation_thresholds=None, relative=None, ignore=None) -> None:
        """``ignore`` (H, W), nonzero = left out: such pixels are removed from the regions and
        are not false positives either."""
        s = to_numpy(pred)
        if s.dtype.kind != "f":
            s = s.astype(np.float64)
        r = to_numpy(regions).astype(bool)
        if r.ndim == 2:
            r = r[None]
        if r.shape[0] and r.shape[1:] != s.shape:
            raise ValueError(f"regions {r.shape[1:]} and prediction {s.shape} differ in shape")
        k = r.shape[0]
        sat_thr = ([np.inf] * k if saturation_thresholds is None
                   else list(np.broadcast_to(np.asarray(saturation_thresholds, np.float64), (k,))))
        rel = [False] * k if relative is None else list(np.broadcast_to(np.asarray(relative, bool), (k,)))
        g = np.zeros(s.shape, bool) if ignore is None else to_numpy(ignore).astype(bool)
        if g.shape != s.shape:
            raise ValueError(f"ignore mask {g.shape} and prediction {s.shape} differ in shape")
        union = g.copy()
        for ri, thr, rl in zip(r, sat_thr, rel):
            ri = ri & ~g
            area = int(ri.sum())
            if area == 0:
                continue  # an empty annotation has no overlap to measure
            self.n_regions += 1
            union |= ri
            ks, kw = saturated_weights(s[ri], saturation_area(area, thr, bool(rl)))
            self.acc.update(ks, kw, 0.0)
        self.acc.update(s[~union], 0.0, 1.0)


def auspro(preds, regions, saturation_thresholds=None, relative=None, fpr_limit: float = 0.05) -> float:
    """Exact normalised AU-sPRO.  ``preds``: sequence of (H, W) maps; ``regions``: sequence of
    (K_i, H, W) boolean stacks; thresholds/relative: per-image sequences (None = no saturation,
    i.e. the region's full area, which makes sPRO equal to PRO over the given regions)."""
    m = AUsPRO(fpr_limit, mode="exact")
    n = len(preds)
    for i in range(n):
        m.update(preds[i], regions[i],
                 None if saturation_thresholds is None else saturation_thresholds[i],
                 None if relative is None else relative[i])
    v = m.compute()["value"]
    return float("nan") if v is None else v
