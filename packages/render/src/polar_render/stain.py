"""Water stains as a solid texture (Sequential PatchCore, Algorithm 1).

For a surface point p (object model frame, millimetres):

* Jittered grid: space is cut into cubic cells of size G; cell (i, j, k) holds one centre,
  uniform inside the cell, drawn from the sample's stream. The nearest centre is searched
  in p's own cell and the 7 neighbours on p's side (per axis: the neighbour towards which p
  lies past the cell's middle). Any centre closer than G/2 lies in one of these 8 cells, and
  the scene file must keep ``r + |A| < G/2`` (checked), so every inside/outside decision
  and every stain's identity equal those of a brute-force search over all centres.
* r' = r + PerlinNoise(p * f + offset) * A, with the ``noise`` package's ``pnoise3``.
* Inside (d <= r'): d_hat = d / r'; reflectance R_out = clamp(R_in + d_hat**gamma * alpha, 0, 1).
  alpha < 0 darkens the rim (mineral residue concentrates where the drop's edge dried) and
  leaves the centre near the base reflectance. The stain also scales the GGX roughness by
  ``roughness_scale`` inside r' (a dried film is smoother than the part: wet/dry contrast).
  Outside: unchanged.

Rendering: ``pnoise3`` is evaluated on the mesh vertices (model frame, per sample) and
interpolated by Mitsuba as a mesh attribute; everything else (centres, nearest search,
d <= r', d_hat**gamma) is evaluated exactly at each shading point in the Dr.Jit kernel by
the texture plugins below. Masks evaluate the same algorithm on the exact surface point
seen through each pixel centre with ``pnoise3`` itself; the only difference is the linear
interpolation of the smooth noise over one triangle (<= 0.8 mm), bounded in the tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE_ATTRIBUTE = "vertex_stain_noise"


@dataclass
class StainParams:
    radius_mm: float
    cell_mm: float
    frequency_per_mm: float
    amplitude_mm: float
    gamma: float
    alpha: float
    roughness_scale: float
    noise_offset: tuple[float, float, float]
    grid_origin_mm: np.ndarray     # (3,) lower corner of cell (0, 0, 0)
    grid_dims: tuple[int, int, int]
    centres_mm: np.ndarray         # (nx*ny*nz, 3), cell index = (i*ny + j)*nz + k

    def to_meta(self) -> dict:
        return {"radius_mm": self.radius_mm, "cell_mm": self.cell_mm, "frequency_per_mm": self.frequency_per_mm,
                "amplitude_mm": self.amplitude_mm, "gamma": self.gamma, "alpha": self.alpha,
                "roughness_scale": self.roughness_scale, "noise_offset": list(self.noise_offset),
                "n_centres": int(len(self.centres_mm))}


def jittered_centres(lo_mm, hi_mm, cell_mm: float, rng: np.random.Generator):
    """One uniform centre per cell of a grid covering [lo, hi] plus one cell of margin."""
    lo = np.floor(np.asarray(lo_mm) / cell_mm) * cell_mm - cell_mm
    dims = tuple(int(x) for x in np.ceil((np.asarray(hi_mm) + cell_mm - lo) / cell_mm))
    idx = np.stack(np.meshgrid(*[np.arange(d) for d in dims], indexing="ij"), -1).reshape(-1, 3)
    centres = lo + (idx + rng.uniform(0.0, 1.0, size=idx.shape)) * cell_mm
    return lo, dims, centres


def perlin(points_mm: np.ndarray, frequency: float, offset) -> np.ndarray:
    """``noise.pnoise3`` at p * f + offset for each point (values roughly in [-1, 1])."""
    import noise

    q = np.asarray(points_mm, np.float64) * frequency + np.asarray(offset)
    return np.fromiter((noise.pnoise3(x, y, z) for x, y, z in q), np.float64, len(q))


def _cells8(p: np.ndarray, sp: StainParams):
    rel = (p - sp.grid_origin_mm) / sp.cell_mm
    cell = np.floor(rel).astype(np.int64)
    side = np.where(rel - cell >= 0.5, 1, -1)
    for off in np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), -1).reshape(-1, 3):
        yield cell + off * side


def nearest_centre(points_mm: np.ndarray, sp: StainParams) -> tuple[np.ndarray, np.ndarray]:
    """(distance, centre index) of the nearest centre among the point's 8 candidate cells
    (numpy twin of the kernel's search); index -1 where none of them exists."""
    p = np.asarray(points_mm, np.float64)
    dims = np.array(sp.grid_dims)
    best_d2 = np.full(len(p), np.inf)
    best = np.full(len(p), -1, np.int64)
    for cc in _cells8(p, sp):
        ok = np.all((cc >= 0) & (cc < dims), axis=1)
        idx = np.where(ok, (cc[:, 0] * dims[1] + cc[:, 1]) * dims[2] + cc[:, 2], 0)
        d2 = np.sum((p - sp.centres_mm[idx]) ** 2, axis=1)
        better = ok & (d2 < best_d2)
        best_d2 = np.where(better, d2, best_d2)
        best = np.where(better, idx, best)
    return np.sqrt(best_d2), best


def brute_force_nearest(points_mm: np.ndarray, centres_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: nearest centre over all centres (tests)."""
    d2 = ((np.asarray(points_mm)[:, None, :] - centres_mm[None, :, :]) ** 2).sum(-1)
    idx = d2.argmin(1)
    return np.sqrt(d2[np.arange(len(idx)), idx]), idx


def perlin_where_needed(points_mm: np.ndarray, sp: StainParams, margin_mm: float = 0.0) -> np.ndarray:
    """``perlin`` at the points that can be inside a stain (d <= r + |A| + margin), 0
    elsewhere: r' = r + N * A with |N| <= 1 cannot reach farther points, so the result of
    Algorithm 1 is unchanged and most ``pnoise3`` calls are saved."""
    p = np.asarray(points_mm, np.float64)
    d, _ = nearest_centre(p, sp)
    return _perlin_near(p, d, sp, margin_mm)


def _perlin_near(p: np.ndarray, d: np.ndarray, sp: StainParams, margin_mm: float = 0.0) -> np.ndarray:
    near = d <= sp.radius_mm + abs(sp.amplitude_mm) + margin_mm
    out = np.zeros(len(p))
    if near.any():
        out[near] = perlin(p[near], sp.frequency_per_mm, sp.noise_offset)
    return out


def evaluate(points_mm: np.ndarray, sp: StainParams, noise_values: np.ndarray | None = None):
    """Algorithm 1 at model-frame points: (inside, d_hat, centre index, reflectance delta)."""
    p = np.asarray(points_mm, np.float64)
    d, idx = nearest_centre(p, sp)
    n = _perlin_near(p, d, sp) if noise_values is None else noise_values
    r_eff = sp.radius_mm + n * sp.amplitude_mm
    inside = (idx >= 0) & (r_eff > 0) & (d <= r_eff)
    d_hat = np.where(inside, d / np.where(r_eff > 0, r_eff, 1.0), 0.0)
    delta = np.where(inside, d_hat ** sp.gamma * sp.alpha, 0.0)
    return inside, d_hat, idx, delta


# ----------------------------------------------------------------------------- Mitsuba side

_REGISTERED: dict = {}   # Mitsuba variant -> its StainField class


def register_plugins(mi) -> None:
    """Register the ``stain_reflectance``/``stain_roughness`` textures (once per process and
    Mitsuba variant: plugins are per variant); ``register_plugins.StainField`` is then the
    active variant's field class."""
    if mi.variant() in _REGISTERED:
        register_plugins.StainField = _REGISTERED[mi.variant()]
        return
    import drjit as dr

    class StainField:
        """Per-part stain parameters as opaque Dr.Jit values (updated per sample, no recompile)."""

        def __init__(self):
            self.set_disabled()

        @staticmethod
        def _op(v):
            dr.make_opaque(v)
            return v

        def set_disabled(self):
            self.set(None, np.eye(4))

        def set(self, sp: StainParams | None, world_to_model_mm: np.ndarray):
            o = self._op
            if sp is None:
                sp = StainParams(1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, (0, 0, 0), np.zeros(3), (1, 1, 1),
                                 np.full((1, 3), 1e9))
                enabled = False
            else:
                enabled = True
            self.enabled = o(mi.Bool(enabled))
            self.m = o(mi.Matrix4f(world_to_model_mm.astype(np.float32)))
            self.origin = o(mi.Point3f(*[float(x) for x in sp.grid_origin_mm]))
            self.dims = o(mi.Vector3i(*[int(x) for x in sp.grid_dims]))
            self.cell = o(mi.Float(sp.cell_mm))
            self.centres = o(mi.Float(np.ascontiguousarray(sp.centres_mm, np.float32).ravel()))
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
            rel = (p - self.origin) / self.cell
            c = mi.Vector3i(dr.floor(rel))
            side = mi.Vector3i(dr.select(rel - dr.floor(rel) >= 0.5, 1, -1))
            best_d2 = mi.Float(dr.inf)
            found = mi.Bool(False)
            for ox in (0, 1):
                for oy in (0, 1):
                    for oz in (0, 1):
                        cc = c + mi.Vector3i(ox, oy, oz) * side
                        ok = active & dr.all((cc >= 0) & (cc < self.dims))
                        idx = mi.UInt32((cc.x * self.dims.y + cc.y) * self.dims.z + cc.z)
                        q = dr.gather(mi.Point3f, self.centres, idx, ok)
                        d2 = dr.squared_norm(p - q)
                        better = ok & (d2 < best_d2)
                        best_d2 = dr.select(better, d2, best_d2)
                        found |= better
            r_eff = self.radius + n * self.amplitude
            d = dr.sqrt(best_d2)
            inside = self.enabled & found & (r_eff > 0) & (d <= r_eff)
            d_hat = dr.select(inside, d / dr.maximum(r_eff, 1e-12), 0.0)
            return inside, d_hat

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
            self.value = StainField._op(mi.Float(0.1))

        def eval_1(self, si, active=True):
            inside, _ = self.field.eval(si, active)
            return self.value * dr.select(inside, self.field.rscale, 1.0)

        def mean(self):
            return self.value[0]

        def to_string(self):
            return "StainRoughness[]"

    mi.register_texture("stain_reflectance", lambda props: StainReflectance(props))
    mi.register_texture("stain_roughness", lambda props: StainRoughness(props))
    register_plugins.StainField = StainField
    _REGISTERED[mi.variant()] = StainField
