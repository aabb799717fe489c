"""The defaults of a scene file (polar_render.config.defaults, the schema's own defaults and
the modules that own a section): a minimal file gets each from its one source."""
from __future__ import annotations

import dataclasses

from polar_render.config.defaults import DEFAULTS
from polar_render.config.scenes import load_scene
from polar_render.layout.embedded import LayoutConfig
from polar_render.physics.dofp import SensorModel

from tests.render.config.conftest import MINIMAL, write_scene_text


def test_defaults_are_filled_from_their_one_source(tmp_path):
    """A minimal file gets every default: layout from LayoutConfig, lights/ground/sensor/render
    from config.DEFAULTS, the ring from lights.RING_DEFAULTS, anomaly keys from the schema
    (equal to what the samplers used to assume), dofp from SensorModel."""
    text = MINIMAL + """\
layout: {instances: [1]}
sensor: {dofp: {enabled: true}}
anomalies:
  classes:
    water_stain: {parts: [plug], radius_mm: 1.0, cell_mm: 8.0}
    extra: {parts: [plug]}
"""
    cfg = load_scene(write_scene_text(tmp_path, text))
    lc = {f.name: f.default for f in dataclasses.fields(LayoutConfig) if f.default is not dataclasses.MISSING}
    assert cfg.layout["mode"] == "drop"
    for k in ("xy_range_mm", "cameras_per_scene", "look_at_jitter_mm", "friction", "settle_max_s", "width", "fx"):
        assert cfg.layout[k] == lc[k], k
    assert list(cfg.layout["elevation_deg"]) == list(lc["elevation_deg"])
    assert cfg.lights["spot"] == DEFAULTS["lights"]["spot"]
    assert cfg.background == DEFAULTS["background"]
    assert cfg.render == {**DEFAULTS["render"], "denoise": "none"}
    assert SensorModel.from_dict({k: v for k, v in cfg.sensor["dofp"].items() if k != "enabled"}) == SensorModel()
    stain = cfg.anomalies["classes"]["water_stain"]
    assert (stain["frequency_per_mm"], stain["amplitude_mm"], stain["gamma"], stain["alpha"],
            stain["roughness_scale"], stain["weight"]) == (0.5, 0.0, 2.0, -0.2, 1.0, 1.0)
    assert cfg.anomalies["classes"]["extra"]["offset_mm"] == [0.0, 0.0, 0.0]
    assert (cfg.anomalies["probability"], cfg.anomalies["count"], cfg.anomalies["mask_supersampling"],
            cfg.anomalies["min_visible_px"], cfg.anomalies["max_view_angle_deg"]) == (0.5, 1, 3, 40, 75.0)
    assert "dent" not in cfg.anomalies["classes"]      # absent classes stay absent
    assert cfg.objects[1].parts[0].material == "default"
    assert cfg.materials["default"] == {"type": "pplastic", "color": [0.0, 1.0], "color_tolerance": 0.0,
                                        "alpha": [0.05, 0.3], "ior": 1.49}
    from polar_render.randomize import sample_material
    import numpy as np

    drawn = sample_material(np.random.default_rng(0), "default", cfg.materials["default"])
    assert 0.05 <= drawn["alpha"] <= 0.3 and drawn["ior"] == 1.49 and len(drawn["color"]) == 3

    ring = load_scene(write_scene_text(tmp_path, text.replace("sensor:", "lights: {ring: {}}\nsensor:"), "ring.yaml"))
    from polar_render.mitsuba.lights import RING_DEFAULTS

    assert ring.lights == {"ring": RING_DEFAULTS}        # a ring-only file gets no spot
