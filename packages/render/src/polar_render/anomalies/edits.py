"""Geometry edits of one anomalous sample: which part slots are hidden, and the displaced
meshes of the slots that surface anomalies move.

Units: millimetres, model frame. Spare (extra) slots are hidden unless an anomaly shows
them (``AnomalyClass.shows_extra``); base slots an anomaly removes are hidden
(``AnomalyClass.hides``); a base slot a surface anomaly applies to is first refined around
the anomaly's zone (``refine.py``: coarse CAD meshes) and then displaced by the sum of its
anomalies' displacements, each a function of the clean position. Shading normals of the
moved vertices are recomputed from the displaced faces around them.
"""
from __future__ import annotations

import numpy as np

from polar_render.anomalies import builtin  # noqa: F401  (registers the shipped classes)
from polar_render.anomalies.refine import RefinementError, refine_zone
from polar_render.anomalies.registry import Anomaly, get


def displacement(v_mm: np.ndarray, a: Anomaly) -> np.ndarray:
    """Displacement (mm) of model-frame vertices by the surface anomaly ``a``; exactly 0
    outside its region (``geometric.py``)."""
    return get(a.cls).displacement(v_mm, a)


def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals over each vertex's own faces (split creases preserved);
    exact for every vertex all of whose faces are in ``f``."""
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-20)


def refined_mesh(v, f, n, anomalies: list[Anomaly], uv=None):
    """The clean mesh split finely enough around every surface anomaly (``refine.py``):
    target edge = ``ring_mm`` of each. Returns (v, f, n, uv), normals and texture coordinates
    (or None) following the split; the input when nothing is split."""
    for a in anomalies:
        try:
            v, f, n, uv, _ = refine_zone(v, f, n, get(a.cls).refinement_zone(a), float(a.params["ring_mm"]), uv=uv)
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
    for s in slots:
        if s.key.startswith("x") and not any(get(a.cls).shows_extra(a, s) for a in anomalies):
            edits[s.key] = None
    for a in anomalies:
        for s in slots:
            if not s.key.startswith("x") and get(a.cls).hides(a, s):
                edits[s.key] = None
    surface = [a for a in anomalies if get(a.cls).surface]
    for s in slots:
        if s.key.startswith("x") or edits.get(s.key, 0) is None:
            continue
        mine = [a for a in surface if get(a.cls).applies_to(a, s)]
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
