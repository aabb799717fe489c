"""Instance masks against rendered appearance: every class changes the image inside its
mask only, and the stain mask is the support of the rendered difference."""
from __future__ import annotations

import numpy as np
import pytest

from tests.render.conftest import render_dir, samples, scene_variant


RES, SPP = (320, 240), 16


def _pair(tmp_path, classes, n=4, seed=2, max_depth=None):
    """Anomalous samples and their clean twins (same seed). ``max_depth=2`` renders direct
    light only: then a pixel's paths never reach another surface, so twins differ exactly
    where the visible surface differs (with interreflections, Monte Carlo paths that bounce
    onto an anomaly consume random numbers differently and their noise changes anywhere)."""
    from polar_render.config.scenes import load_scene
    cfg = load_scene("usb_brick")
    # a low visibility floor: these tests compare masks with rendered differences, small instances included
    spec = {"probability": 1.0, "count": 1, "min_visible_px": 4,
            "classes": {k: cfg.anomalies["classes"][k] for k in classes}}
    extra = {"render": {**cfg.render, "max_depth": max_depth}} if max_depth else {}
    path = scene_variant(tmp_path, anomalies=spec, **extra)
    kw = dict(scene=path, n=n, res=RES, spp=SPP, seed=seed)
    anom = samples(render_dir(tmp_path / "anom", **kw))
    clean = samples(render_dir(tmp_path / "clean", clean=True, **kw))
    return anom, clean


def _dilate(mask, r):
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def stain_pair(tmp_path_factory):
    return _pair(tmp_path_factory.mktemp("stains"), ["water_stain"], n=4, max_depth=2)


def test_stain_mask_matches_rendered_difference(stain_pair):
    """The support of |stained - clean| (same seed) is the stain mask: IoU >= 0.9 over the
    visible stains of all samples."""
    anom, clean = stain_pair
    inter = union = 0
    n_inst = 0
    for a, c in zip(anom, clean):
        assert (a["meta"]["anomaly_events"] or a["meta"]["anomalies_dropped"]) and not c["meta"]["anomalies"]
        mask = a["anomaly_mask"] > 0
        n_inst += len(a["meta"]["anomalies"])
        diff = np.abs(a["stokes"] - c["stokes"]).sum(-1)
        support = diff > 1e-6
        inter += (support & mask).sum()
        union += (support | mask).sum()
        # nothing changes away from the stains (2 px margin: pixel footprint; direct light
        # only, so a path never reaches a stain from another pixel)
        away = diff[~_dilate(mask, 2)]
        assert away.max(initial=0.0) < 1e-6, f"{int((away >= 1e-6).sum())} px change away from the stains"
    assert n_inst >= 3, "too few visible stains to test"
    iou = inter / union
    print(f"stain mask IoU vs rendered difference: {iou:.3f}")
    assert iou >= 0.9


def test_stain_instances_table(stain_pair):
    anom, _ = stain_pair
    for a in anom:
        ids = set(np.unique(a["anomaly_mask"])) - {0}
        table = a["meta"]["anomalies"]
        assert ids == {t["id"] for t in table}
        for t in table:
            sel = a["anomaly_mask"] == t["id"]
            assert t["class"] == "water_stain" and t["kind"] == "impurity"
            assert sel.sum() == t["area_px"]
            ys, xs = np.nonzero(sel)
            assert t["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert np.any(a["object_mask"][sel] > 0)    # stains lie on the object (footprint masks
            # may add boundary pixels whose centre ray sees the ground)


@pytest.mark.parametrize("cls", ["dent", "bump", "scratch", "chip", "missing", "extra", "swapped"])
def test_defect_changes_image_inside_mask_only(tmp_path, cls):
    """Against the clean twin: the exact geometry seen through any pixel centre changes only
    inside the mask (thresholds of the mask rule); the image changes on >= 90 % of the mask
    (footprint masks: every pixel the anomaly touches). Shadows it casts are not in the mask."""
    anom, clean = _pair(tmp_path, [cls], n=4)
    seen = geo_inside = 0
    for a, c in zip(anom, clean):
        mask = a["anomaly_mask"] > 0
        if not a["meta"]["anomalies"]:
            continue  # hidden from this camera
        seen += 1
        assert all(t["class"] == cls and t["kind"] == "defect" for t in a["meta"]["anomalies"])
        geo = ((a["object_mask"] != c["object_mask"]) | (np.abs(a["depth"] - c["depth"]) > 1e-6)
               | (np.sum(a["normals"] * c["normals"], -1) < np.cos(np.radians(0.1))))
        assert not (geo & ~mask).any(), f"{(geo & ~mask).sum()} px change geometry outside the mask"
        changed = np.abs(a["stokes"] - c["stokes"]).sum(-1) > 1e-6
        assert changed[mask].mean() >= 0.9
        if cls == "swapped":
            assert not geo.any()
            assert np.abs(a["dolp"] - c["dolp"])[mask].mean() > 1e-3
        else:
            geo_inside += int(geo[mask].sum())  # tiny footprint-only masks may have none
    assert seen >= 1, f"no visible {cls} in 4 samples"
    assert cls == "swapped" or geo_inside > 0
