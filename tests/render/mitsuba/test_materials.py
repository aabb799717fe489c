"""Material types of the scene file -> Mitsuba BSDFs (polar_render.mitsuba.materials), on
every polarized variant.

The reference is physics, not the module: a near-mirror dielectric (``pplastic`` with a
black base, GGX alpha 0.01) reflecting a uniform unpolarized environment must give the
Fresnel reflectances of its IOR, (Rs + Rp) / 2 for S0 and (Rs - Rp) / (Rs + Rp) for DoLP;
at Brewster's angle atan(1.49) ~ 56 deg that DoLP is 1. Tolerances: DoLP within 0.03 and S0
within 8 % (the GGX lobe of alpha 0.01 averages the Fresnel terms over ~1 deg of normals and
its shadowing-masking removes ~1-2 %; Monte Carlo noise of 64 spp over 192 px is < 0.5 %).
"""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.mitsuba.materials import EXT_IOR, bsdf_dict, set_bsdf, structure_key
from tests.render.conftest import dolp, stokes_planes
from tests.render.mitsuba.scenes import fresnel_dielectric, plane_scene

BREWSTER = float(np.degrees(np.arctan(1.49 / EXT_IOR)))
MATERIALS = {   # one of each type the scene schema allows, as randomize.sample_material returns them
    "pplastic": {"type": "pplastic", "color": [0.0, 0.0, 0.0], "alpha": 0.01, "ior": 1.49},
    "roughconductor": {"type": "roughconductor", "conductor": "Al", "alpha": 0.01},
    "brushed_conductor": {"type": "brushed_conductor", "conductor": "Al", "alpha_u": 0.01, "alpha_v": 0.2},
    "diffuse": {"type": "diffuse", "color": [0.5, 0.5, 0.5]},
}


def test_every_schema_material_type_has_a_bsdf():
    from polar_render.config.schema import MATERIAL_TYPES

    assert set(MATERIAL_TYPES) == set(MATERIALS)
    with pytest.raises(ValueError, match="unknown material type"):
        bsdf_dict({"type": "velvet"})


def test_each_material_builds_its_bsdf(mi_variant):
    mi = mi_variant
    flags = {name: mi.load_dict(bsdf_dict(m)).flags() for name, m in MATERIALS.items()}
    F = mi.BSDFFlags
    assert all(flags[n] & F.GlossyReflection for n in ("pplastic", "roughconductor", "brushed_conductor"))
    assert flags["pplastic"] & F.DiffuseReflection          # polarizing diffuse base under the lobe
    assert flags["brushed_conductor"] & F.Anisotropic and not flags["roughconductor"] & F.Anisotropic
    assert flags["diffuse"] & F.DiffuseReflection and not flags["diffuse"] & F.GlossyReflection
    assert structure_key(MATERIALS["roughconductor"]) != structure_key({**MATERIALS["roughconductor"], "conductor": "Cr"})
    assert structure_key(MATERIALS["pplastic"]) == structure_key({**MATERIALS["pplastic"], "alpha": 0.3})


def _stokes(mi, material: dict, incidence_deg: float, seed: int = 1) -> np.ndarray:
    return stokes_planes(mi.render(plane_scene(mi, bsdf_dict(material), incidence_deg), seed=seed))


@pytest.mark.parametrize("incidence", [30.0, BREWSTER, 75.0])
def test_dielectric_reflection_follows_fresnel(mi_variant, incidence):
    s = _stokes(mi_variant, MATERIALS["pplastic"], incidence)
    rs, rp = fresnel_dielectric(np.cos(np.radians(incidence)), 1.49 / EXT_IOR)
    assert abs(dolp(s).mean() - (rs - rp) / (rs + rp)) < 0.03
    assert s[0].mean() == pytest.approx((rs + rp) / 2, rel=0.08)


