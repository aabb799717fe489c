"""Adaptive mesh refinement around a surface defect (dent, bump, scratch, chip).

A displacement defect moves mesh *vertices*; on a coarse CAD mesh (a 40 mm face made of two
triangles) no vertex lies inside a 3 mm dent and the defect would silently vanish. Before
displacing, every triangle that reaches the defect's *zone* (its region grown by
``margin_mm``) is split 1 -> 4 (edge midpoints, ``trimesh.remesh.subdivide``), repeatedly,
until every triangle reaching the zone has edges <= ``target_mm``.

Why all zone triangles at once, whatever their size: a triangle split next to an unsplit
neighbour leaves a T-junction (a midpoint on the neighbour's edge); displacing that midpoint
would open a crack. Splitting every triangle that reaches the zone in the same pass keeps
shared edges shared inside the zone; the remaining T-junctions sit on edges of triangles
outside the zone, where the displacement is exactly 0 (the zone contains the region plus a
margin), so nothing moves there. Split crease vertices (same position, other normal) get
their midpoints at the same positions and stay welded, as the displacement is a function
of position only.

Units: millimetres, model frame. Vertex normals (when the mesh has them) are interpolated
linearly at the new vertices and renormalised; texture coordinates (when it has them, e.g.
the brushing direction of ``brushed_conductor``) are interpolated linearly, which keeps the
parametrisation of each original triangle exactly (a midpoint's uv is its edge's midpoint).
"""
from __future__ import annotations

import numpy as np

MAX_PASSES = 8            # 4^8 = 65536x the faces reaching the zone at most
MAX_FACES = 400_000       # refuse (the caller drops the defect) rather than exhaust memory


class RefinementError(ValueError):
    """The mesh cannot be refined enough within the face budget."""


def _closest_distance(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """(P, F) distances (mm) from each point to each triangle (exact, trimesh)."""
    import trimesh

    P, F = len(points), len(tri)
    q = np.repeat(points, F, axis=0)
    t = np.tile(tri, (P, 1, 1))
    cp = trimesh.triangles.closest_point(t, q)
    return np.linalg.norm(cp - q, axis=1).reshape(P, F)


def faces_reaching(v: np.ndarray, f: np.ndarray, anchors: np.ndarray, radius_mm: float) -> np.ndarray:
    """Boolean (F,) mask: triangles within ``radius_mm`` of any anchor point (mm).

    A cheap bounding-box test first; the exact point-triangle distance only for candidates."""
    tri = v[f]
    lo, hi = tri.min(1), tri.max(1)
    a_lo, a_hi = anchors.min(0) - radius_mm, anchors.max(0) + radius_mm
    cand = np.flatnonzero(np.all((hi >= a_lo) & (lo <= a_hi), axis=1))
    out = np.zeros(len(f), bool)
    if cand.size == 0:
        return out
    # box test per anchor keeps the exact part small
    near = np.zeros(cand.size, bool)
    for start in range(0, len(anchors), 16):
        a = anchors[start:start + 16]
        d = _closest_distance(a, tri[cand])
        near |= (d <= radius_mm).any(0)
    out[cand[near]] = True
    return out


def max_edge(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(F,) longest edge (mm) of each triangle."""
    tri = v[f]
    return np.linalg.norm(tri - np.roll(tri, 1, axis=1), axis=2).max(1)


def refine_zone(v: np.ndarray, f: np.ndarray, n: np.ndarray | None, zone, target_mm: float,
                uv: np.ndarray | None = None):
    """Split triangles reaching ``zone`` until they all have edges <= ``target_mm``.

    ``zone(v, f) -> bool (F,)`` selects the triangles reaching the zone; ``n`` (V, 3) vertex
    normals and ``uv`` (V, 2) texture coordinates follow the split (or stay None). Returns
    ``(v, f, n, uv, passes)``; unchanged arrays (and 0 passes) when no triangle needs it.
    Raises :class:`RefinementError` past ``MAX_FACES`` faces or ``MAX_PASSES`` passes."""
    import trimesh

    if target_mm <= 0:
        raise RefinementError(f"refinement target must be > 0 mm, got {target_mm}")
    passes = 0
    while True:
        sel = zone(v, f)
        if not sel.any() or max_edge(v, f[sel]).max() <= target_mm:
            return v, f, n, uv, passes
        if passes == MAX_PASSES or len(f) + 3 * int(sel.sum()) > MAX_FACES:
            raise RefinementError(f"mesh too coarse: {passes} passes, {len(f)} faces, zone edges still "
                                  f"> {target_mm:.3f} mm")
        attrs = {k: a for k, a in (("normal", n), ("uv", uv)) if a is not None}
        out = trimesh.remesh.subdivide(v, f, face_index=np.flatnonzero(sel), vertex_attributes=attrs or None)
        v, f = np.asarray(out[0], np.float64), np.asarray(out[1], np.int64)
        if n is not None:
            n = np.asarray(out[2]["normal"], np.float64)
            n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
        if uv is not None:
            uv = np.asarray(out[2]["uv"], np.float64)
        passes += 1
