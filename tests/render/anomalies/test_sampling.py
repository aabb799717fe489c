"""The per-sample loop: the same (seed, i) draws the same anomalies, another i others."""
from __future__ import annotations

import numpy as np

from polar_render.anomalies.sampling import sample_anomalies


def test_same_seed_same_stains():
    from polar_render.config.scenes import load_scene
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


