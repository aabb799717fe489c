"""A dataset with ignore regions (issue 13) and predictions for it, for the evaluation tests,
the baseline tests and the predictions-contract tests: the ``data`` fixture (fake renders ->
``build_from_renders`` with --min-visible-px 10, --min-contrast dent=1.0: three ignore-only
images), ``write_predictions`` (maps with a signal on the ignore regions, so leaving them in
would change every number) and ``_pixels`` (the non-ignored pixels, read directly from the
files)."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import tifffile

from polar_detect.dataset.build import build_from_renders

from tests.detect.fake_render import anomaly, make_render

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


def _without_object_mask(data_dir, tmp_path):
    """A copy of the dataset whose manifest lists no object masks: (dir, manifest)."""

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    man = json.loads((copy / "manifest.json").read_text())
    for s in man["samples"]:
        s.pop("object_mask", None)
    (copy / "manifest.json").write_text(json.dumps(man))
    return copy, man
