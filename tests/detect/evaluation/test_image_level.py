"""Image-level metrics (polar_detect.evaluation.image_level): AUROC per anomaly class and group
against scikit-learn; ``image_metrics`` leaves ignore-only images out, refuses non-finite scores
and adds the bootstrap interval."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from polar_detect.dataset.errors import InputError
from polar_detect.evaluation.image_level import CLASS_GROUPS, image_auroc_by_class, image_metrics
from polar_detect.metrics import auroc_bootstrap_ci


class _S:
    def __init__(self, classes, label=None, ignore_image=False):
        self.e = {"classes": classes}
        self.label = int(bool(classes)) if label is None else label
        self.ignore_image = ignore_image


def test_by_class_and_group_match_sklearn():
    rng = np.random.default_rng(0)
    classes = [[]] * 12 + [["dent"]] * 5 + [["scratch", "water_stain"]] * 4 + [["missing"]] * 3
    kept = [(_S(c), None, None) for c in classes]
    labels = np.array([bool(c) for c in classes])
    scores = rng.normal(size=len(classes)) + labels * np.array([0.0] * 12 + [2.0] * 5 + [0.5] * 4 + [-1.0] * 3)
    out = image_auroc_by_class(kept, scores, labels)
    normal = ~labels
    for cls in ("dent", "scratch", "water_stain", "missing"):
        pos = np.array([cls in c for c in classes])
        sel = normal | pos
        assert np.isclose(out["auroc_by_class"][cls]["auroc"], roc_auc_score(pos[sel], scores[sel]))
        assert out["auroc_by_class"][cls]["n_anomalous"] == pos.sum()
    for g, members in CLASS_GROUPS.items():
        pos = np.array([bool(set(c) & set(members)) for c in classes])
        sel = normal | pos
        assert np.isclose(out["auroc_by_group"][g]["auroc"], roc_auc_score(pos[sel], scores[sel]))
    assert out["auroc_by_group"]["structural"]["n_anomalous"] == 9


def test_no_normal_images_gives_nothing():
    kept = [(_S(["dent"]), None, None)] * 3
    assert image_auroc_by_class(kept, np.zeros(3), np.ones(3, bool)) == {}


def test_image_metrics_leave_ignore_only_images_out():
    rng = np.random.default_rng(3)
    kept = [_S([]) for _ in range(8)] + [_S(["dent"]) for _ in range(6)]
    ignored = [_S([], ignore_image=True) for _ in range(3)]
    scores = list(rng.normal(size=14) + np.r_[np.zeros(8), np.ones(6)]) + [99.0] * 3  # ignored: top scores
    test = [(s, sc, None) for s, sc in zip(kept + ignored, scores)]
    image, curves = image_metrics(test, Path("p/predictions.json"), n_bootstrap=200, seed=1)
    y, sc = [s.label for s in kept], scores[:14]
    assert (image["n"], image["n_anomalous"], image["n_normal"], image["n_ignored"]) == (14, 6, 8, 3)
    assert image["auroc"] == pytest.approx(roc_auc_score(y, sc), abs=1e-12)
    assert image["ap"] == pytest.approx(average_precision_score(y, sc), abs=1e-12)
    ci = auroc_bootstrap_ci(sc, y, n_resamples=200, seed=1)
    assert (image["auroc_ci_low"], image["auroc_ci_high"]) == (ci["low"], ci["high"])
    assert image["auroc_ci"] == {"level": 0.95, "n_resamples": 200, "seed": 1,
                                 "method": "stratified percentile bootstrap"}
    assert image["auroc_by_class"]["dent"]["n_anomalous"] == 6
    assert curves["image_roc"]["fpr"][0] == 0.0 and curves["image_roc"]["tpr"][-1] == 1.0
    no_ci, _ = image_metrics(test, Path("p/predictions.json"), n_bootstrap=0, seed=1)
    assert "auroc_ci_low" not in no_ci and no_ci["auroc"] == image["auroc"]


def test_image_metrics_refuse_non_finite_scores_even_of_ignored_images():
    test = [(_S([]), 0.1, None), (_S(["dent"]), 0.9, None), (_S([], ignore_image=True), float("nan"), None)]
    with pytest.raises(InputError, match=r"p/predictions.json: image scores contain NaN"):
        image_metrics(test, Path("p/predictions.json"), n_bootstrap=0, seed=0)


def test_image_metrics_one_class_only_has_no_curves():
    test = [(_S([]), 0.1, None), (_S([]), 0.3, None)]
    image, curves = image_metrics(test, Path("p.json"), n_bootstrap=0, seed=0)
    assert np.isnan(image["ap"]) and np.isnan(image["auroc"]) and curves == {}
