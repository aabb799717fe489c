"""Inspection-station scenes: framing, nominal product, randomization strength, visible
anomalies only, per-instance visibility, independent noise streams."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from polar_render.config.scenes import SceneConfigError, load_scene, write_scene_variant
from polar_render.config.schema import layout_from_dict
from polar_render.layout.embedded import sample_scene
from polar_render.run.manifest import read_manifest
from polar_render.run.plan import object_models_mm
from polar_render.randomize import sample_appearance

from tests.render.conftest import render_dir

SLOTS = [(1, 1, "brick_top", "smooth_plastic"), (1, 1, "brick_bottom", "rough_plastic"), (1, 1, "plug", "metal")]


@pytest.fixture(scope="module")
def station_render(tmp_path_factory):
    """8 station samples, all drawn anomalous, 320x240 at 4 spp (geometry and masks matter here;
    the scene's ldsampler renders a power of 4 per pixel)."""
    tmp = tmp_path_factory.mktemp("station")
    scene = write_scene_variant(tmp / "scene.yaml", "usb_brick_station", dotted={"anomalies.probability": 1.0})
    return render_dir(tmp / "out", scene=scene, n=8, res=(320, 240), spp=4, seed=3)


def _metas(run):
    return [json.loads(p.read_text()) for p in sorted(run.glob("samples/*/meta.json"))]


def test_views_frame_the_part():
    cfg = load_scene("usb_brick_station")
    lcfg = layout_from_dict(cfg.layout)
    models = object_models_mm(cfg, lcfg.instances)
    objects, cameras = sample_scene(models, lcfg, np.random.default_rng(0))
    assert len(cameras) == len(cfg.layout["views"]) == 2
    (oid, T), = objects
    v = np.asarray(models[oid].vertices) * 1e-3 @ T[:3, :3].T + T[:3, 3]
    assert v[:, 2].min() == pytest.approx(0.0, abs=1e-9)          # resting on the fixture
    K = np.array([[lcfg.fx, 0, (lcfg.width - 1) / 2], [0, lcfg.fy, (lcfg.height - 1) / 2], [0, 0, 1]])
    for R, t in cameras:
        pc = v @ R.T * 1000.0 + t
        uv = pc[:, :2] / pc[:, 2:3] * [K[0, 0], K[1, 1]] + K[:2, 2]
        ext = (uv.max(0) - uv.min(0)).max() / min(lcfg.width, lcfg.height)
        assert ext == pytest.approx(lcfg.fill[0], rel=0.12)
        assert uv.min() > 0 and uv[:, 0].max() < lcfg.width and uv[:, 1].max() < lcfg.height


def test_top_view_looks_straight_down_with_x_to_the_right():
    cfg = load_scene("usb_brick_station")
    lcfg = layout_from_dict({**cfg.layout, "camera_angle_deg": 0.0, "yaw_deg": 0.0})
    _, cameras = sample_scene(object_models_mm(cfg, [1]), lcfg, np.random.default_rng(1))
    R = cameras[0][0]
    assert np.allclose(R[2], [0, 0, -1], atol=1e-9) and np.allclose(R[0], [1, 0, 0], atol=1e-9)


def test_station_mode_refuses_bad_views():
    with pytest.raises(ValueError, match="views"):
        layout_from_dict({"mode": "station", "instances": [1]})
    with pytest.raises(ValueError, match="elevation_deg"):
        layout_from_dict({"mode": "station", "instances": [1], "views": {"top": {"elevation_deg": 120}}})
    with pytest.raises(ValueError, match="one product"):
        layout_from_dict({"mode": "station", "instances": [1, 1], "views": {"top": {"elevation_deg": 90}}})


def test_nominal_product_varies_within_tolerance():
    cfg = load_scene("usb_brick_station")
    cols = np.array([sample_appearance(cfg, 0, i, SLOTS, [0, 0, 0])["parts"][0]["color"] for i in range(50)])
    nominal = np.array(cfg.materials["smooth_plastic"]["color"])
    tol = cfg.materials["smooth_plastic"]["color_tolerance"]
    assert np.all(np.abs(cols - nominal) <= tol + 1e-12) and cols.std(0).min() > 0


@pytest.mark.parametrize("strength", [0.0, 0.5, 3.0])
def test_randomization_strength_scales_every_spread(tmp_path, strength):
    full = load_scene("usb_brick_station")
    cfg = load_scene(write_scene_variant(tmp_path / "s.yaml", "usb_brick_station", randomization_strength=strength))
    draws = [sample_appearance(cfg, 0, i, SLOTS, [0, 0, 0]) for i in range(40)]
    alpha = np.array([d["parts"][1]["alpha"] for d in draws])
    rad = np.array([d["ring"]["radiance"] for d in draws])
    lo, hi = full.materials["rough_plastic"]["alpha"]
    assert alpha.max() - alpha.min() <= strength * (hi - lo) + 1e-12
    assert np.all(np.abs(alpha - (lo + hi) / 2) <= strength * (hi - lo) / 2 + 1e-12)
    assert rad.max() - rad.min() <= strength * 1.0 + 1e-9
    assert cfg.layout["yaw_deg"] == pytest.approx(strength * full.layout["yaw_deg"])
    if strength > 1:   # widened beyond the file's own spread
        assert alpha.max() - alpha.min() > hi - lo
    assert cfg.raw["randomization_strength"] == strength       # written once, applied once at load
    again = load_scene(write_scene_variant(tmp_path / "t.yaml", cfg.path))
    assert again.materials["rough_plastic"]["alpha"] == cfg.materials["rough_plastic"]["alpha"]


def test_bad_strength_and_colour_are_refused(tmp_path):
    with pytest.raises(SceneConfigError, match="randomization_strength"):
        load_scene(write_scene_variant(tmp_path / "a.yaml", "usb_brick_station", randomization_strength=11))
    with pytest.raises(SceneConfigError, match="materials.smooth_plastic.color"):
        load_scene(write_scene_variant(tmp_path / "b.yaml", "usb_brick_station",
                                       dotted={"materials.smooth_plastic.color": [0.5, 1.5, 0.2]}))


def test_labelled_instances_are_visible(station_render):
    """Every labelled instance has >= min_visible_px pixels (or is flagged below it), lies on
    the part, and every dent/bump/scratch centre is on a surface the camera sees."""
    min_px = load_scene("usb_brick_station").anomalies["min_visible_px"]
    metas = _metas(station_render)
    labelled = 0
    for m in metas:
        d = station_render / "samples" / f"{m['index']:06d}"
        amask = cv2.imread(str(d / "anomaly_mask.png"), cv2.IMREAD_UNCHANGED)
        depth = cv2.imread(str(d / "depth.tiff"), cv2.IMREAD_UNCHANGED)
        for a in m["anomalies"]:
            labelled += 1
            assert a["visible_px"] == int((amask == a["id"]).sum())
            assert a["below_min_visible"] == (a["visible_px"] < min_px)
            assert a["contrast"] >= 0 and a["contrast_measure"]
        for e in m["anomaly_events"]:
            if e["class"] not in ("dent", "bump", "scratch"):
                continue
            obj = m["frame"]["objects"][0]
            pc = np.asarray(obj["cam_R_m2c"]) @ e["centre_mm"] + np.asarray(obj["cam_t_m2c_mm"])
            K = np.asarray(m["frame"]["cam_K"])
            u, v = np.rint((K @ (pc / pc[2]))[:2]).astype(int)
            # the surface seen through the centre's pixel is the centre itself, moved by the
            # defect's own depth at most (not a face in front of it, not a hidden face)
            assert abs(depth[v, u] * 1000.0 - pc[2]) < abs(e["height_mm"]) + 0.5
        assert len(m["anomaly_events"]) >= len({(a["class"], a["instance"]) for a in m["anomalies"]})
    assert labelled >= 4


def test_dropped_anomalies_are_recorded_not_labelled(station_render):
    for m in _metas(station_render):
        labelled = {a["class"] for a in m["anomalies"]}
        for d in m["anomalies_dropped"]:
            assert d["reason"] and (d["class"] not in labelled or d["class"] == "water_stain")


def test_independent_noise_stream(station_render, tmp_path):
    """--noise-seed: same samples (draws, masks, exact passes), other Monte Carlo noise."""
    scene = read_manifest(station_render)["scene_file"]   # stored relative to OUT
    other = render_dir(tmp_path / "n1", scene=scene, n=2, res=(320, 240), spp=4, seed=3, noise_seed=1)
    for i in range(2):
        a, b = (r / "samples" / f"{i:06d}" for r in (station_render, other))
        ma, mb = (json.loads((x / "meta.json").read_text()) for x in (a, b))
        assert ma["anomaly_events"] == mb["anomaly_events"] and mb["noise_seed"] == 1
        for f in ("anomaly_mask.png", "object_mask.png", "normals.tiff", "depth.tiff"):
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
        assert (a / "stokes.tiff").read_bytes() != (b / "stokes.tiff").read_bytes()


def test_extra_offset_is_validated(tmp_path):
    with pytest.raises(SceneConfigError, match="extra.offset_mm"):
        load_scene(write_scene_variant(tmp_path / "x.yaml", "usb_brick_station",
                                       dotted={"anomalies.classes.extra.offset_mm": [1.0, 2.0]}))
