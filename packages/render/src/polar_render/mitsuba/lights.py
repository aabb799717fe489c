"""Hexagonal ring light (scene file ``lights.ring``), e.g. the Sequential-PatchCore plate rig.

Six rectangular area emitters (Mitsuba ``rectangle`` + ``area``) form the sides of a regular
hexagon in the horizontal plane ``z = height_m`` (world, metres), centred on
``centre_m = [x, y]`` (the support's origin by default, where the top-down camera of
``layout.mode: topdown`` sits). The hexagon's circumradius is ``radius_m``; each panel
covers ``fill`` of its side (gaps at the corners) and is ``panel_width_m`` wide (radially).
Panels face down (``-z``), tilted towards the axis by ``tilt_deg``; they emit on that side
only, so the camera at the ring's centre is never lit from behind and never sees a panel
directly. With ``rotation_deg = 0`` the hexagon has corners at azimuths 0, 60, ... deg
(world +x = the plate's long axis) and panel centres at 30 + 60 k deg.

Domain-randomization ``variant`` (one per run; the fixture is scene *structure*, built once):

* ``none``: as configured;
* ``rot90``: the fixture turned 90 degrees about the vertical (optical) axis through
  its centre. A hexagon repeats every 60 degrees, so this equals a 30 degree turn: panel
  centres move from 30 + 60 k to 0 + 60 k deg (corners <-> flats swap over the plate's axes);
* ``scale2``: the fixture scaled x2 in its plane about its centre (radius, panel length and
  panel width x2; height unchanged). Radiance (W m^-2 sr^-1) is kept, so each panel has 4x
  the area and emits 4x the power; the irradiance on the plate changes with the geometry
  only (no renormalisation), as it would with a physically larger lamp of the same LEDs.

Per sample only ``radiance`` is drawn (``[lo, hi]``); it is written through ``mi.traverse``.
Keys, bounds and defaults (``RING_DEFAULTS``) are checked by ``polar_render.config.schema.Ring``.
"""
from __future__ import annotations

import numpy as np

from polar_render.config.errors import SceneConfigError
from polar_render.mitsuba.variants import float_array, uint_array

VARIANTS = ("none", "rot90", "scale2")
N_PANELS = 6
RING_DEFAULTS = {"radius_m": 0.08, "height_m": 0.25, "centre_m": [0.0, 0.0], "panel_width_m": 0.015,
                 "fill": 0.9, "tilt_deg": 0.0, "rotation_deg": 0.0, "radiance": [20.0, 30.0], "variant": "none"}


def ring_geometry(ring: dict) -> dict:
    """Effective fixture after the variant: radius, panel size, rotation (deg), and per panel
    the centre (m), unit normal and the Mitsuba ``rectangle`` to_world (4x4)."""
    scale = 2.0 if ring["variant"] == "scale2" else 1.0
    rot = float(ring["rotation_deg"]) + (90.0 if ring["variant"] == "rot90" else 0.0)
    radius = float(ring["radius_m"]) * scale
    side = radius  # a regular hexagon's side equals its circumradius
    half_len = 0.5 * side * float(ring["fill"])
    half_w = 0.5 * float(ring["panel_width_m"]) * scale
    apothem = radius * np.cos(np.pi / N_PANELS)
    tilt = np.radians(float(ring["tilt_deg"]))
    c0 = np.array([float(ring["centre_m"][0]), float(ring["centre_m"][1]), float(ring["height_m"])])
    panels = []
    for k in range(N_PANELS):
        phi = np.radians(rot + 30.0 + 60.0 * k)
        e_r = np.array([np.cos(phi), np.sin(phi), 0.0])
        e_t = np.array([-np.sin(phi), np.cos(phi), 0.0])
        n = -np.cos(tilt) * np.array([0.0, 0.0, 1.0]) - np.sin(tilt) * e_r
        y = np.cross(n, e_t)
        T = np.eye(4)
        T[:3, 0], T[:3, 1], T[:3, 2] = e_t * half_len, y * half_w, n
        T[:3, 3] = c0 + apothem * e_r
        panels.append({"centre_m": T[:3, 3].tolist(), "normal": n.tolist(), "azimuth_deg": float(np.degrees(phi)),
                       "to_world": T})
    return {"variant": ring["variant"], "radius_m": radius, "panel_length_m": 2 * half_len,
            "panel_width_m": 2 * half_w, "rotation_deg": rot, "panels": panels}


def ring_meta(ring: dict) -> dict:
    """JSON-friendly description of the fixture (recorded in meta.json ``sampled.ring``)."""
    g = ring_geometry(ring)
    return {**{k: v for k, v in g.items() if k != "panels"},
            "height_m": float(ring["height_m"]), "centre_m": [float(x) for x in ring["centre_m"]],
            "panel_centres_m": [p["centre_m"] for p in g["panels"]]}


def apply_light_variant(cfg, variant: str | None) -> None:
    """Override ``lights.ring.variant`` of a loaded scene (CLI ``--light-variant``); the
    override is part of ``cfg.raw``, so the config digest (and run.json) record it."""
    if not variant:
        return
    if "ring" not in cfg.lights:
        raise SceneConfigError(f"{cfg.path}: --light-variant needs a lights.ring section")
    if variant not in VARIANTS:
        raise SceneConfigError(f"light variant {variant!r} is not one of {list(VARIANTS)}")
    cfg.lights["ring"]["variant"] = variant
    cfg.raw.setdefault("lights", {}).setdefault("ring", cfg.lights["ring"])["variant"] = variant


def ring_mesh(ring: dict) -> tuple[np.ndarray, np.ndarray]:
    """All six panels as ONE emitting mesh: (24, 3) vertices (m), (12, 3) faces whose
    winding gives each panel's normal. One shape and one emitter on purpose: with six
    separate emitter shapes Mitsuba's emitter list order varied from process to process
    (measured), and with it which panel a given random number samples, so a sample was
    no longer a pure function of (config, seed, i)."""
    corners = np.array([[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]])
    verts, faces = [], []
    for k, p in enumerate(ring_geometry(ring)["panels"]):
        verts.append((corners @ p["to_world"].T)[:, :3])
        faces += [[4 * k, 4 * k + 1, 4 * k + 2], [4 * k, 4 * k + 2, 4 * k + 3]]
    return np.concatenate(verts), np.array(faces, np.int64)


def ring_shape(mi, ring: dict):
    """The ring as one Mitsuba mesh (id ``ring``) with a uniform ``area`` emitter of radiance
    1 (the sampled radiance is written per sample as ``ring.emitter.radiance.value``)."""
    rv, rf = ring_mesh(ring)
    props = mi.Properties()
    props["emitter"] = mi.load_dict({"type": "area", "radiance": {"type": "uniform", "value": 1.0}})
    mesh = mi.Mesh("ring", len(rv), len(rf), props)
    rp = mi.traverse(mesh)
    rp["vertex_positions"] = float_array(mi, rv)
    rp["faces"] = uint_array(mi, rf)
    rp.update()
    return mesh
