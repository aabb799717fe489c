"""What anomaly classes sample with (polar_render.anomalies.context): range and size draws,
face regions, and surface points drawn area-uniformly (no camera) or on seen pixels."""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.anomalies.context import (MAX_TRIES, Dropped, SampleContext, limits, part_extent, region_faces,
                                            size, uniform)
from polar_render.anomalies.visibility import SlotView, VisibleSurface

from tests.render.anomalies.conftest import Slot, box_mesh


def _ctx(visible=None, seed=0):
    v, f = box_mesh()
    return SampleContext(np.random.default_rng(seed), [Slot()], {"i1_box": (v, f)}, visible, 40, MAX_TRIES)


def test_draws_respect_ranges_and_relative_sizes():
    rng = np.random.default_rng(1)
    xs = [uniform(rng, [2.0, 3.0], "c.radius_mm") for _ in range(200)]
    assert 2.0 <= min(xs) and max(xs) <= 3.0 and max(xs) - min(xs) > 0.5
    assert uniform(rng, 1.5, "c.radius_mm") == 1.5
    assert size(rng, {"radius_rel": 0.1}, "radius", "c", part_mm=40.0) == pytest.approx(4.0)
    assert size(rng, {"radius_mm": 2.0, "radius_rel": 0.1}, "radius", "c", part_mm=40.0) == pytest.approx(4.0)
    assert size(rng, {"radius_mm": 2.0}, "radius", "c", part_mm=40.0) == 2.0
    with pytest.raises(ValueError, match="c.radius_mm"):
        uniform(rng, [3.0, 2.0], "c.radius_mm")
    assert part_extent(np.array([[0, 0, 0], [4, 1, 2.0]])) == 4.0
    assert limits({}) == (40, MAX_TRIES) and limits({"min_visible_px": 7}) == (7, MAX_TRIES)


def test_region_faces_by_normal():
    v, f = box_mesh()
    top = region_faces({"normal": [0, 0, 1]}, None, v, f)
    assert top.sum() == 2 and np.allclose(v[f[top]][..., 2], 10.0)
    tilted = [0.0, np.sin(np.radians(10)), np.cos(np.radians(10))]      # unit, as the schema gives it
    assert region_faces({"normal": tilted, "within_deg": 5}, None, v, f).sum() == 0
    assert region_faces({"normal": tilted, "within_deg": 15}, None, v, f).sum() == 2
    assert region_faces({}, None, v, f).all()


def test_surface_points_without_a_camera_lie_on_the_region():
    ctx = _ctx()
    for _ in range(20):
        slot, c, n, px = ctx.surface_point([Slot()], {"normal": [0, 0, 1]})
        assert slot.key == "i1_box" and c[2] == pytest.approx(10.0) and np.allclose(n, [0, 0, 1]) and px == np.inf
        assert np.all(np.abs(c[:2]) <= 10.0)
    with pytest.raises(Dropped, match="no face of its parts lies in its region"):
        ctx.surface_point([Slot()], {"normal": list(np.ones(3) / np.sqrt(3)), "within_deg": 5.0})


def test_surface_points_with_a_camera_are_seen_candidates():
    sv = SlotView(pixels=np.array([[0, 0], [0, 1], [0, 2]]), points_mm=np.array([[1.0, 0, 10], [2, 0, 10], [0, 0, -10]]),
                  normals=np.array([[0, 0, 2.0], [0, 0, 1], [0, 0, -1]]), cos_view=np.array([1.0, 0.1, 0.9]),
                  px_per_mm=np.array([2.0, 2.0, 3.0]), faces=np.array([0, 0, 0]))
    v, f = box_mesh()
    top = int(np.flatnonzero(region_faces({"normal": [0, 0, 1]}, None, v, f))[0])
    bottom = int(np.flatnonzero(region_faces({"normal": [0, 0, -1]}, None, v, f))[0])
    sv.faces = np.array([top, top, bottom])
    vis = VisibleSurface({"i1_box": sv}, (1, 3), min_cos=0.5)
    ctx = _ctx(vis)
    seen = {tuple(ctx.surface_point([Slot()])[1]) for _ in range(30)}
    assert seen == {(1.0, 0.0, 10.0), (0.0, 0.0, -10.0)}                 # the grazing pixel is never drawn
    slot, c, n, px = ctx.surface_point([Slot()], {"normal": [0, 0, 1]})
    assert c.tolist() == [1.0, 0.0, 10.0] and np.allclose(n, [0, 0, 1]) and px == pytest.approx(4.0)
    with pytest.raises(Dropped, match="no visible surface of its parts in its region of faces"):
        ctx.surface_point([Slot()], {"normal": [1, 0, 0]})
    with pytest.raises(Dropped, match="no visible surface"):
        ctx.surface_point([Slot("i2_box", 2)])
