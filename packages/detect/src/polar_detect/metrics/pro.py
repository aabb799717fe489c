"""AUPRO: area under the per-region-overlap curve up to an FPR limit (default 0.3), normalised.

Regions are the connected components of each ground-truth mask (``scipy.ndimage.label``,
8-connectivity by default as in the MVTec AD evaluation).  At a threshold ``t`` the PRO is
``mean_r |{p in r : s_p >= t}| / |r|`` over all regions of all images, and the FPR is the
fraction of pixels outside every region (over all images) with ``s_p >= t``.

Because PRO(t) is a sum over region pixels of ``1/(|r| R)``, it is a weighted "TPR": every
region pixel enters the shared accumulator with positive weight ``1/|r|`` (normalised by the
number of regions R at the end) and every background pixel with negative weight 1.  The
threshold sweep therefore visits every distinct score exactly (or every histogram bin in the
memory-bounded mode, with the area bound of ``_curve.area_error_bound``).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from polar_detect.metrics._curve import (DEFAULT_BINS, DEFAULT_MAX_EXACT, ScoreAccumulator, area_error_bound,
                     area_up_to, rates, to_numpy)


def _structure(connectivity: int):
    if connectivity == 8:
        return np.ones((3, 3), bool)
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    raise ValueError("connectivity must be 4 or 8")


def region_weights(mask: np.ndarray, connectivity: int = 8):
    """Label the regions of one binary (H, W) mask -> (per-pixel weight 1/|r| on the mask,
    number of regions)."""
    labels, n = ndimage.label(mask, structure=_structure(connectivity))
    if n == 0:
        return np.zeros(mask.shape, np.float64), 0
    sizes = np.bincount(labels.ravel())
    w = np.zeros(sizes.shape, np.float64)
    w[1:] = 1.0 / sizes[1:]
    return w[labels], n


class RegionOverlapCurve:
    """Shared state of AUPRO and AU-sPRO: per-region overlap (weighted positives, each region
    summing to 1) against the false-positive rate, integrated up to ``fpr_limit`` and
    normalised. Subclasses implement ``update``."""

    empty_note = "no anomalous region"

    def __init__(self, fpr_limit: float, mode: str = "auto", bins: int = DEFAULT_BINS, value_range=None,
                 max_exact: int = DEFAULT_MAX_EXACT):
        if not 0 < fpr_limit <= 1:
            raise ValueError("fpr_limit must be in (0, 1]")
        self.fpr_limit = float(fpr_limit)
        self.acc = ScoreAccumulator(mode, bins, value_range, max_exact)
        self.n_regions = 0

    def reset(self):
        self.acc.reset()
        self.n_regions = 0

    def _settings(self) -> dict:
        return {}

    def curve(self):
        """(fpr, overlap, thresholds) over the whole FPR range, starting at (0, 0)."""
        thr, cp, cq, _, _ = self.acc.sweep()
        fpr, overlap = rates(cp, cq, pos_total=float(self.n_regions))
        return fpr, overlap, np.r_[np.inf, thr]

    def compute(self) -> dict:
        out = {"fpr_limit": self.fpr_limit, **self._settings(), "n_regions": self.n_regions,
               **self.acc.state_dict()}
        thr, cp, cq, _, _ = self.acc.sweep()
        if self.n_regions == 0 or not cq.size or cq[-1] == 0:
            out.update(value=None, error_bound=None,
                       note=self.empty_note if self.n_regions == 0 else "no normal pixel")
            return out
        fpr, overlap = rates(cp, cq, pos_total=float(self.n_regions))
        out["value"] = area_up_to(fpr, overlap, self.fpr_limit)
        out["error_bound"] = 0.0 if self.acc.mode == "exact" else area_error_bound(fpr, overlap, self.fpr_limit)
        return out


class AUPRO(RegionOverlapCurve):
    """Stateful AUPRO: ``update(preds, target)`` with (H, W) or (N, H, W) maps/masks."""

    def __init__(self, fpr_limit: float = 0.3, connectivity: int = 8, mode: str = "auto",
                 bins: int = DEFAULT_BINS, value_range=None, max_exact: int = DEFAULT_MAX_EXACT):
        super().__init__(fpr_limit, mode, bins, value_range, max_exact)
        self.connectivity = connectivity

    def _settings(self) -> dict:
        return {"connectivity": self.connectivity}

    def update(self, preds, target, ignore=None) -> None:
        """``ignore`` (same shape, nonzero = ignored): those pixels are neither region nor
        background pixels (regions are labelled on ``target & ~ignore``)."""
        s = to_numpy(preds)
        t = to_numpy(target).astype(bool)
        if s.shape != t.shape:
            raise ValueError(f"preds and target differ in shape: {s.shape} vs {t.shape}")
        g = np.zeros(t.shape, bool) if ignore is None else to_numpy(ignore).astype(bool)
        if g.shape != t.shape:
            raise ValueError(f"ignore mask and preds differ in shape: {g.shape} vs {t.shape}")
        if s.ndim == 2:
            s, t, g = s[None], t[None], g[None]
        for si, ti, gi in zip(s, t, g):
            ti = ti & ~gi
            w, n = region_weights(ti, self.connectivity)
            self.n_regions += n
            if n:
                self.acc.update(si[ti], w[ti], 0.0)
            self.acc.update(si[~ti & ~gi], 0.0, 1.0)


def aupro(preds, target, fpr_limit: float = 0.3, connectivity: int = 8, ignore=None) -> float:
    """Exact normalised AUPRO of (N, H, W) or (H, W) maps against binary masks (NaN if
    undefined); pixels where ``ignore`` is nonzero are left out."""
    m = AUPRO(fpr_limit, connectivity, mode="exact")
    m.update(preds, target, ignore)
    v = m.compute()["value"]
    return float("nan") if v is None else v
