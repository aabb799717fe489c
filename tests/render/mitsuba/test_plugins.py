"""The water-stain textures (``polar_render.mitsuba.plugins``) on every polarized variant.

A 2 x 2 quad at z = 0 with a diffuse BSDF whose reflectance is the ``stain_reflectance``
texture, seen from above by an orthographic camera under a uniform environment of radiance
1 (path depth 2): a pixel's S0 is its albedo (Monte Carlo only through MIS, 64 spp).
The quad's world coordinates are the stain field's model coordinates (identity transform;
``*_mm`` values below are then in metres). Base albedo 0.5; one stain centred at the
origin, radius r = 0.6, rim brightening ``alpha * (d / r) ** gamma`` (Algorithm 1), zero
Perlin amplitude: inside the disk S0 = 0.5 + 0.4 (d / 0.6), outside 0.5.
"""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.anomalies.stain import NOISE_ATTRIBUTE, StainParams
from polar_render.mitsuba.plugins import register_plugins
from polar_render.mitsuba.variants import float_array, uint_array
from tests.render.conftest import stokes_planes

RES = 40
STAIN = dict(radius_mm=0.6, cell_mm=4.0, frequency_per_mm=1.0, amplitude_mm=0.0, gamma=1.0, alpha=0.4,
             roughness_scale=1.0, noise_offset=(0.0, 0.0, 0.0), grid_origin_mm=np.array([-2.0, -2.0, -2.0]),
             grid_dims=(1, 1, 1), centres_mm=np.zeros((1, 3)))


def _quad(mi):
    mesh = mi.Mesh("quad", 4, 2)
    params = mi.traverse(mesh)
    params["vertex_positions"] = float_array(mi, [[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]])
    params["faces"] = uint_array(mi, [[0, 1, 2], [0, 2, 3]])
    params.update()
    mesh.add_attribute(NOISE_ATTRIBUTE, 1, float_array(mi, np.zeros(4)))
    return mesh


def _render(mi, stain: StainParams | None) -> np.ndarray:
    register_plugins(mi)
    field = register_plugins.StainField()
    field.set(stain, np.eye(4))
    tex = mi.load_dict({"type": "stain_reflectance"})
    tex.field = field
    quad = _quad(mi)
    quad.set_bsdf(mi.load_dict({"type": "diffuse", "reflectance": tex}))
    fmt = "luminance" if "mono" in mi.variant() else "rgb"
    scene = mi.load_dict({
        "type": "scene", "integrator": {"type": "stokes", "integrator": {"type": "path", "max_depth": 2}},
        "sensor": {"type": "orthographic", "film": {"type": "hdrfilm", "width": RES, "height": RES,
                                                     "pixel_format": fmt, "rfilter": {"type": "box"}},
                   "sampler": {"type": "independent", "sample_count": 64},
                   "to_world": mi.ScalarTransform4f().look_at(origin=[0, 0, 2], target=[0, 0, 0], up=[0, 1, 0])},
        "env": {"type": "constant", "radiance": {"type": "rgb", "value": [1.0, 1.0, 1.0]}},
        "quad": quad})
    return stokes_planes(mi.render(scene, seed=1))[0]


def _radius() -> np.ndarray:
    c = (np.arange(RES) + 0.5) / RES * 2 - 1
    return np.hypot(*np.meshgrid(c, c))


def test_stain_brightens_its_rim_and_nothing_else(mi_scene_variant):
    mi = mi_scene_variant
    off = _render(mi, None)
    on = _render(mi, StainParams(**STAIN))
    r = _radius()
    assert abs(off.mean() - 0.5) < 0.02                                   # disabled field: base albedo
    outside, rim, centre = r > 0.7, (r > 0.45) & (r < 0.55), r < 0.1
    assert abs(on[outside].mean() - off[outside].mean()) < 0.01           # untouched outside the disk
    assert on[rim].mean() == pytest.approx(0.5 + 0.4 * r[rim].mean() / 0.6, abs=0.03)
    assert on[centre].mean() == pytest.approx(0.5 + 0.4 * r[centre].mean() / 0.6, abs=0.03)
