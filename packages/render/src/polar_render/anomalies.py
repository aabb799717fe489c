"""Surface anomalies: sampling per sample, geometry edits, and pixel-exact instance masks.

Classes (scene file ``anomalies.classes``; each with ``weight``, ``parts`` and ranges):

==============  ==========  ===========================================================
``water_stain`` impurity    Algorithm 1 (``stain.py``) on every listed part of an object
                            instance; one mask instance per stain centre that is visible.
``dent``        defect      smooth displacement into the surface: depth * (1 - (d/R)^2)^2
``bump``        defect      the same outwards. Direction = the surface normal at the centre
                            (all vertices move along it, so split crease vertices stay
                            welded); normals of moved vertices are recomputed.
``scratch``     defect      a groove: the same profile across a band of width w around a
                            planar arc (length, curvature) in the tangent plane at a random
                            surface point. The mesh is refined around it (``refine.py``) to
                            edges of at most width / 4.
``chip``        defect      a chipped corner: the part's vertices beyond a plane cutting the
                            corner at ``depth_mm`` are projected onto it (a flat facet).
``missing``     defect      a part is removed (its triangles collapse to a point).
``extra``       defect      a second copy of a part, turned 180 degrees about the object's
                            model z axis and moved by ``offset_mm`` (e.g. a second USB plug
                            sticking out of the other end).
``swapped``     defect      two parts of one object exchange their sampled materials.
==============  ==========  ===========================================================

Mask rule (``anomaly_mask``, uint16 instance ids, 0 = none): pixels where the image of the
anomalous sample differs from its clean twin *because of* that instance.
* Geometric (dent, bump, scratch, chip, missing, extra): an extra exact AOV pass on the clean geometry;
  a pixel belongs to the instance when its visible surface differs (other shape, depth by
  more than 1 um, or normal by more than 0.1 deg) and the clean or anomalous surface point
  lies in the instance's region (``region_excess`` plus one mesh edge, as the shading
  normals of the first vertex ring outside it are recomputed; missing: the clean
  twin sees the removed part; extra: the added part is seen). Shadows and reflections
  that move are not included.
* swapped: the visible pixels of both parts.
* water_stain: visible surface points inside r' of a centre (same function as the render).
Pixels claimed by several instances keep the first in the order listed above. Masks are
computed from ``mask_supersampling`` x ``mask_supersampling`` exact rays per pixel (default
3) and pooled (``pool_mask``): a pixel is in the mask when the anomaly is seen by any of its
rays, so the mask covers every pixel whose anti-aliased render it changes.
Sampling: stream 3 of ``(seed, i)``; a sample is anomalous with ``probability``; it then
gets ``count`` distinct classes drawn by weight.

Regions (``faces`` of a surface class, or ``anomalies.faces`` for all of them): the centre of
a dent, bump or scratch lies on a face of the region (face normal within ``within_deg`` of
``normal`` in the part's model frame, and/or a face group stored with the mesh), a chip cuts a
corner of the region's faces, and a water stain keeps only the centres whose stain covers
seen pixels of the region and none outside it. Faces are those of the clean mesh; the pixel
of a candidate centre knows its triangle from the AOV pass. The anomaly itself may still
reach across an edge of the region by its radius.

Geometric defects on coarse CAD meshes (a 40 mm face made of two triangles): the mesh is
split locally around the defect first (``refine.py``), so dents and scratches show whatever
the tessellation; scene meshes need no particular edge length.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .randomize import rng_for
from .config import check_range
from .refine import max_edge
from .stain import StainParams, jittered_centres

STREAM_ANOMALY = 3
CLASSES = {"water_stain": "impurity", "dent": "defect", "bump": "defect", "scratch": "defect", "chip": "defect",
           "missing": "defect", "extra": "defect", "swapped": "defect"}
MASK_ORDER = ("missing", "extra", "chip", "dent", "bump", "scratch", "swapped", "water_stain")
SURFACE = {"dent", "bump", "scratch", "chip"}      # vertex displacements of a part's surface
GEOMETRIC = SURFACE | {"missing", "extra"}
REGION_CLASSES = SURFACE | {"water_stain"}          # may be restricted to a region of faces (``faces``)
def stain_parts(spec: dict) -> set[str]:
    return set(((spec or {}).get("classes") or {}).get("water_stain", {}).get("parts", []))


def extra_parts(spec: dict) -> list[str]:
    return list(((spec or {}).get("classes") or {}).get("extra", {}).get("parts", []))


@dataclass
class Anomaly:
    cls: str
    instance: int                    # object instance (1-based) it applies to
    params: dict = field(default_factory=dict)
    stain: StainParams | None = None

    @property
    def kind(self) -> str:
        return CLASSES[self.cls]

    def to_meta(self) -> dict:
        d = {"class": self.cls, "kind": self.kind, "instance": self.instance, **self.params}
        if self.stain is not None:
            d.update(self.stain.to_meta())
        return d


def _u(rng, v, where):
    a, b = check_range(v, where)
    return float(rng.uniform(a, b))


def _size(rng, c: dict, name: str, where: str, part_mm: float) -> float:
    """A size in mm: ``<name>_mm`` as given, or ``<name>_rel`` x the part's largest extent."""
    if f"{name}_rel" in c:
        return _u(rng, c[f"{name}_rel"], f"{where}.{name}_rel") * part_mm
    return _u(rng, c[f"{name}_mm"], f"{where}.{name}_mm")


