"""Adaptive refinement (polar_render.anomalies.refine): defects work on coarse CAD meshes."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from polar_render.anomalies.edits import displacement, geometry_edits, refined_mesh
from polar_render.anomalies.registry import Anomaly
from polar_render.anomalies.refine import MAX_FACES, RefinementError, max_edge, refine_zone

from tests.render.anomalies.conftest import Slot, box_dent, box_mesh


def test_refinement_meets_the_target_only_in_the_zone():
    v, f = box_mesh()
    a = box_dent(radius=2.0)
    vr, fr, _, _ = refined_mesh(v, f, None, [a])
    centres = vr[fr].mean(1)
    near = np.linalg.norm(centres - a.params["centre_mm"], axis=1) < a.params["radius_mm"]
    assert near.any() and max_edge(vr, fr[near]).max() <= a.params["ring_mm"] + 1e-9
    assert max_edge(vr, fr[~near]).max() > 10.0               # coarse elsewhere


def test_no_crack_at_t_junctions():
    """Every vertex created on an edge of a face left coarse does not move."""
    v, f = box_mesh()
    a = box_dent(radius=4.0)
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
    v, f = box_mesh()
    with pytest.raises(RefinementError):
        refine_zone(v, f, None, lambda vv, ff: np.ones(len(ff), bool), target_mm=1e-4)
    assert MAX_FACES > 100_000


def test_texture_coordinates_follow_refinement():
    """UVs (e.g. the brushing direction of brushed_conductor) are interpolated at the new
    vertices: an affine parametrisation stays exact, and a displaced vertex keeps the uv of
    its surface point."""
    v, f = box_mesh()
    A, b = np.array([[0.02, 0.01, 0.0], [-0.01, 0.03, 0.005]]), np.array([0.5, 0.25])
    uv = v @ A.T + b
    a = box_dent(radius=2.0)
    vr, fr, _, uvr = refined_mesh(v, f, None, [a], uv)
    assert len(fr) > 12 and uvr.shape == (len(vr), 2)
    assert np.allclose(uvr, vr @ A.T + b, atol=1e-12)
    ve, _, fe, uve = geometry_edits([a], [Slot()], {"i1_box": (v, f)}, {"i1_box": None}, {"i1_box": uv})["i1_box"]
    assert np.array_equal(fe, fr) and np.array_equal(uve, uvr) and not np.array_equal(ve, vr)
