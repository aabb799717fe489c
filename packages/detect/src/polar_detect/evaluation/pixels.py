"""Every pixel metric of the evaluated split, fed one anomaly map at a time.

Pixel AUROC/AP (all pixels and inside the part's object mask), AUPRO, AU-sPRO (LOCO regions),
and, at the pixel threshold, precision/recall/F1 and defect-wise recall; ignore pixels are
left out of all of them.  Maps are float32 (H, W), higher = more anomalous, predicted positive
iff score >= threshold.  Curves are thinned to at most 2000 points for curves.json.
"""
from __future__ import annotations

import numpy as np

from polar_detect.evaluation.examples import collect_example
from polar_detect.evaluation.thresholds import refine
from polar_detect.metrics import AUPRO, AUsPRO, BinaryROC, DefectWiseRecall, F1OptimalThreshold, ThresholdedPRF
from polar_detect.predictions import read_map


def thin(*arrays, n=2000):
    """Subsample curve arrays to at most n points for plotting (keeps the ends)."""
    m = len(arrays[0])
    if m <= n:
        return [np.asarray(a).tolist() for a in arrays]
    idx = np.unique(np.r_[np.linspace(0, m - 1, n).astype(int), m - 1])
    return [np.asarray(a)[idx].tolist() for a in arrays]


class PixelPass:
    """With ``thr`` None the threshold is chosen on this split afterwards
    (:meth:`threshold_on_test`, a second pass over the kept maps)."""

    def __init__(self, kw, fpr_limit, spro_fpr_limit, min_coverage, class_kinds, has_regions, thr):
        self.kw, self.min_coverage, self.class_kinds = kw, min_coverage, class_kinds
        self.roc, self.roc_part = BinaryROC(**kw), BinaryROC(**kw)
        self.pro = AUPRO(fpr_limit, **kw)
        self.spro = AUsPRO(spro_fpr_limit, **kw) if has_regions else None
        self.f1_test = F1OptimalThreshold(**kw) if thr is None else None
        self.kept, self.examples = [], {}
        self.n_no_mask = self.n_part = self.n_ignore_maps = self.n_ignore_px = 0
        self.n_normal_images = self.n_normal_images_flagged = 0
        self.prf = self.dwr = None
        if thr is not None:
            self._set_threshold(thr)

    def _set_threshold(self, thr):
        self.thr = thr
        self.prf = ThresholdedPRF(thr)
        self.dwr = DefectWiseRecall(self.min_coverage, class_kinds=self.class_kinds)

    def add(self, s, a, mp):
        """Sample ``s`` with its anomaly map ``a`` (read from ``mp``)."""
        m = s.mask(a.shape)
        if m is None:
            self.n_no_mask += 1
            return
        g = s.ignore(a.shape)
        if g is not None:
            self.n_ignore_maps += 1
            self.n_ignore_px += int(g.sum())
        self.roc.update(a, m, g)
        part = s.object_mask(a.shape)
        if part is not None:
            self.n_part += 1
            self.roc_part.update(a[part], m[part], None if g is None else g[part])
        self.pro.update(a, m, g)
        if self.spro is not None:
            self.spro.update(a, *s.regions(a.shape, m), ignore=g)
        if self.f1_test is not None:
            self.f1_test.update(a, m, g)
            self.kept.append((s, mp))
        else:
            self._thresholded(s, a, m, g)

    def _thresholded(self, s, a, m, g):
        pos = a >= self.thr
        self.prf.update(a, m, g)
        if not s.label and not s.ignore_image:   # normal images with any predicted-positive pixel
            self.n_normal_images += 1
            self.n_normal_images_flagged += bool((pos if g is None else pos & ~g).any())
        im, inst = s.instances(a.shape, m)
        if im is not None and inst:
            self.dwr.update(pos, im, inst, sample_id=s.id)
        collect_example(self.examples, s, a, m, pos)

    def threshold_on_test(self) -> dict:
        """F1-max threshold on this split, then the thresholded metrics (second pass)."""
        r = refine(self.f1_test, [(s, None, mp) for s, mp in self.kept], "test")
        if r["threshold"] is not None:
            self._set_threshold(r["threshold"])
            for s, mp in self.kept:  # second pass: the threshold is known only now
                a = read_map(mp)
                self._thresholded(s, a, s.mask(a.shape), s.ignore(a.shape))
        return {"value": r["threshold"], "source": "test (optimistic)", "test_f1": r["f1"]}

    def results(self) -> dict:
        """The pixel sections of metrics.json."""
        part = self.roc_part.compute()
        part["n_images"] = self.n_part
        if not self.n_part:
            part["note"] = "no object_mask in the dataset (build it from renders to get the part mask)"
        dwr = self.dwr.compute() if self.dwr is not None else None
        return {"pixel": self.roc.compute(), "pixel_part": part, "aupro": self.pro.compute(),
                "spro": self.spro.compute() if self.spro is not None else
                {"value": None, "note": "no LOCO region annotation in the manifest"},
                "thresholded": self.prf.compute() if self.prf is not None else None,
                "defect_wise_recall": dwr,
                "instance_detection_rate": None if dwr is None else
                {c: v["recall"] for c, v in dwr["per_class"].items()}}

    def curves(self, curves):
        """Add the pixel ROC/PR, PRO and sPRO curves (thinned) to ``curves``."""
        pixel = self.roc.compute()
        if pixel["n_pos"] and pixel["n_neg"]:
            fpr, tpr, _ = self.roc.roc_curve()
            pr, rc, _ = self.roc.pr_curve()
            curves["pixel_roc"] = dict(zip(("fpr", "tpr"), thin(fpr, tpr)))
            curves["pixel_pr"] = dict(zip(("precision", "recall"), thin(pr, rc)))
        if self.pro.compute().get("value") is not None:
            f, p, _ = self.pro.curve()
            curves["pro"] = dict(zip(("fpr", "pro"), thin(f, p)))
        if self.spro is not None and self.spro.compute().get("value") is not None:
            f, p, _ = self.spro.curve()
            curves["spro"] = dict(zip(("fpr", "spro"), thin(f, p)))
