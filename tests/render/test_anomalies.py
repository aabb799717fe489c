"""Surface anomalies: Algorithm 1, nearest-centre search, masks vs rendered appearance,
and every class changing the image inside its mask only."""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.anomalies import CURVE_EXACT_MM, Anomaly, _curve_distance, displacement, sample_anomalies
from polar_render.stain import (StainParams, brute_force_nearest, evaluate, jittered_centres,
                                nearest_centre, perlin)

from .conftest import render_dir, samples, scene_variant


def _params(rng, cell=8.0, radius=2.0, amp=0.0, lo=(-20, -10, -10), hi=(20, 10, 10)):
    origin, dims, centres = jittered_centres(np.array(lo), np.array(hi), cell, rng)
    return StainParams(radius, cell, 0.5, amp, 2.0, -0.3, 0.4, (3.0, 5.0, 7.0), origin, dims, centres)


def test_algorithm1_centre_boundary_outside():
    sp = _params(np.random.default_rng(0))
    c = sp.centres_mm[len(sp.centres_mm) // 2]
    u = np.array([1.0, 0.0, 0.0])
    pts = np.stack([c, c + u * (sp.radius_mm - 1e-6), c + u * (sp.radius_mm + 1e-3), c + u * sp.radius_mm / 2])
    inside, d_hat, idx, delta = evaluate(pts, sp, noise_values=np.zeros(4))   # amplitude 0: r' = r
    assert inside.tolist() == [True, True, False, True]
    assert d_hat[0] == 0 and delta[0] == 0                 # centre: base reflectance
    assert d_hat[1] == pytest.approx(1.0) and delta[1] == pytest.approx(sp.alpha)   # rim: full alpha
    assert delta[3] == pytest.approx((0.5 ** sp.gamma) * sp.alpha)
    assert delta[2] == 0
    # Perlin perturbs the radius: r' = r + N * A with noise.pnoise3
    sp.amplitude_mm = 1.0
    n = perlin(pts[1:2], sp.frequency_per_mm, sp.noise_offset)
    inside2, d_hat2, _, _ = evaluate(pts[1:2], sp)
    assert inside2[0] == (sp.radius_mm - 1e-6 <= sp.radius_mm + n[0])
    if inside2[0]:
        assert d_hat2[0] == pytest.approx((sp.radius_mm - 1e-6) / (sp.radius_mm + n[0]))


def test_neighbour_search_equals_brute_force():
    rng = np.random.default_rng(1)
    for cell in (4.0, 7.5, 12.0):
        sp = _params(rng, cell=cell, radius=cell / 2 - 0.6, amp=0.5)
        pts = rng.uniform(-20, 20, size=(4000, 3)) * [1, 0.5, 0.5]
        d, idx = nearest_centre(pts, sp)
        bd, bidx = brute_force_nearest(pts, sp.centres_mm)
        near = bd < cell / 2            # every stain decision happens at d <= r' < G/2
        assert near.sum() > 100
        assert np.array_equal(idx[near], bidx[near]) and np.allclose(d[near], bd[near])
        ins, _, ci, _ = evaluate(pts, sp)
        bins = bd <= sp.radius_mm + perlin(pts, sp.frequency_per_mm, sp.noise_offset) * sp.amplitude_mm
        assert np.array_equal(ins, bins) and np.array_equal(ci[ins], bidx[ins])


def test_same_seed_same_stains():
    from polar_render.config import load_scene
    cfg = load_scene("usb_brick")
    spec = {**cfg.anomalies, "probability": 1.0, "classes": {"water_stain": cfg.anomalies["classes"]["water_stain"]}}

    class S:  # minimal slot
        def __init__(self, key, part):
            self.key, self.instance, self.part = key, 1, part

    slots = [S("i1_brick_top", "brick_top"), S("i1_brick_bottom", "brick_bottom")]
    v = np.random.default_rng(0).uniform(-15, 15, (100, 3))
    models = {s.key: (v, np.zeros((1, 3), int)) for s in slots}
    a = sample_anomalies(spec, 5, 11, slots, models)[0].stain
    b = sample_anomalies(spec, 5, 11, slots, models)[0].stain
    c = sample_anomalies(spec, 5, 12, slots, models)[0].stain
    assert np.array_equal(a.centres_mm, b.centres_mm) and a.radius_mm == b.radius_mm
    assert not np.array_equal(a.centres_mm, c.centres_mm)


def test_scratch_and_chip_displacement():
    """Scratch: groove depth at the curve, zero beyond w/2; chip: points beyond the cut
    plane land on it, points behind it do not move."""
    curve = [[-5.0, 0.0, 0.0], [5.0, 0.0, 0.0]]
    s = Anomaly("scratch", 1, {"curve_mm": curve, "width_mm": 1.0, "normal": [0, 0, 1], "height_mm": -0.2})
    v = np.array([[0, 0, 0], [0, 0.25, 0], [0, 0.6, 0], [7, 0, 0]], float)
    d = displacement(v, s)
    assert d[0, 2] == pytest.approx(-0.2) and d[1, 2] == pytest.approx(-0.2 * 0.75**2)
    assert d[2, 2] == 0 and d[3, 2] == 0
    c = Anomaly("chip", 1, {"plane_point_mm": [1, 1, 1], "normal": list(np.ones(3) / np.sqrt(3))})
    v = np.array([[2, 2, 2], [0, 0, 0], [1.5, 1, 1]], float)
    moved = v + displacement(v, c)
    assert np.allclose((moved[[0, 2]] - 1) @ (np.ones(3) / np.sqrt(3)), 0)   # on the cut plane
    assert np.array_equal(moved[1], v[1])


def test_curve_distance_matches_brute_force():
    """Scratch distance: exact (vs every segment, every point) up to CURVE_EXACT_MM, and a
    lower bound beyond it that stays above CURVE_EXACT_MM (so thresholds below it are exact)."""
    rng = np.random.default_rng(3)
    sv = np.linspace(-6, 6, 64)
    curve = np.c_[sv, sv**2 / 25, 0.3 * sv] + 1.0
    p = rng.uniform(-15, 15, (20000, 3))
    brute = np.full(len(p), np.inf)
    for a, b in zip(curve[:-1], curve[1:]):
        t = np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
        brute = np.minimum(brute, np.linalg.norm(p - (a + t[:, None] * (b - a)), axis=1))
    d = _curve_distance(p, curve)
    near = brute <= CURVE_EXACT_MM
    assert near.sum() > 1000 and (~near).sum() > 1000
    np.testing.assert_allclose(d[near], brute[near], atol=1e-12)
    assert np.all(d[~near] > CURVE_EXACT_MM) and np.all(d[~near] <= brute[~near] + 1e-12)


def test_dent_displacement_is_smooth_and_local():
    a = Anomaly("dent", 1, {"centre_mm": [0, 0, 0], "normal": [0, 0, 1], "radius_mm": 2.0, "height_mm": -0.5})
    v = np.array([[0, 0, 0], [1, 0, 0], [1.999, 0, 0], [2.5, 0, 0]], float)
    d = displacement(v, a)
    assert d[0, 2] == pytest.approx(-0.5) and d[3, 2] == 0 and abs(d[2, 2]) < 1e-5
    assert np.all(d[:, :2] == 0)


# --------------------------------------------------------------------- rendered checks

RES, SPP = (320, 240), 16


def _pair(tmp_path, classes, n=4, seed=2, max_depth=None):
    """Anomalous samples and their clean twins (same seed). ``max_depth=2`` renders direct
    light only: then a pixel's paths never reach another surface, so twins differ exactly
    where the visible surface differs (with interreflections, Monte Carlo paths that bounce
    onto an anomaly consume random numbers differently and their noise changes anywhere)."""
    from polar_render.config import load_scene
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
        # nothing changes away from the stains (2 px margin: pixel footprint, 1 bounce)
        assert np.all(diff[~_dilate(mask, 2)] < 1e-6) or diff[~_dilate(mask, 2)].mean() < 1e-4
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
