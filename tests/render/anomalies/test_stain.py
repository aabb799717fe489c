"""Water stains: Algorithm 1 (inside/rim/outside), the nearest-centre search against brute
force, the Perlin radius noise, and the class's draws."""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.anomalies.stain import (StainParams, brute_force_nearest, evaluate, jittered_centres,
                                          nearest_centre, perlin)


def _params(rng, cell=8.0, radius=2.0, amp=0.0, lo=(-20, -10, -10), hi=(20, 10, 10)):
    origin, dims, centres = jittered_centres(np.array(lo), np.array(hi), cell, rng)
    return StainParams(radius, cell, 0.5, amp, 2.0, -0.3, 0.4, (3.0, 5.0, 7.0), origin, dims, centres)


def test_algorithm1_centre_boundary_outside():
    sp = _params(np.random.default_rng(0))
    c = sp.centres_mm[len(sp.centres_mm) // 2]
    u = np.array([1.0, 0.0, 0.0])
    pts = np.stack([c, c + u * (sp.radius_mm - 1e-6), c + u * (sp.radius_mm + 1e-3), c + u * sp.radius_mm / 2])
    inside, d_hat, idx, delta = evaluate(pts, sp, noise_values=np.zeros(4))   # amplitude 0: r' = r
    assert inside.tolist() == [True, True, False, True]
    assert d_hat[0] == 0 and delta[0] == 0                 # centre: base reflectance
    assert d_hat[1] == pytest.approx(1.0) and delta[1] == pytest.approx(sp.alpha)   # rim: full alpha
    assert delta[3] == pytest.approx((0.5 ** sp.gamma) * sp.alpha)
    assert delta[2] == 0
    # Perlin perturbs the radius: r' = r + N * A with noise.pnoise3
    sp.amplitude_mm = 1.0
    n = perlin(pts[1:2], sp.frequency_per_mm, sp.noise_offset)
    inside2, d_hat2, _, _ = evaluate(pts[1:2], sp)
    assert inside2[0] == (sp.radius_mm - 1e-6 <= sp.radius_mm + n[0])
    if inside2[0]:
        assert d_hat2[0] == pytest.approx((sp.radius_mm - 1e-6) / (sp.radius_mm + n[0]))


def test_neighbour_search_equals_brute_force():
    rng = np.random.default_rng(1)
    for cell in (4.0, 7.5, 12.0):
        sp = _params(rng, cell=cell, radius=cell / 2 - 0.6, amp=0.5)
        pts = rng.uniform(-20, 20, size=(4000, 3)) * [1, 0.5, 0.5]
        d, idx = nearest_centre(pts, sp)
        bd, bidx = brute_force_nearest(pts, sp.centres_mm)
        near = bd < cell / 2            # every stain decision happens at d <= r' < G/2
        assert near.sum() > 100
        assert np.array_equal(idx[near], bidx[near]) and np.allclose(d[near], bd[near])
        ins, _, ci, _ = evaluate(pts, sp)
        bins = bd <= sp.radius_mm + perlin(pts, sp.frequency_per_mm, sp.noise_offset) * sp.amplitude_mm
        assert np.array_equal(ins, bins) and np.array_equal(ci[ins], bidx[ins])


def _autocorrelation_length(f: float, offset=(3.0, 5.0, 7.0)) -> float:
    """Distance (mm) along x at which the Perlin noise's autocorrelation falls below 1/2."""
    x = np.arange(0.0, 400.0, 0.05)
    n = perlin(np.c_[x, np.zeros_like(x), np.zeros_like(x)], f, offset)
    n = n - n.mean()
    for lag in range(1, len(x) // 4):
        if np.dot(n[:-lag], n[lag:]) / np.dot(n[:-lag], n[:-lag]) < 0.5:
            return lag * 0.05
    raise AssertionError("noise never decorrelates")


def test_perlin_correlation_length_scales_with_frequency():
    """r' = r + N(p f + offset) A: doubling the scene's frequency_per_mm halves the length
    over which the radius noise is correlated (noise is a function of p * f)."""
    lengths = {f: _autocorrelation_length(f) for f in (0.25, 0.5, 1.0)}
    assert 0.3 < lengths[0.5] < 3.0           # about one lattice cell of pnoise3: ~1 / f mm
    assert lengths[0.25] / lengths[0.5] == pytest.approx(2.0, rel=0.15)
    assert lengths[0.5] / lengths[1.0] == pytest.approx(2.0, rel=0.15)


def test_perlin_is_deterministic_per_offset_and_varies_with_it():
    """The noise offset (drawn per sample) picks the noise: the same offset gives the same
    values bit for bit, another one other values; values are zero-mean-ish and within [-1, 1]."""
    pts = np.random.default_rng(0).uniform(-20, 20, (2000, 3))
    a = perlin(pts, 0.5, (1.0, 2.0, 3.0))
    assert np.array_equal(a, perlin(pts, 0.5, (1.0, 2.0, 3.0)))
    b = perlin(pts, 0.5, (41.0, 2.0, 3.0))
    assert np.corrcoef(a, b)[0, 1] < 0.3
    assert np.abs(a).max() <= 1.0 and abs(a.mean()) < 0.1 and a.std() > 0.1


def test_stain_noise_moves_the_boundary_by_at_most_the_amplitude():
    """Points with d <= r - |A| are always inside, d > r + |A| never; in between the noise
    decides, and both outcomes occur."""
    sp = _params(np.random.default_rng(4), cell=12.0, radius=3.0, amp=1.5)
    pts = np.random.default_rng(5).uniform(-20, 20, (20000, 3)) * [1, 0.5, 0.5]
    d, _ = nearest_centre(pts, sp)
    inside = evaluate(pts, sp)[0]
    assert inside[d <= sp.radius_mm - sp.amplitude_mm].all()
    assert not inside[d > sp.radius_mm + sp.amplitude_mm].any()
    band = (d > sp.radius_mm - sp.amplitude_mm) & (d <= sp.radius_mm + sp.amplitude_mm)
    assert 0.05 < inside[band].mean() < 0.95
