"""Structural anomalies: a part's surface moves (dent, bump, scratch, chip).

==========  ===============================================================================
``dent``    smooth displacement into the surface: depth * (1 - (d/R)^2)^2, d = distance to
            the centre, R = radius; direction = the surface normal at the centre (all
            vertices move along it, so split crease vertices stay welded).
``bump``    the same outwards.
``scratch`` a groove: the same profile across a band of width w around a planar arc (length,
            curvature) in the tangent plane at a random surface point (d = distance to the
            arc, R = w / 2).
``chip``    a chipped corner: the part's vertices beyond a plane cutting the corner at
            ``depth_mm`` are projected onto it (a flat facet).
==========  ===============================================================================

Each displacement is a function of the clean position only and exactly 0 outside the
class's region (:meth:`region_excess` <= 0 inside), so split crease vertices stay welded.
Before displacing, the mesh is refined around the region (``refine.py``) to edges of at most
``ring_mm`` (a quarter of the radius or width, a third of a chip's depth, never more than the
mesh's own longest edge). Mask: the pixels whose visible surface differs from the clean twin's
and whose clean or anomalous surface point lies within ``ring_mm`` (one refined edge: the
shading normals of the first vertex ring outside change too) of the region; contrast: the
median angle between anomalous and clean shading normals. Units: mm, model frame.
"""
from __future__ import annotations

import numpy as np

from polar_render.anomalies.context import Dropped, part_extent, size, uniform
from polar_render.anomalies.refine import faces_reaching
from polar_render.anomalies.registry import Anomaly, AnomalyClass

CURVE_EXACT_MM = 5.0    # _curve_distance is exact up to here; callers compare with <= w/2 + one mesh edge (~2 mm)


def _curve_distance(p_mm: np.ndarray, curve_mm, exact_mm: float = CURVE_EXACT_MM) -> np.ndarray:
    """Distance (mm) from points to a polyline: exact where it is <= ``exact_mm``; farther
    points get a lower bound (their distance to the polyline's bounding box), also > ``exact_mm``.
    Only points inside the box grown by ``exact_mm`` are measured segment by segment."""
    p_mm = np.asarray(p_mm, np.float64)
    q = np.asarray(curve_mm, np.float64)
    lo, hi = q.min(0), q.max(0)
    out = np.linalg.norm(p_mm - np.clip(p_mm, lo, hi), axis=1)     # distance to the box (lower bound)
    near = np.flatnonzero(out <= exact_mm)
    if near.size == 0:
        return np.maximum(out, np.nextafter(exact_mm, np.inf))
    pn = p_mm[near]
    a, ab = q[:-1], q[1:] - q[:-1]
    t = np.clip(np.einsum("pkj,kj->pk", pn[:, None, :] - a[None], ab) / np.maximum(np.einsum("kj,kj->k", ab, ab), 1e-12),
                0.0, 1.0)                                               # (points, segments)
    d = np.linalg.norm(pn[:, None, :] - (a[None] + t[..., None] * ab[None]), axis=2).min(1)
    out = np.maximum(out, np.nextafter(exact_mm, np.inf))
    out[near] = d
    return out


class SurfaceClass(AnomalyClass):
    """A vertex displacement of a part's surface (the hooks shared by the four classes)."""
    family = "structural"
    geometric = surface = regional = True

    def applies_to(self, a: Anomaly, slot) -> bool:
        return slot.instance == a.instance

    def region_excess(self, p_mm: np.ndarray, a: Anomaly, exact_mm: float = CURVE_EXACT_MM) -> np.ndarray:
        """How far (mm) model-frame points lie outside the region the anomaly moves (<= 0
        inside); exact up to ``exact_mm`` outside (lower bounds beyond, still > ``exact_mm``)."""
        raise NotImplementedError

    def _anchors(self, a: Anomaly) -> tuple[np.ndarray, float]:
        """(points, reach mm) whose ball union covers the region grown by one refined edge."""
        raise NotImplementedError

    def refinement_zone(self, a: Anomaly):
        """``zone(v, f) -> bool (F,)``: triangles that reach the region grown by one refined
        edge (``ring_mm``), on the side the defect is on (the back of a thin wall within
        reach keeps its mesh), for :func:`polar_render.anomalies.refine.refine_zone`."""
        anchors, reach = self._anchors(a)
        n = np.asarray(a.params["normal"], np.float64)

        def zone(v, f):
            fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
            return faces_reaching(v, f, anchors, reach) & (fn @ n > 0)
        return zone

    def mask(self, a: Anomaly, views) -> list[tuple[np.ndarray, dict]]:
        ids = views.slot_ids(lambda s: not s.is_extra and self.applies_to(a, s))
        region = np.zeros(views.shape, bool)
        for view in (views.anom, views.clean):
            sel = np.isin(view.slot, ids)
            pts = views.model_points(view, sel, a.instance)
            # plus one edge: shading normals of the first vertex ring outside change too
            reach = a.params.get("ring_mm", 0.0) + 0.01
            near = self.region_excess(pts, a, exact_mm=reach + 0.1) <= reach
            region[np.nonzero(sel)[0][near], np.nonzero(sel)[1][near]] = True
        return [(views.differs & region, {"part": a.params["part"]})]

    def contrast(self, a: Anomaly, pix: np.ndarray, views) -> dict:
        """Median angle (deg) between anomalous and clean shading normals over the pixels."""
        anom, clean = views.anom, views.clean
        if clean is None:
            return {}
        both = pix & (anom.slot >= 0) & (clean.slot >= 0)
        cos = np.clip(np.sum(anom.nrm[both] * clean.nrm[both], axis=-1), -1.0, 1.0)
        dev = float(np.median(np.degrees(np.arccos(cos)))) if cos.size else 0.0
        return {"contrast": dev, "contrast_measure": "normal_deviation_deg"}


