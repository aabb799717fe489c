"""Scalar / LLVM parity: the same tiny polarized scene on ``scalar_spectral_polarized`` and
``llvm_ad_spectral_polarized`` (the two CPU variants ``variants.choose_variant`` falls back
between) must agree on everything that is not Monte Carlo noise.

Scene (tests/render/mitsuba/scenes.py ``sphere_scene``): a polarizing plastic sphere
(pplastic, IOR 1.49, GGX alpha 0.15, dark base) on a diffuse ground, a point light and a dim
uniform environment; 32x24 px; direct lighting only (max_depth 2: no caustic fireflies).

* Exact pass (one unjittered ray per pixel centre; depth, shading normal, position): the
  same rays hit the same surfaces, so values agree to float32 rounding of two intersection
  codes: 1e-4 (measured <= 3e-6). Hit / miss and sphere / ground regions must be identical.
* Stokes pass, 256 spp, different random sequences per variant: region means of S0 within
  4 % relative (measured spread over seeds: sphere ~1.5 %, ground ~0.6 %, background 0.1 %),
  and the sphere's mean DoLP (Fresnel reflection of the environment and the light, ~0.16)
  within 0.015 absolute (measured <= 0.003). A variant that drops polarization, converts
  spectra to RGB differently or mis-weights a light fails by far more.
"""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.mitsuba.materials import bsdf_dict
from tests.render.conftest import dolp, mitsuba_variant, stokes_planes, variant_skip_reason
from tests.render.mitsuba.scenes import EXACT_AOVS, sphere_scene

VARIANTS = ("scalar_spectral_polarized", "llvm_ad_spectral_polarized")
SPHERE = {"type": "pplastic", "color": [0.05, 0.05, 0.05], "alpha": 0.15, "ior": 1.49}
SPP = 256


def _passes(variant: str) -> tuple[np.ndarray, np.ndarray]:
    """(exact AOVs (H, W, 7): depth, normal, position; Stokes planes (4, H, W))."""
    with mitsuba_variant(variant) as mi:
        aov = mi.load_dict({"type": "aov", "aovs": EXACT_AOVS})
        exact = np.array(mi.render(sphere_scene(mi, bsdf_dict(SPHERE), exact=True), integrator=aov, spp=1))
        stokes = stokes_planes(mi.render(sphere_scene(mi, bsdf_dict(SPHERE), spp=SPP), seed=3))
    return exact, stokes


def _regions(exact: np.ndarray) -> dict[str, np.ndarray]:
    hit = exact[..., 0] > 0
    sphere = hit & (np.abs(np.linalg.norm(exact[..., 4:7] - [0.0, 0.0, 1.0], axis=-1) - 1.0) < 1e-3)
    return {"sphere": sphere, "ground": hit & ~sphere, "background": ~hit}


@pytest.fixture(scope="module")
def both():
    for v in VARIANTS:
        if variant_skip_reason(v):
            pytest.skip(variant_skip_reason(v))
    return {v: _passes(v) for v in VARIANTS}


def test_exact_pass_agrees(both):
    (ea, _), (eb, _) = both.values()
    ra, rb = _regions(ea), _regions(eb)
    for name in ra:
        assert np.array_equal(ra[name], rb[name]), name
        assert ra[name].sum() >= 40, name                  # every region is really in view
    np.testing.assert_allclose(ea, eb, atol=1e-4, rtol=0)


def test_stokes_statistics_agree(both):
    (ea, sa), (_, sb) = both.values()
    regions = _regions(ea)
    for name, m in regions.items():
        a, b = sa[0][m].mean(), sb[0][m].mean()
        assert a > 0.01 and a == pytest.approx(b, rel=0.04), (name, a, b)
    sphere = regions["sphere"]
    da, db = dolp(sa)[sphere].mean(), dolp(sb)[sphere].mean()
    assert 0.05 < da < 0.5 and abs(da - db) < 0.015, (da, db)
    assert dolp(sa)[regions["ground"]].mean() < 0.02 > dolp(sb)[regions["ground"]].mean()   # diffuse ground


def test_product_render_agrees_across_variants(tmp_path):
    """The whole product path (``polar_render.render``: layout, MitsubaScene with water stains
    and geometric anomalies, exact AOV pass, masks) on scalar and llvm: masks identical, depth
    and normals equal to float32 rounding, the sampled appearance and anomalies identical
    (they do not depend on the variant). Monte Carlo outputs are not compared here."""
    import polar_render

    for v in VARIANTS:
        if variant_skip_reason(v):
            pytest.skip(variant_skip_reason(v))
    runs = {}
    for v in VARIANTS:
        out = tmp_path / v
        s = polar_render.render("usb_brick", out, n=2, seed=3, spp=1, res=(64, 48), variant=v, progress=False)
        assert not s.failed, s.failed
        runs[v] = [polar_render.load_sample(out / "samples" / f"{i:06d}") for i in range(2)]
    for a, b in zip(*runs.values()):
        for key in ("object_mask", "part_mask", "anomaly_mask"):
            assert np.array_equal(a[key], b[key]), key
        for key, tol in (("depth", 1e-4), ("normals", 1e-3)):
            assert np.nanmax(np.abs(a[key].astype(np.float64) - b[key].astype(np.float64))) <= tol, key
        assert a["meta"]["anomalies"] == b["meta"]["anomalies"]
        assert a["meta"]["sampled"] == b["meta"]["sampled"]
        assert a["meta"]["anomaly_events"] == b["meta"]["anomaly_events"]
