"""The aluminium-plate scene: paired clean/stained renders, top-down camera, ring-light variants.

Paired renders: the stained run and its clean twin (``RenderRequest(clean=True)``, CLI
``--clean``) share every sampled value and the render seed, and the stain texture is in
the kernel of both (disabled in the twin), so pixels whose every path misses the stains
are bit-identical. The stain mask is evaluated on exact surface points at pixel centres
(sub-pixel grid with mask supersampling), while the Stokes pass integrates each pixel's
whole footprint (random sub-pixel positions, box filter) and interpolates the Perlin noise
linearly over each <= 1 mm triangle: a pixel whose centre misses a stain can still see its
edge. Hence the comparison outside the mask uses the mask dilated by ``DILATE_PX``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import ndimage

from polar_render.config.scenes import load_scene
from polar_render.mitsuba.lights import apply_light_variant, ring_geometry
from polar_render.run.request import RenderRequest
from polar_render.run.runner import run

from tests.render.conftest import render_dir, samples

REPO = Path(__file__).resolve().parents[3]
SCENE = REPO / "scenes" / "aluminum_plate" / "scene.yaml"
DILATE_PX = 1
KW = dict(n=2, res=(96, 72), spp=2, seed=11, progress=False)


def _stains_only_scene(tmp_path: Path) -> Path:
    raw = yaml.safe_load(SCENE.read_text())
    for part in raw["objects"][1]["parts"].values():
        part["mesh"] = str((SCENE.parent / part["mesh"]).resolve())
    raw["anomalies"] = {"probability": 1.0, "count": 1, "min_visible_px": 4,   # 96x72: stains are small
                        "classes": {"water_stain": raw["anomalies"]["classes"]["water_stain"]}}
    path = tmp_path / "plate_stains" / "scene.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plate")
    scene = _stains_only_scene(tmp)
    stained = samples(render_dir(tmp / "stained", scene=scene, **KW))
    clean = samples(render_dir(tmp / "clean", scene=scene, clean=True, **KW))
    return stained, clean


def test_clean_twins_identical_outside_stain_masks(paired):
    stained, clean = paired
    for s, c in zip(stained, clean):
        assert s["meta"]["sampled"] == c["meta"]["sampled"]      # every texture/light/camera value
        assert c["meta"]["clean_twin"] and not c["meta"]["anomalies"]
        assert all(a["class"] == "water_stain" for a in s["meta"]["anomalies"])
        mask = s["anomaly_mask"] > 0
        assert mask.sum() >= 5, "no visible stain: pick another seed"
        assert not c["anomaly_mask"].any()
        for k in ("normals", "depth", "object_mask", "part_mask"):   # stains are texture only
            assert np.array_equal(s[k], c[k]), k
        near = ndimage.binary_dilation(mask, iterations=DILATE_PX)
        diff = np.any(s["stokes"] != c["stokes"], axis=-1)
        assert not np.any(diff & ~near), f"{int((diff & ~near).sum())} pixels differ outside the dilated mask"
        # inside: the stain changes reflectance and roughness
        assert diff[mask].mean() > 0.5, diff[mask].mean()
        s0s, s0c = s["stokes"][..., :3].sum(-1), c["stokes"][..., :3].sum(-1)
        assert np.abs(s0s - s0c)[mask].mean() > 1e-3 * s0c[mask].mean()


def test_camera_perpendicular_to_plate(paired):
    for s in paired[0]:
        meta = s["meta"]
        top = next(p["part_id"] for p in meta["parts"] if p["part"] == "plate_top")
        on = s["part_mask"] == top
        assert on.mean() > 0.6   # the plate fills most of the frame
        n = s["normals"][on]
        assert np.all(n[:, 2] < -0.9999), n[:, 2].max()        # plate normal in camera frame ~ (0, 0, -1)
        R_m2c = np.asarray(meta["frame"]["objects"][0]["cam_R_m2c"])
        assert np.allclose(R_m2c @ [0, 0, 1], [0, 0, -1], atol=1e-6)
        # camera on the ring axis (within the xy jitter) at the ring's height
        R_w2c, t = np.asarray(meta["frame"]["cam_R_w2c"]), np.asarray(meta["frame"]["cam_t_w2c_mm"])
        eye_m = -R_w2c.T @ t / 1000.0
        ring = meta["sampled"]["ring"]
        assert np.linalg.norm(eye_m[:2] - ring["centre_m"]) <= 2.0e-3 * np.sqrt(2) + 1e-9
        assert np.isclose(eye_m[2], ring["height_m"])


def test_brushing_direction_follows_long_axis():
    """Mitsuba's anisotropy axis is the shading tangent dp/du: +-x (the long side) on the top face."""
    from polar_render.mitsuba.variants import activate

    mi = activate("auto")
    cfg = load_scene(SCENE)
    top = next(p for p in cfg.objects[1].parts if p.name == "plate_top")
    sc = mi.load_dict({"type": "scene", "plate": {"type": "ply", "filename": str(top.mesh)}})
    xy = np.random.default_rng(0).uniform([-55, -45], [55, 45], size=(16, 2))
    ray = mi.Ray3f(mi.Point3f(xy[:, 0], xy[:, 1], np.full(16, 10.0)), mi.Vector3f(0, 0, -1))
    si = sc.ray_intersect(ray)
    s = np.array(si.sh_frame.s).reshape(3, -1)
    assert np.allclose(np.abs(s[0]), 1.0, atol=1e-5) and np.allclose(s[1:], 0.0, atol=1e-5)