MAX_TRIES = 8   # redraws of an anomaly whose projected size is below min_visible_px


def _limits(spec: dict) -> tuple[int, int]:
    from .visibility import DEFAULT_MIN_VISIBLE_PX

    return int(spec.get("min_visible_px", DEFAULT_MIN_VISIBLE_PX)), MAX_TRIES


def sample_anomalies(spec: dict, seed: int, index: int, slots, models_mm: dict, visible=None,
                     dropped: list | None = None) -> list[Anomaly]:
    """Anomalies of sample ``index``. ``slots``: scene.PartSlot list (extra slots included);
    ``models_mm``: slot key -> (vertices mm, faces) in the model frame (clean).

    ``visible`` (:class:`polar_render.visibility.VisibleSurface` of the clean sample): centres
    are drawn on surface points the camera sees, and an anomaly whose estimated projected
    size stays below ``min_visible_px`` after ``MAX_TRIES`` draws is dropped; each drop is
    appended to ``dropped`` as ``{"class", "reason"}``. Without ``visible`` (geometry-only
    callers) centres are drawn area-uniformly over the part, hidden faces included."""
    if not spec or not spec.get("classes"):
        return []
    rng = rng_for(seed, index, STREAM_ANOMALY)
    if rng.uniform() >= float(spec.get("probability", 0.5)):
        return []
    lo, hi = check_range(spec.get("count", 1), "anomalies.count")
    names = sorted(spec["classes"])
    weights = np.array([float(spec["classes"][n].get("weight", 1.0)) for n in names])
    n = min(int(rng.integers(int(lo), int(hi) + 1)), len(names))
    chosen = rng.choice(len(names), size=n, replace=False, p=weights / weights.sum())
    if callable(visible):   # built lazily: only anomalous samples pay for the AOV pass
        visible = visible()
    ctx = _Context(rng, [s for s in slots if not s.key.startswith("x")], models_mm, visible, *_limits(spec))
    out = []
    for k in sorted(chosen):
        name = names[k]
        c = spec["classes"][name]
        if name in REGION_CLASSES and c.get("faces") is None and spec.get("faces") is not None:
            c = {**c, "faces": spec["faces"]}   # anomalies.faces: the default region of surface classes
        try:
            a = _SAMPLERS[name](ctx, name, c, f"anomalies.classes.{name}")
        except _Dropped as why:
            if dropped is not None:
                dropped.append({"class": name, "reason": str(why)})
            continue
        if a is not None:
            out.append(a)
    return out


def unlabelled_events(events: list[Anomaly], table: list[dict] | None) -> list[dict]:
    """Sampled anomalies that left no pixel in the mask (hidden after all, or not applicable):
    recorded as dropped, never labelled."""
    seen = {(t["class"], t["instance"]) for t in table or []}
    return [{"class": a.cls, "instance": a.instance, "reason": "no visible pixel after rendering"}
            for a in events if (a.cls, a.instance) not in seen]


class _Dropped(Exception):
    """An anomaly that cannot be placed visibly (the message says why)."""


