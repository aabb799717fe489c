"""Water stains (the impurity family): a solid texture (Sequential PatchCore, Algorithm 1).

The class ``water_stain`` draws Algorithm 1's jittered centres over the stain parts of one
object instance; a mask instance is one stain centre that is visible (its pixels: the
visible surface points inside r' of it, the same function as the render).

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
the texture plugins of ``polar_render.mitsuba.plugins``. Masks evaluate the same algorithm on the exact surface point
seen through each pixel centre with ``pnoise3`` itself; the only difference is the linear
interpolation of the smooth noise over one triangle (<= 0.8 mm), bounded in the tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polar_render.anomalies.context import Dropped, uniform
from polar_render.anomalies.refine import faces_reaching
from polar_render.anomalies.registry import Anomaly, AnomalyClass

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


# ----------------------------------------------------------------------------- the class

STAIN_AWAY_MM = 1e6   # a removed stain centre is moved this far: no surface point is ever inside it


def stain_parts(spec: dict) -> set[str]:
    """Parts that may carry a water stain (``anomalies.classes.water_stain.parts``)."""
    return set(((spec or {}).get("classes") or {}).get("water_stain", {}).get("parts", []))


def keep_visible_stains(sp: StainParams, views, min_px: int, in_region=None) -> int:
    """Remove (move away) the centres of ``sp`` whose stain covers fewer than ``min_px`` of
    the seen pixel centres in ``views`` (SlotViews, None = unseen); return how many remain
    visible. Evaluated with Algorithm 1 itself (:func:`evaluate`) on the seen points.
    ``in_region`` (one bool per seen pixel of each view, or None): only pixels of the
    region count, and a centre whose stain covers a seen pixel outside it is removed too."""
    keep = [k for k, sv in enumerate(views) if sv is not None and len(sv.pixels)]
    counts = np.zeros(len(sp.centres_mm), np.int64)
    outside = np.zeros(len(sp.centres_mm), np.int64)
    if keep:
        inside, _, idx, _ = evaluate(np.concatenate([views[k].points_mm for k in keep]), sp)
        flag = np.ones(len(idx), bool) if in_region is None else np.concatenate([in_region[k] for k in keep])
        counts = np.bincount(idx[inside & flag], minlength=len(sp.centres_mm))
        outside = np.bincount(idx[inside & ~flag], minlength=len(sp.centres_mm))
    small = (counts < min_px) | (outside > 0)
    sp.centres_mm[small] = sp.centres_mm[small] + STAIN_AWAY_MM
    return int((~small).sum())


def keep_stains_in_region(sp: StainParams, meshes: list) -> int:
    """Without a camera: remove the centres of ``sp`` that do not reach a face of the region
    within the stain radius, or that reach a face outside it within radius + amplitude.
    ``meshes``: ((vertices mm, faces), allowed faces) of the stain's parts. Returns how many
    centres remain."""
    keep = np.zeros(len(sp.centres_mm), bool)
    for k, c in enumerate(sp.centres_mm):
        near_in = near_out = False
        for (v, f), allowed in meshes:
            near_in |= bool(faces_reaching(v, f[allowed], c[None], sp.radius_mm).any()) if allowed.any() else False
            near_out |= bool(faces_reaching(v, f[~allowed], c[None], sp.radius_mm + sp.amplitude_mm).any()) \
                if (~allowed).any() else False
        keep[k] = near_in and not near_out
    sp.centres_mm[~keep] = sp.centres_mm[~keep] + STAIN_AWAY_MM
    return int(keep.sum())


class WaterStain(AnomalyClass):
    """Algorithm 1's jittered centres over the instance's stain parts; with ``visible``,
    centres whose stain shows fewer than min_visible_px pixel centres are removed (moved out
    of reach), and the stain is dropped when none is left."""
    name, family, mask_rank, regional = "water_stain", "impurity", 7, True

    def sample(self, ctx, c: dict, where: str) -> Anomaly | None:
        cands = ctx.targets(c["parts"])
        if not cands:
            return None
        target = cands[int(ctx.rng.integers(len(cands)))]
        inst_slots = [s for s in ctx.base_slots if s.instance == target.instance and s.part in c["parts"]]
        sp = self._params(ctx, c, where, np.concatenate([ctx.models_mm[s.key][0] for s in inst_slots]))
        params = {"parts": [s.part for s in inst_slots]}
        region = c.get("faces")
        if region is not None:
            params["faces"] = region
        if ctx.visible is not None:
            views = [ctx.visible.slots.get(s.key) for s in inst_slots]
            inside = None if region is None else [ctx.pixels_in_region(s, sv, region) for s, sv in zip(inst_slots, views)]
            kept = keep_visible_stains(sp, views, ctx.min_px, inside)
            if kept == 0:
                raise Dropped(f"no stain shows >= {ctx.min_px} px" + (" inside its region of faces" if region else ""))
            params["visible_centres"] = kept
        elif region is not None:
            if keep_stains_in_region(sp, [(ctx.models_mm[s.key], ctx.allowed(s, region)) for s in inst_slots]) == 0:
                raise Dropped("no stain lies inside its region of faces")
        return Anomaly(self.name, target.instance, params, stain=sp)

    @staticmethod
    def _params(ctx, c: dict, where: str, allv: np.ndarray) -> StainParams:
        """The grid of centres over the parts' vertices ``allv`` and the stain's draws."""
        cell = uniform(ctx.rng, c["cell_mm"], f"{where}.cell_mm")
        origin, dims, centres = jittered_centres(allv.min(0), allv.max(0), cell, ctx.rng)
        return StainParams(radius_mm=uniform(ctx.rng, c["radius_mm"], f"{where}.radius_mm"), cell_mm=cell,
                           frequency_per_mm=uniform(ctx.rng, c.get("frequency_per_mm", 0.5), where),
                           amplitude_mm=uniform(ctx.rng, c.get("amplitude_mm", 0.0), where),
                           gamma=uniform(ctx.rng, c.get("gamma", 2.0), where),
                           alpha=uniform(ctx.rng, c.get("alpha", -0.2), where),
                           roughness_scale=uniform(ctx.rng, c.get("roughness_scale", 1.0), where),
                           noise_offset=tuple(float(x) for x in ctx.rng.uniform(0, 200, 3)),
                           grid_origin_mm=origin, grid_dims=dims, centres_mm=centres)

    def mask(self, a: Anomaly, views) -> list[tuple[np.ndarray, dict]]:
        """One pixel set per visible stain centre, with its centre and mean reflectance change."""
        ids = views.slot_ids(lambda s: s.instance == a.instance and s.part in a.params["parts"] and not s.is_extra)
        sel = np.isin(views.anom.slot, ids)
        if not sel.any():
            return []
        ys, xs = np.nonzero(sel)
        inside, _, centre, delta = evaluate(views.model_points(views.anom, sel, a.instance), a.stain)
        out = []
        for c in np.unique(centre[inside]):
            pix = np.zeros(views.shape, bool)
            m = inside & (centre == c)
            pix[ys[m], xs[m]] = True
            out.append((pix, {"centre_mm": a.stain.centres_mm[c].tolist(),
                              "reflectance_delta": float(np.mean(np.abs(delta[m])))}))
        return out


WATER_STAIN = WaterStain()
