"""What the camera sees of each part (polar_render.anomalies.visibility): model-frame points,
the facing cosine and px/mm per seen pixel, candidates by view angle, and point visibility."""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.anomalies.aov import AovView
from polar_render.anomalies.visibility import visible_surface

from tests.render.anomalies.conftest import Slot

F, CX, CY, Z = 100.0, 1.5, 1.0, 0.5          # focal (px), principal point, plane depth (m)
K = np.array([[F, 0, CX], [0, F, CY], [0, 0, 1.0]])


def _plane(tilted_col: int | None = None) -> AovView:
    """A 3x4 view of the plane z = Z (camera frame = world frame), facing the camera."""
    rows, cols = np.mgrid[0:3, 0:4]
    pos = np.stack([(cols - CX) / F * Z, (rows - CY) / F * Z, np.full(rows.shape, Z)], -1)
    nrm = np.tile([0.0, 0.0, -1.0], (3, 4, 1))
    if tilted_col is not None:
        nrm[:, tilted_col] = [np.sin(np.radians(80)), 0.0, -np.cos(np.radians(80))]
    slot = np.zeros((3, 4), int)
    slot[0, 0] = -1                                  # background
    face = np.arange(12).reshape(3, 4)
    return AovView(slot, pos, nrm, pos[..., 2], face)


def test_points_normals_cosines_and_scale():
    T = np.eye(4)
    T[:3, 3] = [0.0, 0.0, 0.1]                      # the part's model frame sits 0.1 m in front
    vs = visible_surface(_plane(), [Slot("i1_a", 1, "a")], {1: T}, np.eye(4), K)
    sv = vs.slots["i1_a"]
    assert len(sv.pixels) == 11 and [0, 0] not in sv.pixels.tolist()
    assert np.allclose(sv.points_mm[:, 2], (Z - 0.1) * 1000.0)
    assert np.allclose(sv.normals, [0.0, 0.0, -1.0])
    r, c = sv.pixels.T
    d = np.stack([(c - CX) / F, (r - CY) / F, np.ones(len(r))], 1)
    assert np.allclose(sv.cos_view, 1.0 / np.linalg.norm(d, axis=1))      # cosine to the pixel's ray
    assert np.allclose(sv.px_per_mm, F / (1000.0 * Z))
    assert sv.faces.tolist() == [4 * r_ + c_ for r_, c_ in sv.pixels]
    assert vs.pixels_of("i1_a") == 11 and vs.pixels_of("nope") == 0


def test_grazing_pixels_are_not_candidates():
    vs = visible_surface(_plane(tilted_col=3), [Slot("i1_a", 1, "a")], {1: np.eye(4)}, np.eye(4), K)
    assert vs.count("i1_a") == 8 and vs.pixels_of("i1_a") == 11       # column 3 faces away by 80 deg
    wide = visible_surface(_plane(tilted_col=3), [Slot("i1_a", 1, "a")], {1: np.eye(4)}, np.eye(4), K,
                           max_view_angle_deg=85.0)
    assert wide.count("i1_a") == 11


def test_sees_point_on_the_surface_only():
    vs = visible_surface(_plane(), [Slot("i1_a", 1, "a")], {1: np.eye(4)}, np.eye(4), K)
    p = np.array([(2 - CX) / F * Z, (1 - CY) / F * Z, Z]) * 1000.0        # the point seen at row 1, col 2
    assert vs.sees_point(1, p, 0.1, ["i1_a"]) == (True, pytest.approx(F / (1000.0 * Z)))
    assert vs.sees_point(1, p * 0.9, 0.1, ["i1_a"])[0] is False          # same pixel, in front of the surface
    assert vs.sees_point(1, p, 0.1, ["other"])[0] is False
    assert vs.sees_point(2, p, 0.1, ["i1_a"]) == (False, 0.0)            # unknown instance
    assert vs.sees_point(1, np.array([1e4, 0.0, Z * 1000]), 0.1, ["i1_a"]) == (False, 0.0)   # outside the image
    assert vs.sees_point(1, -p, 0.1, ["i1_a"]) == (False, 0.0)          # behind the camera