@dataclass
class _Context:
    rng: np.random.Generator
    base_slots: list
    models_mm: dict
    visible: object
    min_px: int
    tries: int
    _edges: dict = field(default_factory=dict)
    _regions: dict = field(default_factory=dict)

    def longest_edge(self, key: str) -> float:
        """Longest edge (mm) of a slot's clean mesh, computed once per slot and sample."""
        if key not in self._edges:
            self._edges[key] = float(max_edge(*self.models_mm[key]).max())
        return self._edges[key]

    def targets(self, parts) -> list:
        return [s for s in self.base_slots if s.part in parts]

    def allowed(self, slot, region: dict | None) -> np.ndarray | None:
        """bool (F,) faces of a slot's clean mesh inside ``region`` (None: no region)."""
        if region is None:
            return None
        key = (slot.key, repr(sorted(region.items())))
        if key not in self._regions:
            self._regions[key] = region_faces(region, slot.mesh, *self.models_mm[slot.key])
        return self._regions[key]

    def candidates(self, slot, region: dict | None = None) -> np.ndarray:
        """Indices into the slot's SlotView of the pixels an anomaly may be centred on: facing
        the camera within max_view_angle_deg, and on a face of ``region``."""
        sv = self.visible.slots.get(slot.key)
        if sv is None:
            return np.zeros(0, np.int64)
        idx = sv.candidates(self.visible.min_cos)
        allowed = self.allowed(slot, region)
        if allowed is None:
            return idx
        if sv.faces is None:
            raise RuntimeError("anomaly regions need the triangle index of each pixel (AOV prim_index)")
        return idx[allowed[np.clip(sv.faces[idx], 0, len(allowed) - 1)]]

    def pick_visible(self, cands, region: dict | None = None) -> tuple:
        """(slot, index into its SlotView) of a uniformly drawn candidate pixel over ``cands``."""
        per = [self.candidates(s, region) for s in cands]
        counts = np.array([len(c) for c in per], np.float64)
        if counts.sum() == 0:
            raise _Dropped("no visible surface of its parts" + (" in its region of faces" if region else ""))
        k = int(self.rng.choice(len(cands), p=counts / counts.sum()))
        idx = per[k]
        return cands[k], int(idx[int(self.rng.integers(len(idx)))])


def _part_extent(v: np.ndarray) -> float:
    return float((v.max(0) - v.min(0)).max())


def _surface_point(ctx: _Context, cands, region: dict | None = None):
    """(slot, centre mm, unit normal, projected px per mm^2) of a surface point (on a face of
    ``region`` when given)."""
    if ctx.visible is None:
        if region is not None:
            cands = [s for s in cands if ctx.allowed(s, region).any()]
            if not cands:
                raise _Dropped("no face of its parts lies in its region")
        target = cands[int(ctx.rng.integers(len(cands)))]
        v, f = ctx.models_mm[target.key]
        tri = v[f]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        if region is not None:
            area = area * ctx.allowed(target, region)
        fi = int(ctx.rng.choice(len(f), p=area / area.sum()))
        centre = ctx.rng.dirichlet([1.0, 1.0, 1.0]) @ tri[fi]
        nrm = np.cross(tri[fi, 1] - tri[fi, 0], tri[fi, 2] - tri[fi, 0])
        return target, centre, nrm / np.linalg.norm(nrm), np.inf
    s, j = ctx.pick_visible(cands, region)
    sv = ctx.visible.slots[s.key]
    nrm = sv.normals[j] / np.linalg.norm(sv.normals[j])
    return s, sv.points_mm[j].copy(), nrm, float(sv.px_per_mm[j] ** 2 * sv.cos_view[j])


def _sample_surface(ctx: _Context, name: str, c: dict, where: str):
    """dent, bump, scratch: a centre on a (visible) surface point, redrawn until its
    projected size reaches min_visible_px."""
    cands = ctx.targets(c["parts"])
    if not cands:
        return None
    region = c.get("faces")
    best = 0.0
    for _ in range(ctx.tries):
        target, centre, nrm, px_per_mm2 = _surface_point(ctx, cands, region)
        v = ctx.models_mm[target.key][0]
        extent = _part_extent(v)
        depth = _u(ctx.rng, c["depth_mm"], f"{where}.depth_mm") * (1.0 if name == "bump" else -1.0)
        params = {"part": target.part, "centre_mm": centre.tolist(), "normal": nrm.tolist(), "height_mm": depth,
                  **({"faces": region} if region is not None else {})}
        if name == "scratch":  # a planar arc through the centre, in the tangent plane
            t = np.cross(nrm, ctx.rng.normal(size=3))
            t /= np.linalg.norm(t)
            side = np.cross(nrm, t)
            length = _size(ctx.rng, c, "length", where, extent)
            bend = _u(ctx.rng, c["curvature_radius_mm"], f"{where}.curvature_radius_mm") * ctx.rng.choice([-1.0, 1.0])
            sv = np.linspace(-length / 2, length / 2, 64)
            curve = centre + sv[:, None] * t + (sv**2 / (2 * bend))[:, None] * side
            width = _size(ctx.rng, c, "width", where, extent)
            params.update(curve_mm=curve.tolist(), width_mm=width)
            area, target_mm = length * width, width / 4
        else:
            params["radius_mm"] = _size(ctx.rng, c, "radius", where, extent)
            area, target_mm = np.pi * params["radius_mm"] ** 2, params["radius_mm"] / 4
        params["ring_mm"] = min(target_mm, ctx.longest_edge(target.key))
        est = area * px_per_mm2
        if est >= ctx.min_px:
            return Anomaly(name, target.instance, {**params, "est_visible_px": float(min(est, 1e9))})
        best = max(best, est)
    raise _Dropped(f"projected size {best:.0f} px < min_visible_px {ctx.min_px} after {ctx.tries} draws")


