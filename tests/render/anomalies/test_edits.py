"""Geometry edits of an anomalous sample (polar_render.anomalies.edits): which slots are hidden
(missing parts, unused spares), the displaced and refined meshes of surface anomalies, and
shading normals recomputed around the moved vertices only."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from polar_render.anomalies.edits import displacement, geometry_edits, vertex_normals
from polar_render.anomalies.registry import Anomaly

from tests.render.anomalies.conftest import Slot, box_dent, box_mesh


def test_dent_on_a_12_triangle_box_is_applied():
    v, f = box_mesh()
    a = box_dent()
    assert not np.any(displacement(v, a))            # no vertex of the coarse box lies inside the dent
    edits = geometry_edits([a], [Slot()], {"i1_box": (v, f)}, {"i1_box": None})
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


def test_hidden_slots_missing_parts_and_unused_spares():
    v, f = box_mesh()
    slots = [Slot("i1_box", 1, "box"), Slot("i1_lid", 1, "lid"), Slot("x1_lid", 1, "lid"), Slot("i2_lid", 2, "lid")]
    models = {s.key: (v, f) for s in slots}
    normals = {s.key: None for s in slots}
    assert geometry_edits([], slots, models, normals) == {"x1_lid": None}            # spares hidden when clean
    missing = Anomaly("missing", 1, {"part": "lid"})
    assert geometry_edits([missing], slots, models, normals) == {"x1_lid": None, "i1_lid": None}
    extra = Anomaly("extra", 1, {"part": "lid"})
    assert geometry_edits([extra], slots, models, normals) == {}                    # the spare is shown
    # a dent on a part that is also missing is not applied to the hidden slot
    dent_on_lid = Anomaly("dent", 1, {**box_dent().params, "part": "lid"})
    assert geometry_edits([missing, dent_on_lid], slots, models, normals)["i1_lid"] is None


def test_vertex_normals_exact_and_recomputed_only_around_moved_vertices():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=10.0)
    v, f = np.asarray(sphere.vertices, float), np.asarray(sphere.faces, np.int64)
    flat = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, -1, 0]], float)
    assert np.allclose(vertex_normals(flat, np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1]])), [0, 0, 1])
    n0 = v / np.linalg.norm(v, axis=1, keepdims=True)
    top = int(np.argmax(v[:, 2]))
    a = Anomaly("bump", 1, {"part": "box", "centre_mm": v[top], "normal": n0[top], "height_mm": 0.5,
                            "radius_mm": 3.0, "ring_mm": 10.0})            # ring > edges: no refinement
    ve, ne, fe, _ = geometry_edits([a], [Slot()], {"i1_box": (v, f)}, {"i1_box": n0})["i1_box"]
    assert np.array_equal(fe, f)
    moved = np.any(ve != v, axis=1)
    assert moved.any() and np.all((ve[moved] - v[moved]) @ n0[top] > 0)
    touched = np.zeros(len(v), bool)
    touched[f[np.any(moved[f], axis=1)].ravel()] = True
    assert np.array_equal(ne[~touched], n0[~touched])                    # far normals untouched
    assert np.allclose(ne[touched], vertex_normals(ve, f)[touched])      # near ones from the displaced faces
    assert not np.allclose(ne[moved], n0[moved])
