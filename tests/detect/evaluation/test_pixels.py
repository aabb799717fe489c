"""Every pixel metric of the evaluated split (polar_detect.evaluation.pixels): ``PixelPass``
fed map by map against direct computations, the part metric without object masks, ``thin``."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from sklearn.metrics import precision_recall_curve, roc_auc_score

from polar_detect.dataset.samples import load_samples
from polar_detect.evaluation import evaluate as ev
from polar_detect.evaluation.pixels import PixelPass, thin

from tests.detect.evaluation.ignore_data import _png, _without_object_mask, write_predictions


def test_dataset_without_object_mask_reports_no_part_metric(data, tmp_path):

    data_dir, m = data
    copy, man = _without_object_mask(data_dir, tmp_path)
    write_predictions(copy, man, tmp_path / "pred")
    met = ev.evaluate(tmp_path / "pred", copy, tmp_path / "e", report=False, quiet=True)
    assert met["pixel_part"]["auroc"] is None and "object_mask" in met["pixel_part"]["note"]
    assert met["pixel"]["auroc"] is not None


def test_thin_keeps_the_ends_and_pairs():
    x = np.linspace(0.0, 1.0, 5001)
    y = x ** 2
    tx, ty = thin(x, y, n=100)
    assert len(tx) == len(ty) <= 101 and tx[0] == 0.0 and tx[-1] == 1.0
    assert np.allclose(np.square(tx), ty)                       # the same indices for every array
    assert np.all(np.diff(tx) > 0)                              # order kept, no repeated point
    short = thin([3, 1, 2], [1, 2, 3], n=100)
    assert short == [[3, 1, 2], [1, 2, 3]]                      # short curves untouched


def _entries(data_dir, pred_dir, split):
    _, _, samples = load_samples(data_dir)
    return [s for s in samples.values() if s.split == split], pred_dir / "maps"


def test_pixel_pass_leaves_ignore_pixels_out_and_counts_flagged_normals(data, tmp_path):
    """A fixed threshold: pixel AUROC over the non-ignored pixels, the part AUROC inside
    object_mask, TP/FP at the threshold, and how many normal images have a flagged pixel."""
    data_dir, m = data
    write_predictions(data_dir, m, tmp_path / "pred", seed=5)
    test, maps = _entries(data_dir, tmp_path / "pred", "test")
    val, _ = _entries(data_dir, tmp_path / "pred", "val")
    test += val                                       # more normal images to flag or not
    normal_max = [tifffile.imread(maps / f"{s.id}.tiff").max() for s in test if not s.label and not s.ignore_image]
    thr = float(np.median(normal_max))                # some normal images flagged, some not
    px = PixelPass(dict(mode="exact"), 0.3, 0.05, 0.0, m["classes"], False, thr)
    xs, ts, xp, tp_, n_flag, n_norm, n_ign = [], [], [], [], 0, 0, 0
    for s in test:
        a = tifffile.imread(maps / f"{s.id}.tiff")
        px.add(s, a, maps / f"{s.id}.tiff")
        t = _png(data_dir / s.e["mask"]) > 0 if s.e["mask"] else np.zeros(a.shape, bool)
        g = _png(data_dir / s.e["ignore"]) > 0 if s.e.get("ignore") else np.zeros(a.shape, bool)
        part = _png(data_dir / s.e["object_mask"]) > 0
        xs.append(a[~g]), ts.append(t[~g]), xp.append(a[~g & part]), tp_.append(t[~g & part])
        n_ign += int(g.sum())
        if not s.label and not s.ignore_image:
            n_norm += 1
            n_flag += bool(((a >= thr) & ~g).any())
    x, t = np.concatenate(xs), np.concatenate(ts)
    r = px.results()
    assert r["pixel"]["auroc"] == pytest.approx(roc_auc_score(t, x), abs=1e-12)
    assert r["pixel_part"]["auroc"] == pytest.approx(roc_auc_score(np.concatenate(tp_), np.concatenate(xp)), abs=1e-12)
    assert r["pixel_part"]["n_images"] == len(test) and "note" not in r["pixel_part"]
    assert r["thresholded"]["tp"] == ((x >= thr) & t).sum() and r["thresholded"]["fp"] == ((x >= thr) & ~t).sum()
    assert px.n_ignore_px == n_ign > 0
    assert (px.n_normal_images, px.n_normal_images_flagged) == (n_norm, n_flag) and 0 < n_flag < n_norm
    assert r["spro"]["value"] is None and set(r["instance_detection_rate"]) <= set(m["classes"])


def test_threshold_on_test_is_the_f1_max_of_the_split(run):
    """Without a threshold the pass keeps the maps and chooses the F1-max threshold afterwards;
    the thresholded metrics are then those of that threshold."""
    data, pred, _, samples, maps = run
    test, _ = _entries(data, pred, "test")
    px = PixelPass(dict(mode="exact"), 0.3, 0.05, 0.0, None, False, None)
    assert px.results()["thresholded"] is None
    for s in test:
        px.add(s, maps[s.id], pred / "maps" / f"{s.id}.tiff")
    info = px.threshold_on_test()
    x = np.concatenate([maps[s.id].ravel() for s in test])
    t = np.concatenate([(s.mask(maps[s.id].shape)).ravel() for s in test])
    p, r, thr = precision_recall_curve(t, x)
    f1 = 2 * p * r / np.maximum(p + r, 1e-300)
    k = int(np.argmax(f1[:-1]))
    assert info["source"] == "test (optimistic)" and info["test_f1"] == pytest.approx(f1[k], abs=1e-12)
    assert info["value"] == pytest.approx(thr[k])
    res = px.results()["thresholded"]
    assert res["tp"] == ((x >= info["value"]) & t).sum() and res["f1"] == pytest.approx(f1[k], abs=1e-12)
