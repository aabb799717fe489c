"""Image AUROC per anomaly class and group (evaluate._image_auroc_by_class) against scikit-learn."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from polar_detect.evaluate import CLASS_GROUPS, _image_auroc_by_class


class _S:
    def __init__(self, classes):
        self.e = {"classes": classes}


def test_by_class_and_group_match_sklearn():
    rng = np.random.default_rng(0)
    classes = [[]] * 12 + [["dent"]] * 5 + [["scratch", "water_stain"]] * 4 + [["missing"]] * 3
    kept = [(_S(c), None, None) for c in classes]
    labels = np.array([bool(c) for c in classes])
    scores = rng.normal(size=len(classes)) + labels * np.array([0.0] * 12 + [2.0] * 5 + [0.5] * 4 + [-1.0] * 3)
    out = _image_auroc_by_class(kept, scores, labels)
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
    assert _image_auroc_by_class(kept, np.zeros(3), np.ones(3, bool)) == {}
