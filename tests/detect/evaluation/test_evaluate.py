"""polar_detect.evaluation.evaluate end to end: metrics.json against direct scikit-learn /
brute-force computations on the non-ignored pixels (issue 13: ignore regions in every metric,
ignore-only images out of the image metrics, bootstrap interval, pixel AUROC inside the part,
per-class instance detection rate), the CLI's options and bad input, histogram mode bounds.

The baseline tests at the end drive ``python -m polar_detect.models.baseline`` and evaluate its
predictions; by the mirror rule they belong in tests/detect/models/baseline/ (another test tree:
to move there with the ``data`` fixture of ``ignore_data``)."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tifffile
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from polar_detect.evaluation import evaluate as ev
from polar_detect.models.baseline import blurred_object_mask
from polar_detect.models.baseline.__main__ import main as baseline_cli

from tests.detect.evaluation.ignore_data import _pixels, _png, write_predictions
from tests.detect.metrics.test_pro import trapezoid_to_limit

def test_evaluate_ignores_regions_and_ignore_only_images(data, tmp_path):
    data_dir, m = data
    scores = write_predictions(data_dir, m, tmp_path / "pred")
    met = ev.evaluate(tmp_path / "pred", data_dir, tmp_path / "eval", report=True, quiet=True)
    test = [s for s in m["samples"] if s["split"] == "test"]
    kept = [s for s in test if not s["ignore_image"]]
    assert met["image"]["n_ignored"] == len(test) - len(kept) > 0 and met["image"]["n"] == len(kept)
    y = [s["label"] for s in kept]
    sc = [scores[s["id"]] for s in kept]
    assert met["image"]["auroc"] == pytest.approx(roc_auc_score(y, sc), abs=1e-12)
    assert met["image"]["ap"] == pytest.approx(average_precision_score(y, sc), abs=1e-12)
    lo, hi = met["image"]["auroc_ci_low"], met["image"]["auroc_ci_high"]
    assert lo <= met["image"]["auroc"] <= hi and met["image"]["auroc_ci"]["n_resamples"] == 1000
    # pixel metrics on the non-ignored pixels only
    x, t = _pixels(data_dir, m, "test", tmp_path / "pred" / "maps")
    assert met["pixel"]["n_pos"] == t.sum() and met["pixel"]["n_neg"] == (~t).sum()
    assert met["pixel"]["auroc"] == pytest.approx(roc_auc_score(t, x), abs=1e-12)
    assert met["pixel"]["ap"] == pytest.approx(average_precision_score(t, x), abs=1e-12)
    xp, tp = _pixels(data_dir, m, "test", tmp_path / "pred" / "maps", part=True)
    assert met["pixel_part"]["auroc"] == pytest.approx(roc_auc_score(tp, xp), abs=1e-12)
    assert met["pixel_part"]["n_images"] == len(test) and xp.size < x.size
    assert met["ignore"]["n_ignore_pixels"] > 0 and met["ignore"]["rules"]["min_visible_px"] == 10
    # the threshold: F1-max on the non-ignored val pixels
    xv, tv = _pixels(data_dir, m, "val", tmp_path / "pred" / "maps")
    p, r, thr = precision_recall_curve(tv, xv)
    f1 = 2 * p * r / np.maximum(p + r, 1e-300)
    assert met["threshold"]["source"] == "val (F1-max)"
    assert met["threshold"]["val_f1"] == pytest.approx(f1[:-1].max(), abs=1e-9)
    t_chosen = met["threshold"]["value"]
    pred = x >= t_chosen
    assert met["thresholded"]["tp"] == (pred & t).sum() and met["thresholded"]["fp"] == (pred & ~t).sum()
    # instance detection rate per class at that threshold: >= 1 predicted pixel inside the instance
    det: dict = {}
    for s in test:
        if not s["instances"]:
            continue
        a = tifffile.imread(tmp_path / "pred" / "maps" / f"{s['id']}.tiff")
        im = _png(data_dir / s["instance_mask"])
        for i in s["instances"]:
            d = det.setdefault(i["class"], [0, 0])
            d[0] += bool(((im == i["id"]) & (a >= t_chosen)).any())
            d[1] += 1
    assert met["instance_detection_rate"] == {c: v[0] / v[1] for c, v in det.items()}
    # ignored instances are not instances to detect (they stay in the instance masks)
    assert any(s["ignored_instances"] for s in test)
    assert met["defect_wise_recall"]["n_instances"] == sum(len(s["instances"]) for s in test)
    # AUPRO against a brute force with ignore pixels neither region nor background
    maps = [tifffile.imread(tmp_path / "pred" / "maps" / f"{s['id']}.tiff") for s in test]
    masks = [_png(data_dir / s["mask"]) > 0 if s["mask"] else np.zeros(mp.shape, bool) for s, mp in zip(test, maps)]
    igns = [_png(data_dir / s["ignore"]) > 0 if s.get("ignore") else np.zeros(mp.shape, bool)
            for s, mp in zip(test, maps)]
    assert met["aupro"]["value"] == pytest.approx(brute_aupro_ignore(maps, masks, igns), abs=1e-9)
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "95 % interval" in html and "inside the part" in html and "ignore-only images" in html
    # leaving the ignore pixels in would have changed the numbers (the test has teeth)
    naive = roc_auc_score(np.concatenate([mk.ravel() for mk in masks]), np.concatenate([mp.ravel() for mp in maps]))
    assert abs(naive - met["pixel"]["auroc"]) > 1e-3


def brute_aupro_ignore(maps, masks, ignores, limit=0.3):
    regions = []
    for i, (mk, g) in enumerate(zip(masks, ignores)):
        n, lab = cv2.connectedComponents((mk & ~g).astype(np.uint8), connectivity=8)
        regions += [(i, lab == k) for k in range(1, n)]
    neg = [~mk & ~g for mk, g in zip(masks, ignores)]
    n_neg = sum(int(x.sum()) for x in neg)
    fprs, pros = [], []
    for t in np.unique(np.concatenate([mp[~g] for mp, g in zip(maps, ignores)]))[::-1]:
        pred = [mp >= t for mp in maps]
        pros.append(np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions]))
        fprs.append(sum(int((p & n).sum()) for p, n in zip(pred, neg)) / n_neg)
    return trapezoid_to_limit(fprs, pros, limit)


def test_cli_bootstrap_options(data, tmp_path, capsys):
    data_dir, m = data
    write_predictions(data_dir, m, tmp_path / "pred", seed=3)
    assert ev.main(["--pred", str(tmp_path / "pred"), "--data", str(data_dir), "--out", str(tmp_path / "e"),
                    "--bootstrap", "200", "--bootstrap-seed", "7", "--no-report"]) == 0
    out = capsys.readouterr().out
    met = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert met["image"]["auroc_ci"] == {"level": 0.95, "n_resamples": 200, "seed": 7,
                                        "method": "stratified percentile bootstrap"}
    assert f"[{met['image']['auroc_ci_low']:.4f}, {met['image']['auroc_ci_high']:.4f}]" in out
    assert ev.main(["--pred", str(tmp_path / "pred"), "--data", str(data_dir), "--out", str(tmp_path / "e2"),
                    "--bootstrap", "0", "--no-report"]) == 0
    assert "auroc_ci_low" not in json.loads((tmp_path / "e2" / "metrics.json").read_text())["image"]


def test_histogram_mode_reports_bounds(run, tmp_path):
    data, pred, vpred, _, _ = run
    exact = ev.evaluate(pred, data, tmp_path / "a", vpred, report=False, quiet=True)
    approx = ev.evaluate(pred, data, tmp_path / "b", vpred, report=False, quiet=True,
                         max_exact_pixels=1000, bins=512)
    assert approx["approximation"]["mode"] == "hist" and exact["approximation"]["mode"] == "exact"
    assert abs(approx["pixel"]["auroc"] - exact["pixel"]["auroc"]) <= approx["pixel"]["auroc_error_bound"] + 1e-12
    assert approx["pixel"]["ap_lower"] <= exact["pixel"]["ap"] <= approx["pixel"]["ap_upper"]
    assert abs(approx["aupro"]["value"] - exact["aupro"]["value"]) <= approx["aupro"]["error_bound"] + 1e-12
    assert abs(approx["spro"]["value"] - exact["spro"]["value"]) <= approx["spro"]["error_bound"] + 1e-12


def test_cli_bad_input_exits_2_naming_the_file(run, tmp_path):
    data, pred, _, _, _ = run
    bad = pred / "maps" / "000007.tiff"
    bad.write_bytes(b"not a tiff")
    r = subprocess.run([sys.executable, "-m", "polar_detect.evaluation.evaluate", "--pred", str(pred), "--data", str(data),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "000007.tiff" in r.stderr


# ------------------------------------------------ evaluate on the no-learning floor's predictions
def test_baseline_predicts_and_evaluates(data, tmp_path, capsys):
    from scipy.ndimage import gaussian_filter
    data_dir, m = data
    out = tmp_path / "base"
    assert baseline_cli(["predict", "--data", str(data_dir), "--split", "test,val", "--out", str(out),
                         "--sigma", "3"]) == 0
    assert "predictions.json" in capsys.readouterr().out
    pred = json.loads((out / "predictions.json").read_text())
    assert pred["split"] == "test" and pred["threshold"] is None and pred["model"] == "blurred_object_mask(sigma=3)"
    ids = {s["id"] for s in m["samples"] if s["split"] in ("test", "val")}
    assert set(pred["scores"]) == set(pred["maps"]) == ids
    from polar_detect.dataset.manifest import sha256_file
    assert pred["manifest_sha256"] == sha256_file(data_dir / "manifest.json")
    s0 = next(s for s in m["samples"] if s["split"] == "test")
    a = tifffile.imread(out / pred["maps"][s0["id"]])
    direct = gaussian_filter((_png(data_dir / s0["object_mask"]) > 0).astype(float), 3, mode="constant")
    assert a.dtype == np.float32 and a.shape == tuple(s0["size"]) and np.allclose(a, direct, atol=1e-6)
    assert pred["scores"][s0["id"]] == pytest.approx(float(direct.max()), abs=1e-6)
    assert np.array_equal(blurred_object_mask(np.ones((4, 4)), 0), np.ones((4, 4), np.float32))
    met = ev.evaluate(out, data_dir, tmp_path / "e", report=False, quiet=True)
    x, t = _pixels(data_dir, m, "test", out / "maps")
    assert met["pixel"]["auroc"] == pytest.approx(roc_auc_score(t, x), abs=1e-12)
    xp, tp = _pixels(data_dir, m, "test", out / "maps", part=True)
    assert met["pixel_part"]["auroc"] == pytest.approx(roc_auc_score(tp, xp), abs=1e-12)
    assert met["pixel"]["auroc"] > 0.6        # the part mask alone beats chance over the frame
