"""Per-sample randomisation (Polar-Ano Table I ranges come from the scene file).

Values come from a loaded scene (validated, defaults filled by ``polar_render.config.schema``), so
nothing is checked here. Every draw for sample ``i`` comes from the ``appearance`` stream of
``(seed, i)`` and the sampler seed from the ``render`` stream (:mod:`polar_render.rng`), so
a sample is a pure function of (scene config, seed, i), whatever order or batch it is
rendered in. Draw order is fixed: materials (instances in BOP order, parts in scene-file
order), spot light, ground, environment, ring light. Units: positions and radii in metres,
angles in degrees, colours linear RGB in [0, 1]. All returned values are plain floats/lists
so they can be stored in ``meta.json`` verbatim.
"""
from __future__ import annotations

import numpy as np

from polar_render import rng as streams
from polar_render.config.scenes import SceneConfig, as_range, is_rgb
from polar_render.mitsuba.lights import ring_meta


def _u(rng: np.random.Generator, value) -> float:
    """One draw of a range ``[lo, hi]`` (uniform) or a fixed number."""
    return float(rng.uniform(*as_range(value)))


def _color(rng, value, tolerance: float = 0.0) -> list[float]:
    """Linear RGB: ``[r, g, b]`` is a nominal colour moved by U(+-tolerance) per channel
    (clipped to [0, 1]); a number or ``[lo, hi]`` draws each channel in that range."""
    if is_rgb(value):
        c = np.asarray(value, np.float64) + rng.uniform(-tolerance, tolerance, size=3)
        return [float(x) for x in np.clip(c, 0.0, 1.0)]
    return [float(x) for x in rng.uniform(*as_range(value), size=3)]


def sample_material(rng: np.random.Generator, name: str, spec: dict) -> dict:
    """Concrete BSDF parameters for one part: {'type', 'color'?, 'alpha'?, 'ior'?, 'conductor'?}
    from a loaded material (every key present: ``SceneConfig.materials``)."""
    t = spec["type"]
    out = {"material": name, "type": t}
    if t == "pplastic":
        out["color"] = _color(rng, spec["color"], spec["color_tolerance"])
        out["alpha"] = _u(rng, spec["alpha"])
        out["ior"] = _u(rng, spec["ior"])
    elif t == "roughconductor":
        out["alpha"] = _u(rng, spec["alpha"])
        out["conductor"] = spec["conductor"]
    elif t == "brushed_conductor":
        out["alpha_u"] = _u(rng, spec["alpha_u"])
        out["alpha_v"] = _u(rng, spec["alpha_v"])
        out["conductor"] = spec["conductor"]
    elif t == "diffuse":
        out["color"] = _color(rng, spec["color"], spec["color_tolerance"])
    return out


def _on_shell(rng, spec: dict, centre: np.ndarray) -> tuple[list[float], dict]:
    r = _u(rng, spec["radius_m"])
    el = np.deg2rad(_u(rng, spec["elevation_deg"]))
    az = np.deg2rad(_u(rng, spec["azimuth_deg"]))
    pos = centre + r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return [float(x) for x in pos], {"radius_m": r, "elevation_deg": float(np.rad2deg(el)),
                                     "azimuth_deg": float(np.rad2deg(az))}


def sample_appearance(cfg: SceneConfig, seed: int, index: int,
                      part_slots: list[tuple[int, int, str, str]], centre_m) -> dict:
    """Sample every appearance parameter of sample ``index``.

    ``part_slots``: (instance index, obj_id, part name, material name) for every rendered
    part, in scene order. ``centre_m``: world position (m) the light is aimed at.
    """
    rng = streams.stream("appearance", seed, index)
    centre = np.asarray(centre_m, dtype=np.float64)
    parts = []
    for inst, obj_id, part, mat in part_slots:
        m = sample_material(rng, mat, cfg.materials[mat])
        parts.append({"instance": inst, "obj_id": obj_id, "part": part, **m})

    spot = None
    if "spot" in cfg.lights:  # a ring-only scene (lights: {ring: ...}) draws no spot values
        spot_cfg = cfg.lights["spot"]
        pos, shell = _on_shell(rng, spot_cfg, centre)
        spot = {"position_m": pos, "target_m": [float(x) for x in centre], **shell,
                "intensity": _u(rng, spot_cfg["intensity"]),
                "cutoff_deg": float(spot_cfg["cutoff_deg"]), "beam_deg": float(spot_cfg["beam_deg"])}

    g = cfg.background.get("ground")   # None: background.ground: null (no ground, no draws)
    ground = None
    if g is not None:
        color0 = _color(rng, g["color"])
        checker = bool(rng.uniform() < float(g["checker_probability"]))
        color1 = _color(rng, g["color"])
        scale = _u(rng, g["checker_scale"])
        alpha = _u(rng, g["alpha"])
        ground = {"color0": color0, "color1": color1 if checker else color0, "checker": checker,
                  "checker_scale": scale, "alpha": alpha, "size_m": float(g["size_m"]), "z_m": float(g["z_m"]),
                  "centre_m": [float(centre[0]), float(centre[1])]}
    env = {"radiance": _u(rng, cfg.background["environment"]["radiance"])}
    out = {"parts": parts}
    if spot is not None:
        out["spot"] = spot
    if "ring" in cfg.lights:  # drawn after everything else: scenes without a ring keep their draws
        ring_cfg = cfg.lights["ring"]
        out["ring"] = {"radiance": _u(rng, ring_cfg["radiance"]), **ring_meta(ring_cfg)}
    render_seed = streams.render_seed(seed, index)
    return {**out, **({"ground": ground} if ground is not None else {}), "environment": env,
            "render_seed": render_seed}
