"""Image-level metrics of an evaluation: AUROC (with its stratified bootstrap interval), AP,
and AUROC per anomaly class and per group, plus the image ROC/PR curves.

An entry is ``(sample, image score, map path)`` (:class:`polar_detect.predictions.Entry`).
Ignore-only images (manifest ``ignore_image``) are left out.  Scores: higher = more anomalous.
"""
from __future__ import annotations

import numpy as np

from polar_detect.dataset.errors import InputError
from polar_detect.metrics import (auroc_bootstrap_ci, binary_auroc, binary_average_precision, binary_pr_curve,
                                  binary_roc_curve)

# Anomaly groups of the issue-13 benchmark: structural defects change the part's shape,
# impurities sit on it, logical anomalies are wrong parts or part arrangements.
CLASS_GROUPS = {"structural": ("dent", "bump", "scratch", "chip"), "impurity": ("water_stain",),
                "logical": ("missing", "extra", "swapped")}


def image_auroc_by_class(kept, scores: np.ndarray, labels: np.ndarray) -> dict:
    """Image AUROC of each anomaly class and group: the normal images against the anomalous
    images that hold an instance of that class (of any class of the group); an image with
    several classes counts for each. Classes: the manifest sample's ``classes``."""
    normal = ~labels
    if not normal.any():
        return {}
    has = [set(e[0].e.get("classes") or []) for e in kept]
    sets = {c: {c} for c in sorted(set().union(*has))} if has else {}
    out = {"auroc_by_class": {}, "auroc_by_group": {}}
    for key, members in [("auroc_by_class", sets), ("auroc_by_group", {g: set(v) for g, v in CLASS_GROUPS.items()})]:
        for name, cls in members.items():
            pos = labels & np.array([bool(h & cls) for h in has])
            if pos.any():
                sel = normal | pos
                out[key][name] = {"auroc": binary_auroc(scores[sel], pos[sel]), "n_anomalous": int(pos.sum())}
    return out


def _curves(scores: np.ndarray, labels: np.ndarray) -> dict:
    """Image ROC and PR curves (both classes present) for curves.json."""
    if not (labels.any() and (~labels).any()):
        return {}
    fpr, tpr, _ = binary_roc_curve(scores, labels)
    pr, rc, _ = binary_pr_curve(scores, labels)
    return {"image_roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
            "image_pr": {"precision": pr.tolist(), "recall": rc.tolist()}}


def image_metrics(test, ppath, n_bootstrap: int, seed: int) -> tuple[dict, dict]:
    """(``image`` section of metrics.json, image curves); non-finite scores are an InputError
    naming predictions.json."""
    kept = [e for e in test if not e[0].ignore_image]
    img_scores = np.array([e[1] for e in kept], np.float64)
    img_labels = np.array([e[0].label for e in kept], bool)
    if not np.isfinite(np.array([e[1] for e in test], np.float64)).all():
        raise InputError(ppath, "image scores contain NaN or infinite values")
    image = {"n": len(kept), "n_anomalous": int(img_labels.sum()), "n_normal": int((~img_labels).sum()),
             "n_ignored": len(test) - len(kept),
             "auroc": binary_auroc(img_scores, img_labels) if kept else float("nan"),
             "ap": binary_average_precision(img_scores, img_labels) if img_labels.any() else float("nan")}
    if n_bootstrap:
        ci = auroc_bootstrap_ci(img_scores, img_labels, n_resamples=n_bootstrap, seed=seed)
        image.update(auroc_ci_low=ci["low"], auroc_ci_high=ci["high"],
                     auroc_ci={k: ci[k] for k in ("level", "n_resamples", "seed", "method")})
    image.update(image_auroc_by_class(kept, img_scores, img_labels))
    return image, _curves(img_scores, img_labels)
