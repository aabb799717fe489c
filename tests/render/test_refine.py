"""Adaptive refinement (polar_render/refine.py): defects work on coarse CAD meshes."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from polar_render.anomalies import Anomaly, displacement, geometry_edits, refined_mesh
from polar_render.refine import MAX_FACES, RefinementError, max_edge, refine_zone


def _box():
    """A 20 mm cube of 12 triangles, vertices shared (no normals)."""
    b = trimesh.creation.box(extents=(20.0, 20.0, 20.0))
    assert len(b.faces) == 12
    return np.asarray(b.vertices, float), np.asarray(b.faces, np.int64)


class _Slot:
    def __init__(self, key="i1_box", part="box"):
        self.key, self.instance, self.part = key, 1, part


def _dent(radius=3.0, depth=0.5):
    return Anomaly("dent", 1, {"part": "box", "centre_mm": [2.0, -1.0, 10.0], "normal": [0.0, 0.0, 1.0],
                               "height_mm": -depth, "radius_mm": radius, "ring_mm": radius / 4})


def test_dent_on_a_12_triangle_box_is_applied():
    v, f = _box()
    a = _dent()
    assert not np.any(displacement(v, a))            # no vertex of the coarse box lies inside the dent
    edits = geometry_edits([a], [_Slot()], {"i1_box": (v, f)}, {"i1_box": None})
    ve, ne, fe, uve = edits["i1_box"]
    assert ne is None and uve is None and len(fe) > 12
    # the dent is as deep as asked, and removes the analytic volume pi R^2 depth / 3 (a crack or
    # a missed region would change the enclosed volume)
    top = ve[ve[:, 2] > 0, 2]
    assert top.min() == pytest.approx(10.0 - 0.5, abs=0.02)
    lost = trimesh.Trimesh(v, f, process=False).volume - trimesh.Trimesh(ve, fe, process=False).volume
    assert lost == pytest.approx(np.pi * 3.0**2 * 0.5 / 3, rel=0.08)
    # only the top face near the dent was refined: faces far away keep their size
    far = np.abs(ve[fe].mean(1)[:, 2] + 10.0) < 1e-9            # bottom face
    assert far.sum() == 2


def test_refinement_meets_the_target_only_in_the_zone():
    v, f = _box()
    a = _dent(radius=2.0)
    vr, fr, _, _ = refined_mesh(v, f, None, [a])
    centres = vr[fr].mean(1)
    near = np.linalg.norm(centres - a.params["centre_mm"], axis=1) < a.params["radius_mm"]
    assert near.any() and max_edge(vr, fr[near]).max() <= a.params["ring_mm"] + 1e-9
    assert max_edge(vr, fr[~near]).max() > 10.0               # coarse elsewhere


def test_no_crack_at_t_junctions():
    """Every vertex created on an edge of a face left coarse does not move."""
    v, f = _box()
    a = _dent(radius=4.0)
    vr, fr, _, _ = refined_mesh(v, f, None, [a])
    d = displacement(vr, a)
    moved = np.any(d != 0, axis=1)
    coarse = max_edge(vr, fr) > 5.0
    tri = vr[fr[coarse]]
    for t in tri:   # vertices lying on an edge of a coarse face (T-junctions)
        for k in range(3):
            p, q = t[k], t[(k + 1) % 3]
            u = np.clip((vr - p) @ (q - p) / ((q - p) @ (q - p)), 0, 1)
            on = np.linalg.norm(vr - (p + u[:, None] * (q - p)), axis=1) < 1e-9
            assert not np.any(moved & on)


def test_vertex_normals_follow_refinement():
    b = trimesh.creation.icosphere(subdivisions=1, radius=10.0)
    v, f = np.asarray(b.vertices, float), np.asarray(b.faces, np.int64)
    n = v / np.linalg.norm(v, axis=1, keepdims=True)
    a = Anomaly("bump", 1, {"part": "box", "centre_mm": n[0] * 10, "normal": n[0], "height_mm": 0.3,
                            "radius_mm": 2.0, "ring_mm": 0.5})
    vr, fr, nr, _ = refined_mesh(v, f, n, [a])
    assert len(nr) == len(vr) and np.allclose(np.linalg.norm(nr, axis=1), 1.0)


def test_refinement_budget_is_enforced():
    v, f = _box()
    with pytest.raises(RefinementError):
        refine_zone(v, f, None, lambda vv, ff: np.ones(len(ff), bool), target_mm=1e-4)
    assert MAX_FACES > 100_000


def test_texture_coordinates_follow_refinement():
    """UVs (e.g. the brushing direction of brushed_conductor) are interpolated at the new
    vertices: an affine parametrisation stays exact, and a displaced vertex keeps the uv of
    its surface point."""
    v, f = _box()
    A, b = np.array([[0.02, 0.01, 0.0], [-0.01, 0.03, 0.005]]), np.array([0.5, 0.25])
    uv = v @ A.T + b
    a = _dent(radius=2.0)
    vr, fr, _, uvr = refined_mesh(v, f, None, [a], uv)
    assert len(fr) > 12 and uvr.shape == (len(vr), 2)
    assert np.allclose(uvr, vr @ A.T + b, atol=1e-12)
    ve, _, fe, uve = geometry_edits([a], [_Slot()], {"i1_box": (v, f)}, {"i1_box": None}, {"i1_box": uv})["i1_box"]
    assert np.array_equal(fe, fr) and np.array_equal(uve, uvr) and not np.array_equal(ve, vr)
