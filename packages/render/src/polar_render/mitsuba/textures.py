"""Texture plugins whose per-sample parameters stay out of the compiled kernels.

``polar_checkerboard``: Mitsuba's checkerboard pattern (colour0/colour1 alternate at
u, v fractional parts 0.5) with the repeat count ``scale`` held as an opaque Dr.Jit value.
Mitsuba's own checkerboard takes the scale through ``to_uv``, a transform baked into the
kernel as a literal, and scaling the mesh's UV buffer per sample changes how Dr.Jit
specialises the shapes' surface-interaction code; both made kernels recompile (measured,
``tests/render/test_determinism.py``). Here UVs stay fixed and the scale is a kernel input.
"""
from __future__ import annotations

_REGISTERED: set = set()   # variants the texture is registered for (plugins are per variant)


def register_textures(mi) -> None:
    if mi.variant() in _REGISTERED:
        return
    import drjit as dr

    class Checkerboard(mi.Texture):
        def __init__(self, props):
            mi.Texture.__init__(self, props)
            self.color0 = mi.load_dict({"type": "rgb", "value": [0.4, 0.4, 0.4]})
            self.color1 = mi.load_dict({"type": "rgb", "value": [0.2, 0.2, 0.2]})
            self.set_scale(1.0)

        def set_scale(self, scale: float) -> None:
            self.scale = mi.Float(float(scale))
            dr.make_opaque(self.scale)

        def eval(self, si, active=True):
            u = si.uv.x * self.scale
            v = si.uv.y * self.scale
            odd = ((u - dr.floor(u)) > 0.5) ^ ((v - dr.floor(v)) > 0.5)
            return dr.select(odd, self.color1.eval(si, active), self.color0.eval(si, active))

        def mean(self):
            return 0.5 * (self.color0.mean() + self.color1.mean())

        def traverse(self, cb):
            cb.put("color0", self.color0, mi.ParamFlags.NonDifferentiable)
            cb.put("color1", self.color1, mi.ParamFlags.NonDifferentiable)

        def to_string(self):
            return "PolarCheckerboard[]"

    mi.register_texture("polar_checkerboard", lambda props: Checkerboard(props))
    _REGISTERED.add(mi.variant())