def test_dielectric_polarizes_diffuse_and_conductor_do_not(mi_variant):
    """At Brewster's angle the dielectric's reflection is almost fully polarized; a Lambertian
    surface depolarizes (DoLP 0); aluminium reflects ~90 % of the light, barely polarized."""
    mi = mi_variant
    s = {n: _stokes(mi, MATERIALS[n], BREWSTER) for n in ("pplastic", "diffuse", "roughconductor")}
    assert dolp(s["pplastic"]).mean() > 0.95
    assert dolp(s["diffuse"]).max() < 0.01
    assert dolp(s["roughconductor"]).mean() < 0.15
    assert s["roughconductor"][0].mean() > 0.8 > 10 * s["pplastic"][0].mean()
    assert s["diffuse"][0].mean() == pytest.approx(0.5, rel=0.05)     # albedo x uniform radiance 1


def test_brushed_conductor_is_rough_across_its_grooves(mi_variant):
    """``alpha_u`` acts along the shading tangent (the rectangle's u, world x: the grooves),
    ``alpha_v`` across. A small light mirrored into a camera in the y-z plane (plane of
    incidence across the grooves): roughness across the grooves spreads the highlight in
    that plane and lowers it more than the same roughness along them. Equal alphas are
    the isotropic ``roughconductor``."""
    mi = mi_variant
    from tests.render.mitsuba.scenes import camera

    def highlight(mat):
        sc = mi.load_dict({"type": "scene", "integrator": {"type": "stokes", "integrator": {"type": "path"}},
                           "camera": camera(mi, [0.0, -1.0, 1.0], [0.0, 0.0, 0.0], (8, 8), 64, 2.0),
                           "plane": {"type": "rectangle", "bsdf": bsdf_dict(mat)},
                           "light": {"type": "sphere", "center": [0.0, 1.0, 1.0], "radius": 0.05,
                                     "emitter": {"type": "area", "radiance": {"type": "uniform", "value": 10.0}}}})
        return float(stokes_planes(mi.render(sc, seed=2))[0].mean())

    brushed = MATERIALS["brushed_conductor"]
    sharp = highlight({**brushed, "alpha_u": 0.01, "alpha_v": 0.01})
    across = highlight({**brushed, "alpha_u": 0.01, "alpha_v": 0.2})
    along = highlight({**brushed, "alpha_u": 0.2, "alpha_v": 0.01})
    assert across < 0.85 * along and along < 0.85 * sharp
    iso = highlight({**MATERIALS["roughconductor"], "alpha": 0.01})
    assert iso == pytest.approx(sharp, rel=1e-4)


def test_set_bsdf_equals_building_with_the_new_values(mi_variant):
    """Writing a sample's values through mi.traverse gives the scene a fresh build would."""
    mi = mi_variant

    def encode_rgb(color):   # what an rgb texture stores in this variant, read from Mitsuba itself
        return mi.traverse(mi.load_dict({"type": "rgb", "value": list(color)}))["value"]

    for name, new in (("pplastic", {"color": [0.3, 0.1, 0.05], "alpha": 0.08, "ior": 1.7}),
                      ("roughconductor", {"alpha": 0.2}),
                      ("brushed_conductor", {"alpha_u": 0.05, "alpha_v": 0.1}),
                      ("diffuse", {"color": [0.2, 0.6, 0.3]})):
        old, target = MATERIALS[name], {**MATERIALS[name], **new}
        scene = plane_scene(mi, bsdf_dict(old), 40.0, res=(8, 6), spp=16)
        params = mi.traverse(scene)
        set_bsdf(params, "plane.bsdf", target, encode_rgb, mi.Float)
        params.update()
        updated = np.array(mi.render(scene, seed=5))
        fresh = np.array(mi.render(plane_scene(mi, bsdf_dict(target), 40.0, res=(8, 6), spp=16), seed=5))
        before = np.array(mi.render(plane_scene(mi, bsdf_dict(old), 40.0, res=(8, 6), spp=16), seed=5))
        assert not np.allclose(before, fresh, rtol=1e-3), name      # the new values matter
        np.testing.assert_allclose(updated, fresh, rtol=1e-5, atol=1e-7, err_msg=name)