def _sample_chip(ctx: _Context, name: str, c: dict, where: str):
    """A planar cut through the part's corner nearest a random box corner; with ``visible``
    only corners the camera sees."""
    cands = ctx.targets(c["parts"])
    if not cands:
        return None
    region = c.get("faces")
    if region is not None:   # corners of the region's faces only
        cands = [s for s in cands if ctx.allowed(s, region).any()]
        if not cands:
            raise _Dropped("no face of its parts lies in its region")
    best = 0.0
    for _ in range(ctx.tries):
        target = cands[int(ctx.rng.integers(len(cands)))]
        v, f = ctx.models_mm[target.key]
        lo, hi = v.min(0), v.max(0)
        box_corner = np.where(ctx.rng.uniform(size=3) < 0.5, lo, hi)
        pool = v if region is None else v[np.unique(f[ctx.allowed(target, region)])]
        corner = pool[np.argmin(np.linalg.norm(pool - box_corner, axis=1))]
        nrm = corner - (lo + hi) / 2
        nrm /= np.linalg.norm(nrm)
        depth = _u(ctx.rng, c["depth_mm"], f"{where}.depth_mm")
        params = {"part": target.part, "corner_mm": corner.tolist(), "normal": nrm.tolist(),
                  "plane_point_mm": (corner - depth * nrm).tolist(), "depth_mm": depth,
                  "ring_mm": min(depth / 3, ctx.longest_edge(target.key)),
                  **({"faces": region} if region is not None else {})}
        if ctx.visible is None:
            return Anomaly(name, target.instance, params)
        # seen when a point inside the cut (a third of the way in) is seen
        seen, ppm = ctx.visible.sees_point(target.instance, corner - depth / 3 * nrm, depth,
                                           [s.key for s in ctx.base_slots if s.instance == target.instance])
        est = 1.5 * depth**2 * ppm**2 if seen else 0.0     # ~ the three facets' visible share
        if est >= ctx.min_px:
            return Anomaly(name, target.instance, {**params, "est_visible_px": float(est)})
        best = max(best, est)
    raise _Dropped(f"no visible corner with projected size >= min_visible_px {ctx.min_px} "
                   f"after {ctx.tries} draws (best {best:.0f} px)")


def _sample_part(ctx: _Context, name: str, c: dict, where: str):
    """missing (the part must be seen), extra (checked after rendering)."""
    cands = ctx.targets(c["parts"])
    if not cands:
        return None
    if ctx.visible is not None and name == "missing":
        cands = [s for s in cands if ctx.visible.pixels_of(s.key) >= ctx.min_px]
        if not cands:
            raise _Dropped(f"none of {sorted(set(c['parts']))} shows >= {ctx.min_px} px")
    target = cands[int(ctx.rng.integers(len(cands)))]
    return Anomaly(name, target.instance, {"part": target.part})


def _sample_swapped(ctx: _Context, name: str, c: dict, where: str):
    pair = c["pairs"][int(ctx.rng.integers(len(c["pairs"])))]
    insts = sorted({s.instance for s in ctx.base_slots if s.part in pair})
    if ctx.visible is not None:
        insts = [i for i in insts if all(ctx.visible.pixels_of(s.key) >= ctx.min_px
                                         for s in ctx.base_slots if s.instance == i and s.part in pair)]
        if not insts:
            raise _Dropped(f"parts {list(pair)} are not both seen with >= {ctx.min_px} px")
    return Anomaly(name, int(ctx.rng.choice(insts)), {"parts": list(pair)})


