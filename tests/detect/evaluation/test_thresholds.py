"""The pixel threshold of an evaluation (polar_detect.evaluation.thresholds): precedence
(command line > F1-max on val > predictions.json > chosen on test, flagged optimistic), the
sweep mode, and the degeneracy flag."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from polar_detect.dataset.samples import load_samples
from polar_detect.evaluation import evaluate as ev
from polar_detect.evaluation.thresholds import choose_threshold, flag_degenerate, sweep_settings

from tests.detect.evaluation.handmade import make_run


def test_without_validation_threshold_is_flagged(tmp_path):
    data, pred, _, _, _ = make_run(tmp_path)
    m = ev.evaluate(pred, data, tmp_path / "o", report=False, quiet=True)
    assert m["threshold"]["source"] == "test (optimistic)"
    assert m["spro"]["value"] is None and any("optimistic" in w for w in m["warnings"])


def _entries(data, pred, split, maps):
    _, _, samples = load_samples(data)
    return [(s, float(maps[s.id].max()), pred / "maps" / f"{s.id}.tiff") for s in samples.values() if s.split == split]


def test_choose_threshold_precedence(run):
    data, _, vpred, _, maps = run
    val = _entries(data, vpred, "val", maps)
    warnings = []
    kw = dict(mode="exact")
    # F1-max on the val pixels (sklearn's precision-recall curve, predicted positive iff score >= t)
    x = np.concatenate([maps[s.id].ravel() for s, _, _ in val])
    t = np.concatenate([s.mask(maps[s.id].shape).ravel() for s, _, _ in val])
    p, r, thr = precision_recall_curve(t, x)
    f1 = 2 * p * r / np.maximum(p + r, 1e-300)
    k = int(np.argmax(f1[:-1]))
    got = choose_threshold(val, kw, None, {"threshold": 0.25}, warnings.append)
    assert got["source"] == "val (F1-max)" and got["value"] == pytest.approx(thr[k])
    assert got["val_f1"] == pytest.approx(f1[k], abs=1e-12) and got["n_val_images"] == len(val)
    assert choose_threshold(val, kw, 0.7, {"threshold": 0.25}, warnings.append) == {"value": 0.7,
                                                                                 "source": "command line"}
    assert choose_threshold([], kw, None, {"threshold": 0.25}, warnings.append) == {
        "value": 0.25, "source": "predictions.json"}
    assert choose_threshold([], kw, None, {"threshold": None}, warnings.append) == {} and warnings == []
    # val entries without an anomalous pixel cannot choose: warned, then predictions.json
    normal_val = [e for e in val if not e[0].label]
    assert choose_threshold(normal_val, kw, None, {"threshold": 0.25}, warnings.append)["source"] == "predictions.json"
    assert len(warnings) == 1 and "no anomalous pixel" in warnings[0]


def test_sweep_settings_switch_to_a_histogram_over_the_global_range(run):
    data, pred, vpred, _, maps = run
    test, val = _entries(data, pred, "test", maps), _entries(data, vpred, "val", maps)
    n_test = sum(maps[s.id].size for s, _, _ in test)
    n_val = sum(maps[s.id].size for s, _, _ in val)
    kw, total = sweep_settings(test, val, 512, max(n_test, n_val))
    assert kw == {"mode": "exact", "bins": 512, "value_range": None} and total == n_test
    kw, total = sweep_settings(test, val, 512, max(n_test, n_val) - 1)
    every = np.concatenate([maps[s.id].ravel() for s, _, _ in test + val])
    assert kw["mode"] == "hist" and kw["value_range"] == (float(every.min()), float(every.max()))
    assert total == n_test


@pytest.mark.parametrize("fp, tn, flagged, normals, degenerate", [
    (51, 49, 0, 4, True),       # most normal pixels flagged
    (1, 99, 3, 4, True),        # few pixels, but most normal images
    (50, 50, 2, 4, False),      # exactly half is not "most"
])
def test_flag_degenerate_marks_every_dependent_section(fp, tn, flagged, normals, degenerate):
    info = {"value": 0.5, "source": "command line"}
    results = {"thresholded": {"fp": fp, "tn": tn}, "defect_wise_recall": {"mR_DW": 1.0}}
    warnings = []
    flag_degenerate(info, results, SimpleNamespace(n_normal_images_flagged=flagged, n_normal_images=normals),
                    warnings.append)
    assert info["degenerate"] is degenerate and info["degeneracy"]["normal_pixel_fraction"] == fp / (fp + tn)
    assert results["thresholded"]["threshold_degenerate"] is degenerate
    assert results["defect_wise_recall"]["threshold_degenerate"] is degenerate
    assert len(warnings) == int(degenerate) and all("degenerate threshold 0.5" in w for w in warnings)


def test_flag_degenerate_without_threshold_does_nothing():
    results = {"thresholded": None, "defect_wise_recall": None}
    flag_degenerate({}, results, None, pytest.fail)
    assert results == {"thresholded": None, "defect_wise_recall": None}