def test_ring_light_variants():
    base = load_scene(SCENE).lights["ring"]
    g = {v: ring_geometry({**base, "variant": v}) for v in ("none", "rot90", "scale2")}
    c0 = np.array(base["centre_m"] + [base["height_m"]])
    cen = {v: np.array([p["centre_m"] for p in g[v]["panels"]]) - c0 for v in g}
    for v in g:   # six downward panels on the ring plane
        assert len(cen[v]) == 6 and np.allclose(cen[v][:, 2], 0.0)
        assert all(np.allclose(p["normal"], [0, 0, -1]) for p in g[v]["panels"])
    # rot90: every panel turned 90 degrees about the vertical axis through the ring centre
    rz = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert np.allclose(cen["rot90"], cen["none"] @ rz.T)
    az = np.degrees(np.arctan2(cen["rot90"][:, 1], cen["rot90"][:, 0])) % 60.0
    assert np.allclose(np.minimum(az, 60 - az), 0.0, atol=1e-6)   # flats moved onto the axes (30 -> 0 mod 60)
    # scale2: the fixture doubled in its plane (radius, panel size), radiance range unchanged
    assert np.allclose(cen["scale2"], 2.0 * cen["none"])
    assert g["scale2"]["radius_m"] == 2 * g["none"]["radius_m"]
    assert np.isclose(g["scale2"]["panel_length_m"], 2 * g["none"]["panel_length_m"])
    assert np.isclose(g["scale2"]["panel_width_m"], 2 * g["none"]["panel_width_m"])
    # the CLI override (--light-variant) changes the config and its digest
    cfg = load_scene(SCENE)
    d0 = cfg.digest()
    apply_light_variant(cfg, "scale2")
    assert cfg.lights["ring"]["variant"] == "scale2" and cfg.digest() != d0


def test_light_variant_changes_render(tmp_path):
    kw = dict(scene=SCENE, n=1, res=(48, 36), spp=1, seed=2, progress=False)
    a = samples(render_dir(tmp_path / "none", **kw))[0]
    b = samples(render_dir(tmp_path / "scale2", light_variant="scale2", **kw))[0]
    ra, rb = a["meta"]["sampled"]["ring"], b["meta"]["sampled"]["ring"]
    assert rb["variant"] == "scale2" and np.isclose(rb["radius_m"], 2 * ra["radius_m"])
    assert ra["radiance"] == rb["radiance"]
    assert not np.array_equal(a["stokes"], b["stokes"])
    with pytest.raises(ValueError):
        run(RenderRequest(scene="usb_brick", out=tmp_path / "usb", n=1, light_variant="rot90", progress=False))