def _sample_stain(ctx: _Context, name: str, c: dict, where: str):
    """Algorithm 1's jittered centres over the instance's stain parts (see stain.py); with
    ``visible``, centres whose stain shows fewer than min_visible_px pixel centres are removed
    (moved out of reach), and the stain is dropped when none is left."""
    cands = ctx.targets(c["parts"])
    if not cands:
        return None
    target = cands[int(ctx.rng.integers(len(cands)))]
    inst_slots = [s for s in ctx.base_slots if s.instance == target.instance and s.part in c["parts"]]
    allv = np.concatenate([ctx.models_mm[s.key][0] for s in inst_slots])
    cell = _u(ctx.rng, c["cell_mm"], f"{where}.cell_mm")
    origin, dims, centres = jittered_centres(allv.min(0), allv.max(0), cell, ctx.rng)
    sp = StainParams(radius_mm=_u(ctx.rng, c["radius_mm"], f"{where}.radius_mm"), cell_mm=cell,
                     frequency_per_mm=_u(ctx.rng, c.get("frequency_per_mm", 0.5), where),
                     amplitude_mm=_u(ctx.rng, c.get("amplitude_mm", 0.0), where),
                     gamma=_u(ctx.rng, c.get("gamma", 2.0), where), alpha=_u(ctx.rng, c.get("alpha", -0.2), where),
                     roughness_scale=_u(ctx.rng, c.get("roughness_scale", 1.0), where),
                     noise_offset=tuple(float(x) for x in ctx.rng.uniform(0, 200, 3)),
                     grid_origin_mm=origin, grid_dims=dims, centres_mm=centres)
    params = {"parts": [s.part for s in inst_slots]}
    region = c.get("faces")
    if region is not None:
        params["faces"] = region
    if ctx.visible is not None:
        views = [ctx.visible.slots.get(s.key) for s in inst_slots]
        inside = None if region is None else [_pixels_in_region(ctx, s, sv, region) for s, sv in zip(inst_slots, views)]
        kept = keep_visible_stains(sp, views, ctx.min_px, inside)
        if kept == 0:
            raise _Dropped(f"no stain shows >= {ctx.min_px} px" + (" inside its region of faces" if region else ""))
        params["visible_centres"] = kept
    elif region is not None:
        if keep_stains_in_region(sp, [(ctx.models_mm[s.key], ctx.allowed(s, region)) for s in inst_slots]) == 0:
            raise _Dropped("no stain lies inside its region of faces")
    return Anomaly(name, target.instance, params, stain=sp)


def _pixels_in_region(ctx: _Context, slot, sv, region: dict) -> np.ndarray | None:
    """bool per seen pixel of a SlotView: on a face of ``region``."""
    if sv is None:
        return None
    allowed = ctx.allowed(slot, region)
    if sv.faces is None:
        raise RuntimeError("anomaly regions need the triangle index of each pixel (AOV prim_index)")
    return allowed[np.clip(sv.faces, 0, len(allowed) - 1)]


STAIN_AWAY_MM = 1e6   # a removed stain centre is moved this far: no surface point is ever inside it


def keep_visible_stains(sp: StainParams, views, min_px: int, in_region=None) -> int:
    """Remove (move away) the centres of ``sp`` whose stain covers fewer than ``min_px`` of
    the seen pixel centres in ``views`` (SlotViews, None = unseen); return how many remain
    visible. Evaluated with Algorithm 1 itself (``stain.evaluate``) on the seen points.
    ``in_region`` (one bool per seen pixel of each view, or None): only pixels of the
    region count, and a centre whose stain covers a seen pixel outside it is removed too."""
    from .stain import evaluate

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
    from .refine import faces_reaching

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


def region_faces(region: dict, mesh_path, v_mm: np.ndarray, f: np.ndarray) -> np.ndarray:
    """bool (F,) faces of a part's clean mesh (model frame, mm) inside an anomaly region
    (``faces`` of the scene file): face normal within ``within_deg`` of ``normal`` and/or in
    the face group ``group`` stored with the mesh (``polar_render.meshes.face_groups``)."""
    from .meshes import face_groups

    mask = np.ones(len(f), bool)
    if region.get("normal") is not None:
        fn = np.cross(v_mm[f[:, 1]] - v_mm[f[:, 0]], v_mm[f[:, 2]] - v_mm[f[:, 0]])
        fn = fn / np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-300)
        mask &= fn @ np.asarray(region["normal"], np.float64) >= np.cos(np.radians(float(region.get("within_deg", 15.0)))) - 1e-9
    if region.get("group") is not None:
        g = face_groups(mesh_path).get(region["group"])
        mask &= g if g is not None and len(g) == len(f) else False
    return mask


_SAMPLERS = {"dent": _sample_surface, "bump": _sample_surface, "scratch": _sample_surface,
             "chip": _sample_chip, "missing": _sample_part, "extra": _sample_part,
             "swapped": _sample_swapped, "water_stain": _sample_stain}


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


def region_excess(p_mm: np.ndarray, a: Anomaly, exact_mm: float = CURVE_EXACT_MM) -> np.ndarray:
    """How far (mm) model-frame points lie outside the region a surface anomaly moves
    (<= 0 inside): ball of radius R (dent, bump), band of half-width w/2 around the curve
    (scratch), half-space beyond the cut plane (chip). Exact up to ``exact_mm`` outside;
    beyond that, scratch values are lower bounds (still > ``exact_mm``)."""
    if a.cls in ("dent", "bump"):
        return np.linalg.norm(p_mm - np.asarray(a.params["centre_mm"]), axis=1) - a.params["radius_mm"]
    if a.cls == "scratch":
        half = a.params["width_mm"] / 2
        return _curve_distance(p_mm, a.params["curve_mm"], exact_mm + half) - half
    if a.cls == "chip":
        return -(p_mm - np.asarray(a.params["plane_point_mm"])) @ np.asarray(a.params["normal"])
    raise ValueError(a.cls)


