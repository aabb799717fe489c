"""``polar_checkerboard`` (polar_render.mitsuba.textures) on every polarized variant.

The checker scale is a per-sample value written into an existing texture object: the same
scene renders a different pattern after ``set_scale`` without being rebuilt, the same value
renders the same image, and (JIT variants) the second value compiles no new kernel. Images
are the exact ``albedo`` AOV (one ray per pixel centre), so equality is exact.
"""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.mitsuba.textures import register_textures
from tests.render.mitsuba.scenes import camera

RES = (48, 8)


def _scene(mi):
    """A diffuse 2 m square (uv [0, 1]^2) with the checkerboard, seen straight from above
    through a camera whose 48 px wide view spans uv 0.05..0.95 along u."""
    register_textures(mi)
    tex = mi.load_dict({"type": "polar_checkerboard"})
    scene = mi.load_dict({"type": "scene",
                          "camera": camera(mi, [0.0, 0.0, 2.0], [0.0, 0.0, 0.0], RES, 1,
                                           float(np.degrees(2 * np.arctan(0.9 / 2.0))), exact=True),
                          "plane": {"type": "rectangle", "bsdf": {"type": "diffuse", "reflectance": tex}}})
    return scene, tex, mi.load_dict({"type": "aov", "aovs": "alb:albedo"})


def _albedo(mi, scene, integrator) -> np.ndarray:
    return np.array(mi.render(scene, integrator=integrator, spp=1), np.float64).mean(-1)


def _runs(row: np.ndarray) -> int:
    """Number of constant-colour runs along one image row."""
    return 1 + int(np.count_nonzero(np.abs(np.diff(row)) > 1e-6))


@pytest.mark.parametrize("a,b", [(2.0, 5.0), (7.0, 3.0)])
def test_scale_changes_the_pattern_without_rebuilding(mi_variant, a, b):
    mi = mi_variant
    scene, tex, aov = _scene(mi)
    tex.set_scale(a)
    img_a = _albedo(mi, scene, aov)
    tex.set_scale(b)
    img_b = _albedo(mi, scene, aov)
    tex.set_scale(a)
    again = _albedo(mi, scene, aov)
    assert np.array_equal(img_a, again)               # same value -> identical image, no memory of b
    assert not np.array_equal(img_a, img_b)
    lo, hi = np.unique(np.round(img_a, 6))[[0, -1]]
    assert len(np.unique(np.round(img_a, 6))) == 2    # exactly the two checker colours
    assert hi / lo == pytest.approx(2.0, rel=1e-3)     # colour0 0.4 vs colour1 0.2 (grey)
    # colours alternate at every half unit of u * scale; the view spans 0.9 of u: ~1.8 s runs
    for s, img in ((a, img_a), (b, img_b)):
        assert abs(_runs(img[RES[1] // 2]) - 1.8 * s) <= 1.5, (s, _runs(img[RES[1] // 2]))


def test_scale_change_compiles_no_kernel(mi_variant):
    mi = mi_variant
    if mi.variant().startswith("scalar"):
        pytest.skip("scalar variants compile no kernels")
    import drjit as dr

    scene, tex, aov = _scene(mi)
    tex.set_scale(2.0)
    _albedo(mi, scene, aov)
    flag = dr.flag(dr.JitFlag.KernelHistory)
    dr.set_flag(dr.JitFlag.KernelHistory, True)
    try:
        dr.kernel_history()                       # drain
        _albedo(mi, scene, aov)
        first = {e["hash"] for e in dr.kernel_history() if e.get("type") == dr.KernelType.JIT}
        tex.set_scale(9.0)
        _albedo(mi, scene, aov)
        second = {e["hash"] for e in dr.kernel_history() if e.get("type") == dr.KernelType.JIT}
    finally:
        dr.set_flag(dr.JitFlag.KernelHistory, flag)
    assert first and second <= first, second - first
