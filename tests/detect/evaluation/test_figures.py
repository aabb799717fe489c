"""Figures of the evaluation report (polar_detect.evaluation.figures): overlay colours, which
curve figures are drawn, example figure names."""
from __future__ import annotations

import numpy as np

from polar_detect.evaluation.figures import curve_figures, example_figures


def test_overlay_colours():
    from polar_detect.evaluation.figures import overlay
    mask = np.array([[True, False, True, False]])
    pred = np.array([[True, True, False, False]])
    o = overlay(np.ones((1, 4, 3)), mask, pred)
    assert o[0, 0, 1] > 0.5 and o[0, 0, 0] == 0 and o[0, 0, 2] == 0   # TP green
    assert o[0, 1, 0] > 0.5 and o[0, 1, 1] == 0                       # FP red
    assert o[0, 2, 2] > 0.5 and o[0, 2, 0] == 0                       # FN blue
    assert np.allclose(o[0, 3], 0.5)                                  # TN: dimmed base


def _png_size(path):
    import cv2
    return cv2.imread(str(path)).shape[:2]


def test_curve_figures_draw_the_curves_present(tmp_path):
    m = {"image": {"auroc": 0.9, "ap": 0.8}, "pixel": {"auroc": 0.7, "ap": 0.3},
         "aupro": {"fpr_limit": 0.3, "value": 0.5}, "spro": {"fpr_limit": 0.05, "value": None}}
    assert curve_figures(m, {}, tmp_path) == {} and not list(tmp_path.iterdir())
    curves = {"image_roc": {"fpr": [0, 0.5, 1], "tpr": [0, 0.9, 1]},
              "pixel_pr": {"precision": [1, 0.5], "recall": [0, 1]},
              "pro": {"fpr": [0, 0.3], "pro": [0, 0.6]}}
    figs = curve_figures(m, curves, tmp_path)
    assert figs == {"roc": "roc.png", "pr": "pr.png", "pro": "pro.png"}    # no coverage curve: no R_DW
    assert all(min(_png_size(tmp_path / f)) > 100 for f in figs.values())


def test_example_figures_have_safe_names_in_order(tmp_path):
    rng = np.random.default_rng(0)
    ex = [{"id": "a/../b", "class": "dent", "map": rng.random((6, 8)), "mask": np.zeros((6, 8), bool),
           "pred": np.ones((6, 8), bool), "modalities": [("intensity", rng.random((12, 16, 3)))]},
          {"id": "n 1", "class": "good", "map": rng.random((6, 8)), "mask": np.zeros((6, 8), bool),
           "pred": np.zeros((6, 8), bool), "modalities": []}]
    out = example_figures(ex, 0.5, tmp_path)
    assert [e is x for (e, _), x in zip(out, ex)] == [True, True]
    assert [name for _, name in out] == ["example_00_dent_a____b.png", "example_01_good_n_1.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(name for _, name in out)
