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
                            surface point. Its resolution is the mesh's (assets: <= 0.8 mm
                            edges), so widths below ~1 mm are not representable.
``chip``        defect      a chipped corner: the part's vertices beyond a plane cutting the
                            corner at ``depth_mm`` are projected onto it (a flat facet).
``missing``     defect      a part is removed (its triangles collapse to a point).
``extra``       defect      a second copy of a part, turned 180 degrees about the object's
                            model z axis (e.g. a second USB plug at the other end).
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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .randomize import rng_for
from .config import check_range
from .stain import StainParams, jittered_centres

STREAM_ANOMALY = 3
CLASSES = {"water_stain": "impurity", "dent": "defect", "bump": "defect", "scratch": "defect", "chip": "defect",
           "missing": "defect", "extra": "defect", "swapped": "defect"}
MASK_ORDER = ("missing", "extra", "chip", "dent", "bump", "scratch", "swapped", "water_stain")
SURFACE = {"dent", "bump", "scratch", "chip"}      # vertex displacements of a part's surface
GEOMETRIC = SURFACE | {"missing", "extra"}
CLASS_KEYS = {
    "water_stain": {"weight", "parts", "radius_mm", "cell_mm", "frequency_per_mm", "amplitude_mm", "gamma",
                    "alpha", "roughness_scale"},
    "dent": {"weight", "parts", "radius_mm", "depth_mm"},
    "scratch": {"weight", "parts", "length_mm", "width_mm", "depth_mm", "curvature_radius_mm"},
    "chip": {"weight", "parts", "depth_mm"},
    "bump": {"weight", "parts", "radius_mm", "depth_mm"},
    "missing": {"weight", "parts"},
    "extra": {"weight", "parts"},
    "swapped": {"weight", "pairs"},
}


def validate(spec: dict, part_names: set[str], where: str) -> dict:
    """Check an ``anomalies`` section; raise ValueError naming the key."""
    from .config import SceneConfigError

    if not spec:
        return {}
    unknown = set(spec) - {"probability", "count", "classes", "mask_supersampling"}
    if unknown:
        raise SceneConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    check_range(spec.get("probability", 0.5), f"{where}.probability", 0.0, 1.0)
    check_range(spec.get("count", 1), f"{where}.count", 1, len(CLASSES))
    for name, c in (spec.get("classes") or {}).items():
        w = f"{where}.classes.{name}"
        if name not in CLASSES:
            raise SceneConfigError(f"{w}: unknown class; known: {sorted(CLASSES)}")
        extra = set(c) - CLASS_KEYS[name]
        if extra:
            raise SceneConfigError(f"{w}: unknown key(s) {sorted(extra)}; allowed: {sorted(CLASS_KEYS[name])}")
        for p in c.get("parts", []) + [x for pair in c.get("pairs", []) for x in pair]:
            if p not in part_names:
                raise SceneConfigError(f"{w}: unknown part {p!r}; parts: {sorted(part_names)}")
        if name == "water_stain":
            r = check_range(c["radius_mm"], f"{w}.radius_mm", 0.0)
            g = check_range(c["cell_mm"], f"{w}.cell_mm", 0.0)
            a = check_range(c.get("amplitude_mm", 0.0), f"{w}.amplitude_mm", 0.0)
            if r[1] + a[1] >= g[0] / 2:
                raise SceneConfigError(f"{w}: radius_mm + amplitude_mm must stay below cell_mm / 2 "
                                       "(the 8-cell nearest-centre search is exact only then)")
            for k in ("frequency_per_mm", "gamma", "roughness_scale"):
                check_range(c.get(k, 1.0), f"{w}.{k}", 0.0)
            check_range(c.get("alpha", -0.2), f"{w}.alpha", -1.0, 1.0)
        if name in ("dent", "bump"):
            check_range(c["radius_mm"], f"{w}.radius_mm", 0.0)
        if name in ("dent", "bump", "scratch", "chip"):
            check_range(c["depth_mm"], f"{w}.depth_mm", 0.0)
        if name == "scratch":
            for k in ("length_mm", "width_mm", "curvature_radius_mm"):
                check_range(c[k], f"{w}.{k}", 0.0)
    return spec


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