def displacement(v_mm: np.ndarray, a: Anomaly) -> np.ndarray:
    """Displacement (mm) of model-frame vertices; a function of position only, so split
    crease vertices stay welded, and exactly 0 outside the region.
    dent/bump: height * (1 - (d/R)^2)^2 along the centre's normal; scratch: the same
    profile across the groove, d = distance to the curve, R = w/2; chip: points beyond the
    cut plane are projected onto it."""
    n = np.asarray(a.params["normal"])
    if a.cls == "chip":
        over = np.maximum((v_mm - np.asarray(a.params["plane_point_mm"])) @ n, 0.0)
        return -over[:, None] * n[None, :]
    if a.cls == "scratch":
        half = a.params["width_mm"] / 2
        r = _curve_distance(v_mm, a.params["curve_mm"], exact_mm=1.01 * half) / half   # only r < 1 matters
    else:
        r = np.linalg.norm(v_mm - np.asarray(a.params["centre_mm"]), axis=1) / a.params["radius_mm"]
    w = np.where(r < 1.0, (1.0 - r**2) ** 2, 0.0)
    return (w * a.params["height_mm"])[:, None] * n[None, :]


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals over each vertex's own faces (split creases preserved);
    exact for every vertex all of whose faces are in ``f``."""
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20)


EXTRA_ROTATION = np.diag([-1.0, -1.0, 1.0])  # 180 degrees about the model z axis


def extra_offset_mm(spec: dict) -> np.ndarray:
    """Translation (mm, model frame) of the spare copy after ``EXTRA_ROTATION``: scene key
    ``anomalies.classes.extra.offset_mm`` (default 0; e.g. to move a turned plug out of the
    body it would otherwise sit inside)."""
    extra = ((spec or {}).get("classes") or {}).get("extra") or {}
    return np.asarray(extra.get("offset_mm", [0.0, 0.0, 0.0]), np.float64)


def refinement_zone(a: Anomaly):
    """``zone(v, f) -> bool (F,)``: triangles that reach anomaly ``a``'s region grown by one
    refined edge (``ring_mm``), for :func:`polar_render.refine.refine_zone`."""
    from .refine import faces_reaching

    ring = float(a.params["ring_mm"])
    n = np.asarray(a.params["normal"], np.float64)
    if a.cls in ("dent", "bump"):
        anchors, reach = np.asarray([a.params["centre_mm"]]), a.params["radius_mm"] + ring
    elif a.cls == "scratch":
        curve = np.asarray(a.params["curve_mm"])
        step = float(np.linalg.norm(np.diff(curve, axis=0), axis=1).max())
        anchors, reach = curve, a.params["width_mm"] / 2 + ring + step / 2
    else:  # chip: the half-space beyond the cut plane, grown by ring
        p0 = np.asarray(a.params["plane_point_mm"])
        return lambda v, f: ((v[f] - p0) @ n).max(1) >= -ring

    def zone(v, f):
        # only the side the defect is on: the back of a thin wall within reach keeps its mesh
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        return faces_reaching(v, f, anchors, reach) & (fn @ n > 0)
    return zone


def refined_mesh(v, f, n, anomalies: list[Anomaly], uv=None):
    """The clean mesh split finely enough around every surface anomaly (``refine.py``):
    target edge = ``ring_mm`` of each. Returns (v, f, n, uv), normals and texture coordinates
    (or None) following the split; the input when nothing is split."""
    from .refine import RefinementError, refine_zone

    for a in anomalies:
        try:
            v, f, n, uv, _ = refine_zone(v, f, n, refinement_zone(a), float(a.params["ring_mm"]), uv=uv)
        except RefinementError:
            # past the face budget the defect moves the existing vertices only; its mask is
            # still exact (computed from the rendered geometry), and it is dropped if nothing shows
            continue
    return v, f, n, uv


def geometry_edits(anomalies: list[Anomaly], slots, models_mm: dict, normals: dict,
                   texcoords: dict | None = None) -> dict:
    """slot key -> (vertices mm, normals or None, faces, texture coordinates or None) for
    slots whose geometry differs from clean, or None to hide a slot. Extra slots are hidden
    unless an ``extra`` anomaly uses them. Surface anomalies first refine the mesh around
    their region (coarse CAD meshes), so faces may differ from the clean mesh's; normals and
    ``texcoords`` (slot key -> (V, 2) or None; default none) follow the refinement."""
    texcoords = texcoords or {}
    edits: dict = {}
    active_extra = {(a.instance, a.params["part"]) for a in anomalies if a.cls == "extra"}
    for s in slots:
        if s.key.startswith("x") and (s.instance, s.part) not in active_extra:
            edits[s.key] = None
    for a in anomalies:
        if a.cls == "missing":
            for s in slots:
                if s.instance == a.instance and s.part == a.params["part"] and not s.key.startswith("x"):
                    edits[s.key] = None
    surface = [a for a in anomalies if a.cls in SURFACE]
    for s in slots:
        if s.key.startswith("x") or edits.get(s.key, 0) is None:
            continue
        mine = [a for a in surface if a.instance == s.instance and (a.cls != "chip" or s.part == a.params["part"])]
        if mine:
            edit = _displaced(mine, *models_mm[s.key], normals[s.key], texcoords.get(s.key))
            if edit is not None:
                edits[s.key] = edit
    return edits


def _displaced(anomalies: list[Anomaly], v0, f, n0, uv0=None):
    """(v, n, f, uv) of one slot with its surface anomalies applied, or None if nothing moves
    (texture coordinates are those of the refined, undisplaced surface point)."""
    v0, f, n0, uv0 = refined_mesh(v0, f, n0, anomalies, uv0)
    d = sum(displacement(v0, a) for a in anomalies)   # each a function of the clean position
    moved = np.any(d != 0, axis=1)
    if not moved.any():
        return None
    v = v0 + d
    n = None
    if n0 is not None:
        n = n0.copy()
        touched = np.zeros(len(v), bool)
        touched[f[np.any(moved[f], axis=1)].ravel()] = True
        local = f[np.any(touched[f], axis=1)]  # every face of every touched vertex
        n[touched] = vertex_normals(v, local)[touched]
    return v, n, f, uv0


def swap_materials(appearance: dict, anomalies: list[Anomaly]) -> dict:
    """Appearance with the materials of swapped part pairs exchanged (copy)."""
    swaps = [a for a in anomalies if a.cls == "swapped"]
    if not swaps:
        return appearance
    parts = [dict(p) for p in appearance["parts"]]
    for a in swaps:
        p0, p1 = a.params["parts"]
        i0 = next(k for k, p in enumerate(parts) if p["instance"] == a.instance and p["part"] == p0)
        i1 = next(k for k, p in enumerate(parts) if p["instance"] == a.instance and p["part"] == p1)
        keep = ("instance", "obj_id", "part")
        a0 = {k: v for k, v in parts[i0].items() if k not in keep}
        a1 = {k: v for k, v in parts[i1].items() if k not in keep}
        parts[i0] = {**{k: parts[i0][k] for k in keep}, **a1}
        parts[i1] = {**{k: parts[i1][k] for k in keep}, **a0}
    return {**appearance, "parts": parts}


@dataclass
class AovView:
    """Per-pixel exact geometry of one AOV pass: slot index (-1 = none), world position (m),
    unit normal, z-depth (m)."""
    slot: np.ndarray
    pos: np.ndarray
    nrm: np.ndarray
    depth: np.ndarray
    face: np.ndarray | None = None    # triangle index within the slot's mesh (-1 / any where slot is -1)


DEPTH_EPS_M = 1e-6                    # 1 um
NORMAL_EPS_COS = np.cos(np.radians(0.1))


def _model_points(view: AovView, sel: np.ndarray, T_m2w: np.ndarray) -> np.ndarray:
    """Model-frame points (mm) of the selected pixels."""
    w2m = np.linalg.inv(T_m2w)
    p = view.pos[sel].astype(np.float64)
    return (p @ w2m[:3, :3].T + w2m[:3, 3]) * 1000.0


def instance_masks(anomalies: list[Anomaly], slots, anom: AovView, clean: AovView | None,
                   poses: dict, supersampling: int = 1) -> tuple[np.ndarray, list[dict]]:
    """``anomaly_mask`` (uint16) and the table of visible instances (see module docstring).

    The views may be rendered at ``supersampling`` x the image resolution (s x s exact
    rays per pixel); the mask is then pooled with :func:`pool_mask`.
    """
    h, w = anom.slot.shape
    mask = np.zeros((h, w), np.uint16)
    table: list[dict] = []
    if clean is not None:
        differs = ((anom.slot != clean.slot) | (np.abs(anom.depth - clean.depth) > DEPTH_EPS_M)
                   | (np.sum(anom.nrm * clean.nrm, axis=-1) < NORMAL_EPS_COS))
    else:
        differs = np.zeros((h, w), bool)

    def slot_ids(pred) -> list[int]:
        return [k for k, s in enumerate(slots) if pred(s)]

    def add(a: Anomaly, pix: np.ndarray, extra: dict | None = None) -> None:
        pix = pix & (mask == 0)
        if not pix.any():
            return
        k = len(table) + 1
        mask[pix] = k
        table.append({"id": k, "class": a.cls, "kind": a.kind, "instance": a.instance,
                      **_exact_contrast(a, pix, anom, clean), **(extra or {})})

    order = sorted(anomalies, key=lambda a: MASK_ORDER.index(a.cls))
    for a in order:
        if a.cls == "missing":
            ids = slot_ids(lambda s: s.instance == a.instance and s.part == a.params["part"] and not s.is_extra)
            add(a, differs & np.isin(clean.slot, ids))
        elif a.cls == "extra":
            ids = slot_ids(lambda s: s.instance == a.instance and s.part == a.params["part"] and s.is_extra)
            add(a, differs & np.isin(anom.slot, ids))
        elif a.cls in SURFACE:
            ids = slot_ids(lambda s: s.instance == a.instance and not s.is_extra
                           and (a.cls != "chip" or s.part == a.params["part"]))
            region = np.zeros((h, w), bool)
            for view in (anom, clean):
                sel = np.isin(view.slot, ids)
                pts = _model_points(view, sel, poses[a.instance])
                # plus one edge: shading normals of the first vertex ring outside change too
                reach = a.params.get("ring_mm", 0.0) + 0.01
                near = region_excess(pts, a, exact_mm=reach + 0.1) <= reach
                region[np.nonzero(sel)[0][near], np.nonzero(sel)[1][near]] = True
            add(a, differs & region, {"part": a.params["part"]})
        elif a.cls == "swapped":
            ids = slot_ids(lambda s: s.instance == a.instance and s.part in a.params["parts"] and not s.is_extra)
            add(a, np.isin(anom.slot, ids), {"parts": a.params["parts"]})
        elif a.cls == "water_stain":
            from .stain import evaluate

            ids = slot_ids(lambda s: s.instance == a.instance and s.part in a.params["parts"] and not s.is_extra)
            sel = np.isin(anom.slot, ids)
            if not sel.any():
                continue
            ys, xs = np.nonzero(sel)
            inside, _, centre, delta = evaluate(_model_points(anom, sel, poses[a.instance]), a.stain)
            for c in np.unique(centre[inside]):
                pix = np.zeros((h, w), bool)
                m = inside & (centre == c)
                pix[ys[m], xs[m]] = True
                add(a, pix, {"centre_mm": a.stain.centres_mm[c].tolist(),
                             "reflectance_delta": float(np.mean(np.abs(delta[m])))})
    return pool_mask(mask, table, supersampling)


def _exact_contrast(a: Anomaly, pix: np.ndarray, anom: AovView, clean: AovView | None) -> dict:
    """A noise-free contrast of one instance from the exact AOV passes (``contrast`` and its
    unit ``contrast_measure``): geometric surface defects, the median angle (deg) between
    anomalous and clean shading normals over the instance's pixels; missing/extra parts,
    1 (presence). Stains and swapped parts get theirs from the materials (``render.py``)."""
    if a.cls in SURFACE and clean is not None:
        both = pix & (anom.slot >= 0) & (clean.slot >= 0)
        cos = np.clip(np.sum(anom.nrm[both] * clean.nrm[both], axis=-1), -1.0, 1.0)
        dev = float(np.median(np.degrees(np.arccos(cos)))) if cos.size else 0.0
        return {"contrast": dev, "contrast_measure": "normal_deviation_deg"}
    if a.cls in ("missing", "extra"):
        return {"contrast": 1.0, "contrast_measure": "presence"}
    return {}


def pool_mask(mask_ss: np.ndarray, table: list[dict], s: int) -> tuple[np.ndarray, list[dict]]:
    """Pool an s x s supersampled instance mask to pixels: a pixel belongs to the instance
    covering most of its subsamples whenever any subsample is covered (the mask then holds
    every pixel whose footprint the anomaly touches, like the anti-aliased render).
    Adds area_px/bbox, drops instances left without pixels and renumbers ids 1..K."""
    h, w = mask_ss.shape[0] // s, mask_ss.shape[1] // s
    blocks = mask_ss[: h * s, : w * s].reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, s * s)
    best = np.zeros((h, w), mask_ss.dtype)
    best_n = np.zeros((h, w), np.int64)
    for k in range(s * s):
        v = blocks[..., k]
        n = (blocks == v[..., None]).sum(-1)
        better = (v != 0) & (n > best_n)
        best = np.where(better, v, best)
        best_n = np.where(better, n, best_n)
    out = np.zeros((h, w), np.uint16)
    final = []
    for entry in table:
        pix = best == entry["id"]
        if not pix.any():
            continue
        k = len(final) + 1
        out[pix] = k
        ys, xs = np.nonzero(pix)
        final.append({**entry, "id": k, "area_px": int(pix.sum()),
                      "coverage_px": float((blocks == entry["id"]).sum() / (s * s)),
                      "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]})
    return out, final
