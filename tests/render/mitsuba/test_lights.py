"""Lights from the scene file's keys (polar_render.mitsuba.lights, ``MitsubaScene``).

Ring light: hexagon geometry from ``lights.ring`` (the rot90/scale2 variants are pinned in
tests/render/parts/test_aluminum_plate.py). Spot and constant environment: the cone angles
are structure (set at build), position, aim and intensity per sample. Emitted power reaches
the image linearly: with the environment off, doubling a light's sampled intensity doubles
every pixel (same seed, same paths; only the emitter's value changes).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from polar_render.config.scenes import load_scene
from polar_render.mitsuba.lights import N_PANELS, RING_DEFAULTS, ring_geometry, ring_mesh
from tests.render.mitsuba.scenes import built_scene, scene_inputs

RING = {**RING_DEFAULTS, "radius_m": 0.1, "height_m": 0.3, "centre_m": [0.02, -0.01], "panel_width_m": 0.02,
        "fill": 0.8, "tilt_deg": 20.0, "rotation_deg": 10.0}


def test_ring_panels_sit_on_a_hexagon_from_the_scene_keys():
    g = ring_geometry(RING)
    c0 = np.array(RING["centre_m"] + [RING["height_m"]])
    apothem = RING["radius_m"] * np.cos(np.pi / N_PANELS)
    assert len(g["panels"]) == N_PANELS
    for k, p in enumerate(g["panels"]):
        az = np.radians(RING["rotation_deg"] + 30.0 + 60.0 * k)           # flats at 30 + 60 k deg
        e_r = np.array([np.cos(az), np.sin(az), 0.0])
        assert np.allclose(p["centre_m"], c0 + apothem * e_r)
        n = np.asarray(p["normal"])
        assert np.isclose(np.degrees(np.arccos(-n[2])), RING["tilt_deg"])  # tilted from straight down
        assert n @ e_r < 0                                                 # ... towards the axis
    assert np.isclose(g["panel_length_m"], RING["fill"] * RING["radius_m"])  # hexagon side = circumradius
    assert np.isclose(g["panel_width_m"], RING["panel_width_m"])


def test_ring_mesh_is_the_six_panels_facing_their_normals():
    verts, faces = ring_mesh(RING)
    g = ring_geometry(RING)
    assert verts.shape == (4 * N_PANELS, 3) and faces.shape == (2 * N_PANELS, 3)
    tri = verts[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    for k, p in enumerate(g["panels"]):
        pair = cross[2 * k: 2 * k + 2]
        assert np.allclose(pair / np.linalg.norm(pair, axis=1, keepdims=True), p["normal"])   # emitting side
        assert np.isclose(0.5 * np.linalg.norm(pair, axis=1).sum(), g["panel_length_m"] * g["panel_width_m"])
        assert np.allclose(verts[4 * k: 4 * k + 4].mean(0), p["centre_m"])


def _value(x) -> float:
    """A traversed scalar parameter (a Python float or a width-1 Dr.Jit array) as a float."""
    return float(np.asarray(x, np.float64).ravel()[0])


def _lit_by(mi, cfg, light: str, scale: float):
    """Stokes image of sample 3 with the environment off and ``light``'s value x ``scale``."""
    structure, frame, app = scene_inputs(cfg, 3)
    app = copy.deepcopy(app)
    app["environment"]["radiance"] = 0.0
    if light == "spot":
        app["spot"]["intensity"] *= scale
    else:
        app["ring"]["radiance"] *= scale
    scene = built_scene(mi, cfg, structure, app, stains=False)
    scene.update(frame, app)
    return scene, app, scene.render_stokes(4)


@pytest.mark.parametrize("name,light", [("usb_brick", "spot"), ("aluminum_plate", "ring")])
def test_sampled_light_value_scales_the_image(mi_scene_variant, name, light):
    cfg = load_scene(name)
    _, _, one = _lit_by(mi_scene_variant, cfg, light, 1.0)
    _, _, two = _lit_by(mi_scene_variant, cfg, light, 2.0)
    s0 = one[..., -12:-9]
    assert s0.mean() > 1e-3                                     # the light alone lights the object
    np.testing.assert_allclose(two, 2.0 * one, rtol=1e-5, atol=1e-7)


def test_spot_and_environment_follow_the_scene_keys(mi_scene_variant):
    mi, cfg = mi_scene_variant, load_scene("usb_brick")
    scene, app, _ = _lit_by(mi, cfg, "spot", 1.0)
    p = scene.params
    spot, cone = app["spot"], cfg.lights["spot"]
    assert np.isclose(_value(p["spot.cutoff_angle"]), cone["cutoff_deg"])
    assert np.isclose(_value(p["spot.beam_width"]), cone["beam_deg"])
    assert np.isclose(_value(p["spot.intensity.value"]), spot["intensity"], rtol=1e-6)
    m = np.asarray(p["spot.to_world"].matrix, np.float64).reshape(4, 4)
    assert np.allclose(m[:3, 3], spot["position_m"], atol=1e-6)                        # where it is
    aim = np.subtract(spot["target_m"], spot["position_m"])
    assert np.allclose(m[:3, 2] / np.linalg.norm(m[:3, 2]), aim / np.linalg.norm(aim), atol=1e-6)  # where it points
    assert _value(p["environment.radiance.value"]) == 0.0
    assert not any(k.startswith("ring.") for k in p.keys())     # usb_brick has no ring


def test_ring_only_scene_has_no_spot(mi_scene_variant):
    scene, app, _ = _lit_by(mi_scene_variant, load_scene("aluminum_plate"), "ring", 1.0)
    keys = list(scene.params.keys())
    assert not any(k.startswith("spot.") for k in keys) and "spot" not in app
    assert np.isclose(_value(scene.params["ring.emitter.radiance.value"]),
                      app["ring"]["radiance"], rtol=1e-6)
