"""Structural anomalies: displacement profiles and the scratch's distance to its arc."""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.anomalies.edits import displacement
from polar_render.anomalies.geometric import CURVE_EXACT_MM, DENT, SCRATCH, _curve_distance
from polar_render.anomalies.registry import Anomaly


def test_scratch_and_chip_displacement():
    """Scratch: groove depth at the curve, zero beyond w/2; chip: points beyond the cut
    plane land on it, points behind it do not move."""
    curve = [[-5.0, 0.0, 0.0], [5.0, 0.0, 0.0]]
    s = Anomaly("scratch", 1, {"curve_mm": curve, "width_mm": 1.0, "normal": [0, 0, 1], "height_mm": -0.2})
    v = np.array([[0, 0, 0], [0, 0.25, 0], [0, 0.6, 0], [7, 0, 0]], float)
    d = displacement(v, s)
    assert d[0, 2] == pytest.approx(-0.2) and d[1, 2] == pytest.approx(-0.2 * 0.75**2)
    assert d[2, 2] == 0 and d[3, 2] == 0
    c = Anomaly("chip", 1, {"plane_point_mm": [1, 1, 1], "normal": list(np.ones(3) / np.sqrt(3))})
    v = np.array([[2, 2, 2], [0, 0, 0], [1.5, 1, 1]], float)
    moved = v + displacement(v, c)
    assert np.allclose((moved[[0, 2]] - 1) @ (np.ones(3) / np.sqrt(3)), 0)   # on the cut plane
    assert np.array_equal(moved[1], v[1])


def test_curve_distance_matches_brute_force():
    """Scratch distance: exact (vs every segment, every point) up to CURVE_EXACT_MM, and a
    lower bound beyond it that stays above CURVE_EXACT_MM (so thresholds below it are exact)."""
    rng = np.random.default_rng(3)
    sv = np.linspace(-6, 6, 64)
    curve = np.c_[sv, sv**2 / 25, 0.3 * sv] + 1.0
    p = rng.uniform(-15, 15, (20000, 3))
    brute = np.full(len(p), np.inf)
    for a, b in zip(curve[:-1], curve[1:]):
        t = np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1)
        brute = np.minimum(brute, np.linalg.norm(p - (a + t[:, None] * (b - a)), axis=1))
    d = _curve_distance(p, curve)
    near = brute <= CURVE_EXACT_MM
    assert near.sum() > 1000 and (~near).sum() > 1000
    np.testing.assert_allclose(d[near], brute[near], atol=1e-12)
    assert np.all(d[~near] > CURVE_EXACT_MM) and np.all(d[~near] <= brute[~near] + 1e-12)


def test_dent_displacement_is_smooth_and_local():
    a = Anomaly("dent", 1, {"centre_mm": [0, 0, 0], "normal": [0, 0, 1], "radius_mm": 2.0, "height_mm": -0.5})
    v = np.array([[0, 0, 0], [1, 0, 0], [1.999, 0, 0], [2.5, 0, 0]], float)
    d = displacement(v, a)
    assert d[0, 2] == pytest.approx(-0.5) and d[3, 2] == 0 and abs(d[2, 2]) < 1e-5
    assert np.all(d[:, :2] == 0)


def test_region_excess_is_zero_on_the_boundary_and_displacement_zero_outside():
    """The mask region (``region_excess`` <= 0) holds every vertex a dent or a scratch moves."""
    rng = np.random.default_rng(2)
    v = rng.uniform(-6, 6, (5000, 3))
    dent = Anomaly("dent", 1, {"centre_mm": [0, 0, 0], "normal": [0, 0, 1], "radius_mm": 2.0, "height_mm": -0.5})
    scratch = Anomaly("scratch", 1, {"curve_mm": [[-4.0, 0, 0], [0, 1, 0], [4.0, 0, 0]], "width_mm": 1.2,
                                     "normal": [0, 0, 1], "height_mm": -0.2})
    for cls, a in ((DENT, dent), (SCRATCH, scratch)):
        moved = np.any(displacement(v, a) != 0, axis=1)
        excess = cls.region_excess(v, a)
        assert moved.sum() > 20 and np.all(excess[moved] <= 0)
        assert not moved[excess > 1e-9].any()