def sample_anomalies(spec: dict, seed: int, index: int, slots, models_mm: dict) -> list[Anomaly]:
    """Anomalies of sample ``index``. ``slots``: scene.PartSlot list (extra slots included);
    ``models_mm``: slot key -> (vertices mm, faces) in the model frame (clean)."""
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
    base_slots = [s for s in slots if not s.key.startswith("x")]
    out = []
    for k in sorted(chosen):
        name = names[k]
        c = spec["classes"][name]
        where = f"anomalies.classes.{name}"
        if name == "swapped":
            pair = c["pairs"][int(rng.integers(len(c["pairs"])))]
            cands = sorted({s.instance for s in base_slots if s.part in pair})
            inst = int(rng.choice(cands))
            out.append(Anomaly(name, inst, {"parts": list(pair)}))
            continue
        cands = [s for s in base_slots if s.part in c["parts"]]
        if not cands:
            continue
        target = cands[int(rng.integers(len(cands)))]
        if name == "water_stain":
            inst_slots = [s for s in base_slots if s.instance == target.instance and s.part in c["parts"]]
            allv = np.concatenate([models_mm[s.key][0] for s in inst_slots])
            cell = _u(rng, c["cell_mm"], f"{where}.cell_mm")
            origin, dims, centres = jittered_centres(allv.min(0), allv.max(0), cell, rng)
            sp = StainParams(radius_mm=_u(rng, c["radius_mm"], f"{where}.radius_mm"), cell_mm=cell,
                             frequency_per_mm=_u(rng, c.get("frequency_per_mm", 0.5), where),
                             amplitude_mm=_u(rng, c.get("amplitude_mm", 0.0), where),
                             gamma=_u(rng, c.get("gamma", 2.0), where), alpha=_u(rng, c.get("alpha", -0.2), where),
                             roughness_scale=_u(rng, c.get("roughness_scale", 1.0), where),
                             noise_offset=tuple(float(x) for x in rng.uniform(0, 200, 3)),
                             grid_origin_mm=origin, grid_dims=dims, centres_mm=centres)
            out.append(Anomaly(name, target.instance, {"parts": [s.part for s in inst_slots]}, stain=sp))
        elif name in ("dent", "bump", "scratch"):
            v, f = models_mm[target.key]
            tri = v[f]
            area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
            fi = int(rng.choice(len(f), p=area / area.sum()))
            b = rng.dirichlet([1.0, 1.0, 1.0])
            centre = b @ tri[fi]
            nrm = np.cross(tri[fi, 1] - tri[fi, 0], tri[fi, 2] - tri[fi, 0])
            nrm /= np.linalg.norm(nrm)
            depth = _u(rng, c["depth_mm"], f"{where}.depth_mm") * (1.0 if name == "bump" else -1.0)
            edge = float(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max())
            params = {"part": target.part, "centre_mm": centre.tolist(), "normal": nrm.tolist(),
                      "height_mm": depth, "ring_mm": edge}
            if name == "scratch":  # a planar arc through the centre, in the tangent plane
                t = np.cross(nrm, rng.normal(size=3))
                t /= np.linalg.norm(t)
                side = np.cross(nrm, t)
                length = _u(rng, c["length_mm"], f"{where}.length_mm")
                bend = _u(rng, c["curvature_radius_mm"], f"{where}.curvature_radius_mm") * rng.choice([-1.0, 1.0])
                sv = np.linspace(-length / 2, length / 2, 64)
                curve = centre + sv[:, None] * t + (sv**2 / (2 * bend))[:, None] * side
                params.update(curve_mm=curve.tolist(), width_mm=_u(rng, c["width_mm"], f"{where}.width_mm"))
            else:
                params["radius_mm"] = _u(rng, c["radius_mm"], f"{where}.radius_mm")
            out.append(Anomaly(name, target.instance, params))
        elif name == "chip":  # planar cut through the part's corner nearest a random box corner
            v, f = models_mm[target.key]
            lo, hi = v.min(0), v.max(0)
            box_corner = np.where(rng.uniform(size=3) < 0.5, lo, hi)
            corner = v[np.argmin(np.linalg.norm(v - box_corner, axis=1))]
            n = corner - (lo + hi) / 2
            n /= np.linalg.norm(n)
            depth = _u(rng, c["depth_mm"], f"{where}.depth_mm")
            tri = v[f]
            edge = float(np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max())
            out.append(Anomaly(name, target.instance, {
                "part": target.part, "corner_mm": corner.tolist(), "normal": n.tolist(),
                "plane_point_mm": (corner - depth * n).tolist(), "depth_mm": depth, "ring_mm": edge}))
        elif name == "missing":
            out.append(Anomaly(name, target.instance, {"part": target.part}))
        elif name == "extra":
            out.append(Anomaly(name, target.instance, {"part": target.part}))
    return out


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


def geometry_edits(anomalies: list[Anomaly], slots, models_mm: dict, normals: dict) -> dict:
    """slot key -> (vertices mm, normals or None) for slots whose geometry differs from
    clean, or None to hide a slot. Extra slots are hidden unless an ``extra`` anomaly uses them."""
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
        elif a.cls in SURFACE:
            for s in slots:
                if s.instance != a.instance or s.key.startswith("x") or edits.get(s.key, 0) is None:
                    continue
                if a.cls == "chip" and s.part != a.params["part"]:
                    continue  # the cut removes material from its own part only
                v0, f = models_mm[s.key]
                v = edits[s.key][0] if s.key in edits else v0
                d = displacement(v0, a)
                moved = np.any(d != 0, axis=1)
                if not moved.any():
                    continue
                v = v + d
                n = (edits[s.key][1] if s.key in edits else normals[s.key])
                n = n.copy() if n is not None else None
                if n is not None:
                    touched = np.zeros(len(v), bool)
                    touched[f[np.any(moved[f], axis=1)].ravel()] = True
                    local = f[np.any(touched[f], axis=1)]  # every face of every touched vertex
                    n[touched] = vertex_normals(v, local)[touched]
                edits[s.key] = (v, n)
    return edits


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
        table.append({"id": k, "class": a.cls, "kind": a.kind, "instance": a.instance, **(extra or {})})

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
            inside, _, centre, _ = evaluate(_model_points(anom, sel, poses[a.instance]), a.stain)
            ys, xs = np.nonzero(sel)
            for c in np.unique(centre[inside]):
                pix = np.zeros((h, w), bool)
                m = inside & (centre == c)
                pix[ys[m], xs[m]] = True
                add(a, pix, {"centre_mm": a.stain.centres_mm[c].tolist()})
    return pool_mask(mask, table, supersampling)


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
