"""Issue 13 evaluation side: ignore regions in every metric, ignore-only images out of the
image metrics, image AUROC bootstrap interval, pixel AUROC inside the part, per-class
instance detection rate, and the blurred-object-mask baseline; checked against direct
scikit-learn / brute-force computations on the non-ignored pixels."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import tifffile
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from polar_detect import evaluate as ev
from polar_detect.baseline import blurred_object_mask
from polar_detect.baseline.__main__ import main as baseline_cli
from polar_detect.dataset.build import build_from_renders
from polar_detect.metrics import (AUPRO, AUsPRO, BinaryROC, F1OptimalThreshold, ThresholdedPRF,
                                  auroc_bootstrap_ci, binary_auroc, bootstrap_ci, stratified_bootstrap_indices)

from .fake_render import anomaly, make_render
from .test_metrics_pro import trapezoid_to_limit

SPECS = ([[] for _ in range(10)] + [
    [anomaly(1, "dent", (5, 5, 12, 12), contrast=8.0), anomaly(2, "dent", (18, 6, 24, 12), contrast=0.3)],
    [anomaly(1, "scratch", (8, 14, 24, 17), contrast=4.0)],
    [anomaly(1, "dent", (10, 8, 18, 16), contrast=6.0)],
    [anomaly(1, "dent", (6, 12, 12, 18), contrast=0.2)],                # ignore-only
    [anomaly(1, "scratch", (20, 14, 22, 16), contrast=5.0)],            # 4 px: ignore-only
    [anomaly(1, "dent", (14, 4, 22, 10), contrast=7.0), anomaly(2, "scratch", (4, 16, 6, 18), contrast=9.0)],
    [anomaly(1, "scratch", (6, 6, 20, 8), contrast=2.0)],
    [anomaly(1, "dent", (5, 10, 11, 18), contrast=0.1)],                # ignore-only
] + [[anomaly(1, "dent", (8 + k, 6, 16 + k, 14), contrast=3.0)] for k in range(4)])


def _png(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev13")
    r = make_render(root / "render", SPECS, seed=11)
    m, _ = build_from_renders([r], root / "data", "dolp", min_visible_px=10, min_contrast="dent=1.0",
                              val_fraction=0.4, progress=False)
    assert m["ignore_rules"]["n_ignore_images"] == 3
    return root / "data", m


def write_predictions(data, m, out, seed=0, ignore_signal=3.0):
    """Maps: noise + 1.0 on anomalies + ``ignore_signal`` on ignore regions (so leaving the
    ignore pixels in would change every number), image score = map max + noise."""
    rng = np.random.default_rng(seed)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    scores, maps = {}, {}
    for s in m["samples"]:
        if s["split"] == "train":
            continue
        h, w = s["size"]
        a = rng.normal(0, 0.5, (h, w))
        if s["mask"]:
            a += 1.0 * (_png(data / s["mask"]) > 0)
        if s.get("ignore"):
            a += ignore_signal * (_png(data / s["ignore"]) > 0)
        a = a.astype(np.float32)
        tifffile.imwrite(out / "maps" / f"{s['id']}.tiff", a)
        scores[s["id"]], maps[s["id"]] = float(a.max() + rng.normal(0, 0.3)), f"maps/{s['id']}.tiff"
    (out / "predictions.json").write_text(json.dumps({"model": "toy", "split": "test", "threshold": None,
                                                      "scores": scores, "maps": maps}))
    return scores


def _pixels(data, m, split, maps_dir, part=False):
    """(scores, labels) of the non-ignored pixels of a split, directly from the files."""
    xs, ys = [], []
    for s in m["samples"]:
        if s["split"] != split:
            continue
        a = tifffile.imread(maps_dir / f"{s['id']}.tiff")
        y = _png(data / s["mask"]) > 0 if s["mask"] else np.zeros(a.shape, bool)
        keep = ~(_png(data / s["ignore"]) > 0) if s.get("ignore") else np.ones(a.shape, bool)
        if part:
            keep &= _png(data / s["object_mask"]) > 0
        xs.append(a[keep])
        ys.append(y[keep])
    return np.concatenate(xs), np.concatenate(ys)


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


def _without_object_mask(data_dir, tmp_path):
    """A copy of the dataset whose manifest lists no object masks: (dir, manifest)."""

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    man = json.loads((copy / "manifest.json").read_text())
    for s in man["samples"]:
        s.pop("object_mask", None)
    (copy / "manifest.json").write_text(json.dumps(man))
    return copy, man


def test_dataset_without_object_mask_reports_no_part_metric(data, tmp_path):

    data_dir, m = data
    copy, man = _without_object_mask(data_dir, tmp_path)
    write_predictions(copy, man, tmp_path / "pred")
    met = ev.evaluate(tmp_path / "pred", copy, tmp_path / "e", report=False, quiet=True)
    assert met["pixel_part"]["auroc"] is None and "object_mask" in met["pixel_part"]["note"]
    assert met["pixel"]["auroc"] is not None


# ------------------------------------------------------------------ metrics with ignore
def test_stateful_metrics_ignore_matches_masked_sklearn():
    rng = np.random.default_rng(0)
    a = rng.random((3, 20, 20))
    t = rng.random((3, 20, 20)) < 0.2
    g = (rng.random((3, 20, 20)) < 0.3) & ~t
    roc = BinaryROC(mode="exact")
    f1 = F1OptimalThreshold(mode="exact")
    prf = ThresholdedPRF(0.5)
    for ai, ti, gi in zip(a, t, g):
        roc.update(ai, ti, gi)
        f1.update(ai, ti, gi)
        prf.update(ai, ti, gi)
    k = ~g
    assert roc.compute()["auroc"] == pytest.approx(roc_auc_score(t[k], a[k]), abs=1e-12)
    assert roc.compute()["n_neg"] == (~t & k).sum()
    p, r, _ = precision_recall_curve(t[k], a[k])
    assert f1.compute()["f1"] == pytest.approx((2 * p * r / np.maximum(p + r, 1e-300)).max(), abs=1e-12)
    assert prf.compute()["fp"] == ((a >= 0.5) & ~t & k).sum()
    with pytest.raises(ValueError, match="ignore mask"):
        BinaryROC().update(a[0], t[0], g[0][:5])
    # AU-sPRO without saturation equals AUPRO with the same ignore mask (regions = components)
    sp, pro = AUsPRO(0.3, mode="exact"), AUPRO(0.3, mode="exact")
    for ai, ti, gi in zip(a, t, g):
        n, lab = cv2.connectedComponents((ti & ~gi).astype(np.uint8), connectivity=8)
        regs = np.stack([lab == j for j in range(1, n)]) if n > 1 else np.zeros((0,) + ai.shape, bool)
        sp.update(ai, regs, ignore=gi)
        pro.update(ai, ti, gi)
    assert sp.compute()["value"] == pytest.approx(pro.compute()["value"], abs=1e-12)


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_matches_brute_force_and_is_stratified():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(12, bool), np.zeros(20, bool)]
    s = rng.normal(size=32) + y
    s[3] = s[20]  # a tie across classes
    idx = stratified_bootstrap_indices(y, 300, seed=4)
    assert idx.shape == (300, 32) and (y[idx].sum(axis=1) == 12).all()    # class counts kept
    brute = np.array([roc_auc_score(y[i], s[i]) for i in idx])
    ci = auroc_bootstrap_ci(s, y, n_resamples=300, seed=4)
    assert ci["low"] == pytest.approx(np.quantile(brute, 0.025), abs=1e-12)
    assert ci["high"] == pytest.approx(np.quantile(brute, 0.975), abs=1e-12)
    assert ci["point"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert ci["low"] <= ci["point"] <= ci["high"]
    generic = bootstrap_ci(binary_auroc, s, y, n_resamples=300, seed=4)
    assert (generic["low"], generic["high"]) == pytest.approx((ci["low"], ci["high"]), abs=1e-12)
    assert auroc_bootstrap_ci(s, y, n_resamples=300, seed=4) == ci                  # deterministic


def test_bootstrap_narrows_with_more_data_and_edge_cases():
    rng = np.random.default_rng(2)

    def width(n):
        y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
        ci = auroc_bootstrap_ci(rng.normal(size=2 * n) + y, y, n_resamples=500)
        return ci["high"] - ci["low"]

    assert width(400) < 0.5 * width(25)
    perfect = auroc_bootstrap_ci([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert perfect["low"] == perfect["high"] == perfect["point"] == 1.0
    one_class = auroc_bootstrap_ci([0.1, 0.2], [0, 0])
    assert np.isnan(one_class["low"]) and np.isnan(one_class["point"])
    with pytest.raises(ValueError, match="level"):
        auroc_bootstrap_ci([0.1, 0.9], [0, 1], level=1.5)


# ------------------------------------------------------------------ baseline
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


def test_baseline_bad_input(data, tmp_path, capsys):

    data_dir, _ = data
    assert baseline_cli(["predict", "--data", str(data_dir), "--split", "tst", "--out", str(tmp_path / "o")]) == 2
    assert "unknown split 'tst'" in capsys.readouterr().err
    assert baseline_cli(["predict", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "nope/manifest.json" in capsys.readouterr().err
    assert baseline_cli(["predict", "--data", str(data_dir), "--out", str(tmp_path / "o"), "--sigma", "-1"]) == 2
    assert "--sigma" in capsys.readouterr().err
    copy, man = _without_object_mask(data_dir, tmp_path)
    assert baseline_cli(["predict", "--data", str(copy), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "no object_mask" in err
    assert not (tmp_path / "o").exists()
