"""Defect-wise recall on hand-made instance masks.

Rule under test: an instance is detected when predicted-positive pixels inside it number at
least one and at least the required fraction; a prediction blob counts for every instance it
overlaps (a leak from a neighbour's blob detects the neighbour too)."""
import numpy as np
import pytest

from polar_detect.metrics import COVERAGE_THRESHOLDS, DefectWiseRecall, defect_wise_recall, instance_coverage

INSTANCES = [{"id": 1, "class": "dent", "kind": "defect"},      # touched by one pixel
             {"id": 2, "class": "scratch", "kind": "defect"},   # untouched
             {"id": 3, "class": "dent", "kind": "defect"},      # touched only by a leak from 4's blob
             {"id": 4, "class": "stain", "kind": "impurity"}]   # fully predicted


def scene():
    inst = np.zeros((20, 20), np.uint16)
    inst[2:5, 2:5] = 1
    inst[10:14, 10:14] = 2
    inst[2:5, 10:13] = 3
    inst[2:5, 13:16] = 4
    pred = np.zeros((20, 20), bool)
    pred[3, 3] = True             # one pixel of instance 1
    pred[1:6, 12:17] = True       # blob around instance 4, leaking into column 12 of instance 3
    return pred, inst


def test_coverage_per_instance():
    pred, inst = scene()
    cov = {r["id"]: (r["covered"], r["area"]) for r in instance_coverage(pred, inst, INSTANCES)}
    assert cov == {1: (1, 9), 2: (0, 16), 3: (3, 9), 4: (9, 9)}


def test_default_one_pixel_rule_and_leak_counts():
    pred, inst = scene()
    r = defect_wise_recall([pred], [inst], [INSTANCES])
    pc = r["per_class"]
    assert pc["dent"]["detected"] == 2 and pc["dent"]["recall"] == 1.0   # 1 by one pixel, 3 by the leak
    assert pc["scratch"]["recall"] == 0.0
    assert pc["stain"]["recall"] == 1.0 and pc["stain"]["kind"] == "impurity"
    assert r["mR_DW"] == pytest.approx(0.5)            # mean over dent, scratch only
    assert r["mR_DW_impurity"] == pytest.approx(1.0)   # impurities reported separately
    assert pc["dent"]["pixel_coverage"] == pytest.approx(4 / 18)
    assert pc["dent"]["mean_instance_coverage"] == pytest.approx((1 / 9 + 3 / 9) / 2)


def test_coverage_requirement_and_curve():
    pred, inst = scene()
    r = defect_wise_recall([pred], [inst], [INSTANCES], min_coverage=0.5)
    assert r["per_class"]["dent"]["detected"] == 0        # 1/9 and 3/9 < 50 %
    assert r["per_class"]["stain"]["detected"] == 1
    curve = r["coverage_curve"]
    assert curve["coverage_thresholds"] == list(COVERAGE_THRESHOLDS)
    pct = [round(100 * c) for c in COVERAGE_THRESHOLDS]
    assert pct == [0, 1, 2, 3, 5, 10, 15, 20, 25, 50, 75, 100]
    dent = dict(zip(pct, curve["per_class"]["dent"]))
    # instance 1 covers 11.1 %, instance 3 covers 33.3 %
    assert dent[10] == 1.0 and dent[15] == 0.5 and dent[25] == 0.5 and dent[50] == 0.0
    assert curve["per_class"]["stain"] == [1.0] * 12   # full coverage passes 100 %
    assert curve["per_class"]["scratch"] == [0.0] * 12
    assert curve["mean_defect"][0] == pytest.approx(0.5)


def test_empty_prediction_and_missing_instance():
    pred, inst = scene()
    m = DefectWiseRecall()
    m.update(np.zeros_like(pred), inst, INSTANCES + [{"id": 9, "class": "dent", "kind": "defect"}])
    r = m.compute()
    assert r["n_empty_instances"] == 1 and r["n_instances"] == 4
    assert r["mR_DW"] == 0.0
