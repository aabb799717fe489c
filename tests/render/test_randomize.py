"""polar_render.randomize: per-sample appearance draws from the scene file's ranges."""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.config.scenes import as_range, load_scene, write_scene_variant
from polar_render.randomize import sample_appearance

SLOTS = [(1, 1, "brick_top", "smooth_plastic"), (1, 1, "brick_bottom", "rough_plastic"), (1, 1, "plug", "metal")]
CENTRE = [0.01, -0.02, 0.005]
N = 300


def _draws(cfg, seed=2, n=N, slots=SLOTS):
    return [sample_appearance(cfg, seed, i, slots, CENTRE) for i in range(n)]


def _within(x, value, what):
    lo, hi = as_range(value)
    assert lo <= x <= hi, f"{what}: {x} outside [{lo}, {hi}]"


def test_ranges_of_the_scene_file_are_respected_and_covered():
    cfg = load_scene("usb_brick")
    draws = _draws(cfg)
    mats, spot, g = cfg.materials, cfg.lights["spot"], cfg.background["ground"]
    for a in draws:
        top, bottom, plug = a["parts"]
        assert [p["part"] for p in a["parts"]] == ["brick_top", "brick_bottom", "plug"]
        _within(top["alpha"], mats["smooth_plastic"]["alpha"], "smooth alpha")
        _within(bottom["alpha"], mats["rough_plastic"]["alpha"], "rough alpha")
        _within(plug["alpha"], mats["metal"]["alpha"], "metal alpha")
        assert plug["conductor"] == "Al" and top["ior"] == 1.49
        for c in top["color"] + bottom["color"] + a["ground"]["color0"] + a["ground"]["color1"]:
            _within(c, [0.0, 1.0], "colour")
        s = a["spot"]
        for key in ("radius_m", "elevation_deg", "intensity"):
            _within(s[key], spot[key], f"spot {key}")
        assert np.linalg.norm(np.subtract(s["position_m"], s["target_m"])) == pytest.approx(s["radius_m"])
        assert s["target_m"] == pytest.approx(CENTRE)
        _within(a["ground"]["checker_scale"], g["checker_scale"], "checker scale")
        _within(a["ground"]["alpha"], g["alpha"], "ground alpha")
        _within(a["environment"]["radiance"], cfg.background["environment"]["radiance"], "environment")
        assert (a["ground"]["color1"] == a["ground"]["color0"]) != a["ground"]["checker"]
    # the draws fill their ranges (not stuck at one end): >= 90 % of each width covered
    for values, rng_ in (([a["parts"][1]["alpha"] for a in draws], mats["rough_plastic"]["alpha"]),
                         ([a["spot"]["intensity"] for a in draws], spot["intensity"]),
                         ([a["environment"]["radiance"] for a in draws], cfg.background["environment"]["radiance"])):
        lo, hi = as_range(rng_)
        assert max(values) - min(values) >= 0.9 * (hi - lo)
    checker = np.mean([a["ground"]["checker"] for a in draws])
    assert abs(checker - g["checker_probability"]) < 0.1


def test_station_tolerances_are_narrow():
    cfg = load_scene("usb_brick_station")
    draws = _draws(cfg)
    nominal = np.asarray(cfg.materials["smooth_plastic"]["color"])
    tol = cfg.materials["smooth_plastic"]["color_tolerance"]
    colours = np.array([a["parts"][0]["color"] for a in draws])
    assert np.abs(colours - nominal).max() <= tol + 1e-12
    assert np.abs(colours - nominal).max() > 0.8 * tol           # the tolerance is used, not ignored
    alphas = [a["parts"][0]["alpha"] for a in draws]
    lo, hi = as_range(cfg.materials["smooth_plastic"]["alpha"])
    assert lo <= min(alphas) and max(alphas) <= hi and hi - lo <= 0.005
    ring = [a["ring"]["radiance"] for a in draws]
    _within(min(ring), cfg.lights["ring"]["radiance"], "ring radiance")
    _within(max(ring), cfg.lights["ring"]["radiance"], "ring radiance")
    assert "spot" not in draws[0]                                # a ring-only scene draws no spot


@pytest.mark.parametrize("strength", [0.0, 0.5, 2.0])
def test_strength_scales_every_spread_about_its_middle(tmp_path, strength):
    """Strength s maps every draw v of strength 1 to mid + s (v - mid): same random numbers,
    spreads scaled (ranges here stay inside their schema bounds at s = 2)."""
    base = load_scene("usb_brick_station")
    scaled = load_scene(write_scene_variant(tmp_path / "s.yaml", "usb_brick_station", randomization_strength=strength))
    for a, b in zip(_draws(base, n=40), _draws(scaled, n=40)):
        for pa, pb in zip(a["parts"], b["parts"]):
            lo, hi = as_range(base.materials[pa["material"]]["alpha"])
            mid = (lo + hi) / 2
            assert pb["alpha"] == pytest.approx(mid + strength * (pa["alpha"] - mid), abs=1e-12)
            if "color" in pa:
                nominal = np.asarray(base.materials[pa["material"]]["color"])
                np.testing.assert_allclose(pb["color"], nominal + strength * (np.asarray(pa["color"]) - nominal),
                                           atol=1e-12)
        lo, hi = as_range(base.lights["ring"]["radiance"])
        mid = (lo + hi) / 2
        assert b["ring"]["radiance"] == pytest.approx(mid + strength * (a["ring"]["radiance"] - mid), abs=1e-9)
        lo, hi = as_range(base.background["environment"]["radiance"])
        mid = (lo + hi) / 2
        assert b["environment"]["radiance"] == pytest.approx(
            mid + strength * (a["environment"]["radiance"] - mid), abs=1e-12)
        assert b["render_seed"] == a["render_seed"]               # strength never moves the sampler seed


def test_deterministic_per_seed_and_index():
    cfg = load_scene("usb_brick")
    batch = _draws(cfg, seed=9, n=6)
    alone = sample_appearance(cfg, 9, 4, SLOTS, CENTRE)            # no earlier draws in this call
    assert alone == batch[4]
    assert [sample_appearance(cfg, 9, i, SLOTS, CENTRE) for i in (5, 3)] == [batch[5], batch[3]]
    other = sample_appearance(cfg, 10, 4, SLOTS, CENTRE)
    assert other["parts"] != alone["parts"] and other["render_seed"] != alone["render_seed"]
    assert len({a["render_seed"] for a in batch}) == len(batch)
    assert len({a["spot"]["intensity"] for a in batch}) == len(batch)


def test_draw_order_parts_then_lights():
    """Parts draw first, in slot order: a scene with one more part keeps the first parts'
    values (the draws after the parts move; the sampler seed, its own stream, does not)."""
    cfg = load_scene("usb_brick")
    short = sample_appearance(cfg, 1, 0, SLOTS[:2], CENTRE)
    full = sample_appearance(cfg, 1, 0, SLOTS, CENTRE)
    assert full["parts"][:2] == short["parts"]
    assert full["spot"] != short["spot"]
    assert full["render_seed"] == short["render_seed"]