class _Profiled(SurfaceClass):
    """dent, bump, scratch: height * (1 - r^2)^2 along the centre's normal for r < 1."""
    sign = -1.0

    def _r(self, v_mm: np.ndarray, a: Anomaly) -> np.ndarray:
        raise NotImplementedError

    def _shape(self, ctx, c: dict, where: str, centre, nrm, extent: float, params: dict) -> tuple[float, float]:
        """Draw the class's own sizes into ``params``; (area mm^2, refinement target mm)."""
        raise NotImplementedError

    def displacement(self, v_mm: np.ndarray, a: Anomaly) -> np.ndarray:
        n = np.asarray(a.params["normal"])
        r = self._r(v_mm, a)
        w = np.where(r < 1.0, (1.0 - r**2) ** 2, 0.0)
        return (w * a.params["height_mm"])[:, None] * n[None, :]

    def sample(self, ctx, c: dict, where: str) -> Anomaly | None:
        """A centre on a (visible) surface point, redrawn until its projected size reaches
        min_visible_px."""
        cands = ctx.targets(c["parts"])
        if not cands:
            return None
        region = c.get("faces")
        best = 0.0
        for _ in range(ctx.tries):
            target, centre, nrm, px_per_mm2 = ctx.surface_point(cands, region)
            extent = part_extent(ctx.models_mm[target.key][0])
            depth = uniform(ctx.rng, c["depth_mm"], f"{where}.depth_mm") * self.sign
            params = {"part": target.part, "centre_mm": centre.tolist(), "normal": nrm.tolist(), "height_mm": depth,
                      **({"faces": region} if region is not None else {})}
            area, target_mm = self._shape(ctx, c, where, centre, nrm, extent, params)
            params["ring_mm"] = min(target_mm, ctx.longest_edge(target.key))
            est = area * px_per_mm2
            if est >= ctx.min_px:
                return Anomaly(self.name, target.instance, {**params, "est_visible_px": float(min(est, 1e9))})
            best = max(best, est)
        raise Dropped(f"projected size {best:.0f} px < min_visible_px {ctx.min_px} after {ctx.tries} draws")


class Dent(_Profiled):
    name, mask_rank, sign = "dent", 3, -1.0

    def _shape(self, ctx, c, where, centre, nrm, extent, params):
        params["radius_mm"] = size(ctx.rng, c, "radius", where, extent)
        return np.pi * params["radius_mm"] ** 2, params["radius_mm"] / 4

    def _r(self, v_mm, a):
        return np.linalg.norm(v_mm - np.asarray(a.params["centre_mm"]), axis=1) / a.params["radius_mm"]

    def region_excess(self, p_mm, a, exact_mm=CURVE_EXACT_MM):
        return np.linalg.norm(p_mm - np.asarray(a.params["centre_mm"]), axis=1) - a.params["radius_mm"]

    def _anchors(self, a):
        return np.asarray([a.params["centre_mm"]]), a.params["radius_mm"] + float(a.params["ring_mm"])


class Bump(Dent):
    name, mask_rank, sign = "bump", 4, 1.0


