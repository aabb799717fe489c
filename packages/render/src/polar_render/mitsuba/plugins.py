"""Mitsuba texture plugins of polar_render: the water-stain textures (Algorithm 1 in Dr.Jit).

``stain_reflectance`` adds ``d_hat**gamma * alpha`` to its base reflectance inside a stain
(clamped to [0, 1]); ``stain_roughness`` scales its roughness by ``roughness_scale`` there.
Both read one :class:`StainField` per part: the stain parameters of the sample
(``polar_render.anomalies.stain.StainParams``) as opaque Dr.Jit values, so a new sample
updates them without recompiling the kernels. The field evaluates, at each shading point,
the nearest jittered centre among the point's 8 candidate cells (the numpy twin is
``stain.nearest_centre``) with the Perlin noise interpolated from the mesh attribute
``stain.NOISE_ATTRIBUTE``. Units: the world-to-model matrix maps world metres to model
millimetres.

Plugins are registered per Mitsuba variant (once per process and variant): call
:func:`register_plugins` after activating the variant; ``register_plugins.StainField`` is
then the active variant's field class.
"""
from __future__ import annotations

import numpy as np

from polar_render.anomalies.stain import NOISE_ATTRIBUTE, StainParams
from polar_render.mitsuba.variants import float_array

_REGISTERED: dict = {}   # Mitsuba variant -> its StainField class

_DISABLED = dict(radius_mm=1.0, cell_mm=1.0, frequency_per_mm=1.0, amplitude_mm=0.0, gamma=1.0, alpha=0.0,
                 roughness_scale=1.0, noise_offset=(0, 0, 0), grid_dims=(1, 1, 1))


def register_plugins(mi) -> None:
    """Register the ``stain_reflectance``/``stain_roughness`` textures for the active variant."""
    if mi.variant() in _REGISTERED:
        register_plugins.StainField = _REGISTERED[mi.variant()]
        return
    import drjit as dr

    field = _field_class(mi, dr)
    reflectance, roughness = _texture_classes(mi, dr, field)
    mi.register_texture("stain_reflectance", lambda props: reflectance(props))
    mi.register_texture("stain_roughness", lambda props: roughness(props))
    register_plugins.StainField = field
    _REGISTERED[mi.variant()] = field


def centre_store(mi, dr, centres_mm: np.ndarray):
    """The stain centres (n, 3) in mm as the variant stores them: a flat opaque ``mi.Float``
    on JIT variants (gathered in the kernel), an (n, 3) float32 array on scalar variants
    (one point per call; ``dr.gather`` has no scalar Point3f form)."""
    if not dr.is_jit_v(mi.Float):
        return np.asarray(centres_mm, np.float32).reshape(-1, 3)
    v = float_array(mi, centres_mm)
    dr.make_opaque(v)
    return v


def _centre(mi, dr, centres, idx, ok):
    """Centre ``idx`` (zero where not ``ok``) from :func:`centre_store`'s storage."""
    if dr.is_jit_v(mi.Float):
        return dr.gather(mi.Point3f, centres, idx, ok)
    return mi.Point3f(*centres[int(idx)]) if ok else mi.Point3f(0.0)


def _nearest_d2(mi, dr, fld, p, active):
    """(squared distance to the nearest centre, whether one was found) among the 8 cells."""
    rel = (p - fld.origin) / fld.cell
    c = mi.Vector3i(dr.floor(rel))
    side = mi.Vector3i(dr.select(rel - dr.floor(rel) >= 0.5, 1, -1))
    best_d2 = mi.Float(dr.inf)
    found = mi.Bool(False)
    for ox in (0, 1):
        for oy in (0, 1):
            for oz in (0, 1):
                cc = c + mi.Vector3i(ox, oy, oz) * side
                ok = active & dr.all((cc >= 0) & (cc < fld.dims))
                idx = mi.UInt32((cc.x * fld.dims.y + cc.y) * fld.dims.z + cc.z)
                q = _centre(mi, dr, fld.centres, idx, ok)
                d2 = dr.squared_norm(p - q)
                better = ok & (d2 < best_d2)
                best_d2 = dr.select(better, d2, best_d2)
                found |= better
    return best_d2, found


def _field_class(mi, dr):
    """The variant's StainField: per-part stain parameters, updated per sample (no recompile)."""

    def opaque(v):
        dr.make_opaque(v)
        return v

    class StainField:
        _op = staticmethod(opaque)

        def __init__(self):
            self.set_disabled()

        def set_disabled(self):
            self.set(None, np.eye(4))

        def set(self, sp: StainParams | None, world_to_model_mm: np.ndarray):
            enabled = sp is not None
            if sp is None:
                sp = StainParams(**_DISABLED, grid_origin_mm=np.zeros(3), centres_mm=np.full((1, 3), 1e9))
            o = opaque
            self.enabled = o(mi.Bool(enabled))
            self.m = o(mi.Matrix4f(world_to_model_mm.astype(np.float32)))
            self.origin = o(mi.Point3f(*[float(x) for x in sp.grid_origin_mm]))
            self.dims = o(mi.Vector3i(*[int(x) for x in sp.grid_dims]))
            self.cell = o(mi.Float(sp.cell_mm))
            self.centres = centre_store(mi, dr, sp.centres_mm)
            self.radius = o(mi.Float(sp.radius_mm))
            self.amplitude = o(mi.Float(sp.amplitude_mm))
            self.gamma = o(mi.Float(sp.gamma))
            self.alpha = o(mi.Float(sp.alpha))
            self.rscale = o(mi.Float(sp.roughness_scale))

        def eval(self, si, active):
            """(inside mask, d_hat) at the shading point."""
            p4 = self.m @ mi.Vector4f(si.p.x, si.p.y, si.p.z, 1.0)
            p = mi.Point3f(p4.x, p4.y, p4.z)
            n = si.shape.eval_attribute_1(NOISE_ATTRIBUTE, si, active)
            best_d2, found = _nearest_d2(mi, dr, self, p, active)
            r_eff = self.radius + n * self.amplitude
            d = dr.sqrt(best_d2)
            inside = self.enabled & found & (r_eff > 0) & (d <= r_eff)
            d_hat = dr.select(inside, d / dr.maximum(r_eff, 1e-12), 0.0)
            return inside, d_hat

    return StainField


def _texture_classes(mi, dr, field):
    """(StainReflectance, StainRoughness) texture classes of the variant."""

    class StainReflectance(mi.Texture):
        def __init__(self, props):
            mi.Texture.__init__(self, props)
            self.field = None
            self.base = mi.load_dict({"type": "rgb", "value": [0.5, 0.5, 0.5]})

        def eval(self, si, active=True):
            inside, d_hat = self.field.eval(si, active)
            delta = dr.select(inside, dr.power(d_hat, self.field.gamma) * self.field.alpha, 0.0)
            return dr.clip(self.base.eval(si, active) + delta, 0.0, 1.0)

        def mean(self):
            return self.base.mean()

        def traverse(self, cb):
            cb.put("base", self.base, mi.ParamFlags.NonDifferentiable)

        def to_string(self):
            return "StainReflectance[]"

    class StainRoughness(mi.Texture):
        def __init__(self, props):
            mi.Texture.__init__(self, props)
            self.field = None
            self.value = field._op(mi.Float(0.1))

        def eval_1(self, si, active=True):
            inside, _ = self.field.eval(si, active)
            return self.value * dr.select(inside, self.field.rscale, 1.0)

        def mean(self):
            return self.value[0]

        def to_string(self):
            return "StainRoughness[]"

    return StainReflectance, StainRoughness