class Scratch(_Profiled):
    name, mask_rank, sign = "scratch", 5, -1.0

    def _shape(self, ctx, c, where, centre, nrm, extent, params):
        """A planar arc through the centre, in the tangent plane."""
        t = np.cross(nrm, ctx.rng.normal(size=3))
        t /= np.linalg.norm(t)
        side = np.cross(nrm, t)
        length = size(ctx.rng, c, "length", where, extent)
        bend = uniform(ctx.rng, c["curvature_radius_mm"], f"{where}.curvature_radius_mm") * ctx.rng.choice([-1.0, 1.0])
        sv = np.linspace(-length / 2, length / 2, 64)
        curve = centre + sv[:, None] * t + (sv**2 / (2 * bend))[:, None] * side
        width = size(ctx.rng, c, "width", where, extent)
        params.update(curve_mm=curve.tolist(), width_mm=width)
        return length * width, width / 4

    def _r(self, v_mm, a):
        half = a.params["width_mm"] / 2
        return _curve_distance(v_mm, a.params["curve_mm"], exact_mm=1.01 * half) / half   # only r < 1 matters

    def region_excess(self, p_mm, a, exact_mm=CURVE_EXACT_MM):
        half = a.params["width_mm"] / 2
        return _curve_distance(p_mm, a.params["curve_mm"], exact_mm + half) - half

    def _anchors(self, a):
        curve = np.asarray(a.params["curve_mm"])
        step = float(np.linalg.norm(np.diff(curve, axis=0), axis=1).max())
        return curve, a.params["width_mm"] / 2 + float(a.params["ring_mm"]) + step / 2


class Chip(SurfaceClass):
    """A planar cut through the part's corner nearest a random box corner; with ``visible``
    only corners the camera sees."""
    name, mask_rank = "chip", 2

    def applies_to(self, a: Anomaly, slot) -> bool:
        return slot.instance == a.instance and slot.part == a.params["part"]

    def displacement(self, v_mm, a):
        n = np.asarray(a.params["normal"])
        over = np.maximum((v_mm - np.asarray(a.params["plane_point_mm"])) @ n, 0.0)
        return -over[:, None] * n[None, :]

    def region_excess(self, p_mm, a, exact_mm=CURVE_EXACT_MM):
        return -(p_mm - np.asarray(a.params["plane_point_mm"])) @ np.asarray(a.params["normal"])

    def refinement_zone(self, a: Anomaly):
        """The half-space beyond the cut plane, grown by ``ring_mm``."""
        ring, n = float(a.params["ring_mm"]), np.asarray(a.params["normal"], np.float64)
        p0 = np.asarray(a.params["plane_point_mm"])
        return lambda v, f: ((v[f] - p0) @ n).max(1) >= -ring

    def sample(self, ctx, c: dict, where: str) -> Anomaly | None:
        cands = ctx.targets(c["parts"])
        if not cands:
            return None
        region = c.get("faces")
        cands = ctx.in_region(cands, region)     # corners of the region's faces only
        best = 0.0
        for _ in range(ctx.tries):
            target = cands[int(ctx.rng.integers(len(cands)))]
            params, corner, nrm = self._cut(ctx, c, where, target, region)
            if ctx.visible is None:
                return Anomaly(self.name, target.instance, params)
            est = self._estimate(ctx, target, corner, nrm, params["depth_mm"])
            if est >= ctx.min_px:
                return Anomaly(self.name, target.instance, {**params, "est_visible_px": float(est)})
            best = max(best, est)
        raise Dropped(f"no visible corner with projected size >= min_visible_px {ctx.min_px} "
                      f"after {ctx.tries} draws (best {best:.0f} px)")

    def _cut(self, ctx, c: dict, where: str, target, region: dict | None) -> tuple[dict, np.ndarray, np.ndarray]:
        """(params, corner, outward normal) of the cut plane at the part's vertex (of the
        region) nearest a random box corner."""
        v, f = ctx.models_mm[target.key]
        lo, hi = v.min(0), v.max(0)
        box_corner = np.where(ctx.rng.uniform(size=3) < 0.5, lo, hi)
        pool = v if region is None else v[np.unique(f[ctx.allowed(target, region)])]
        corner = pool[np.argmin(np.linalg.norm(pool - box_corner, axis=1))]
        nrm = corner - (lo + hi) / 2
        nrm /= np.linalg.norm(nrm)
        depth = uniform(ctx.rng, c["depth_mm"], f"{where}.depth_mm")
        params = {"part": target.part, "corner_mm": corner.tolist(), "normal": nrm.tolist(),
                  "plane_point_mm": (corner - depth * nrm).tolist(), "depth_mm": depth,
                  "ring_mm": min(depth / 3, ctx.longest_edge(target.key)),
                  **({"faces": region} if region is not None else {})}
        return params, corner, nrm

    @staticmethod
    def _estimate(ctx, target, corner: np.ndarray, nrm: np.ndarray, depth: float) -> float:
        """Projected size (px): seen when a point inside the cut (a third of the way in) is
        seen; ~ the three facets' visible share."""
        seen, ppm = ctx.visible.sees_point(target.instance, corner - depth / 3 * nrm, depth,
                                           [s.key for s in ctx.base_slots if s.instance == target.instance])
        return 1.5 * depth**2 * ppm**2 if seen else 0.0


DENT, BUMP, SCRATCH, CHIP = Dent(), Bump(), Scratch(), Chip()
