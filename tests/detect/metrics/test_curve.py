"""The shared sweep machinery (polar_detect.metrics._curve): ScoreAccumulator in exact, histogram
and auto modes against a direct numpy sweep, and the trapezoid area / error-bound helpers."""
import numpy as np
import pytest

from polar_detect.metrics._curve import ScoreAccumulator, area_error_bound, area_up_to, rates, to_numpy


def _direct_sweep(s, p, q):
    """Thresholds descending over the distinct scores; sums over score >= t."""
    thr = np.unique(s)[::-1]
    return thr, np.array([p[s >= t].sum() for t in thr]), np.array([q[s >= t].sum() for t in thr])


def test_exact_sweep_has_one_step_per_distinct_score():
    rng = np.random.default_rng(0)
    s = np.round(rng.random(500), 2)                 # heavy ties
    p = rng.random(500) < 0.3
    q = rng.random(500)                              # weights need not be 0/1 (PRO, sPRO)
    acc = ScoreAccumulator(mode="exact")
    for chunk in np.array_split(np.arange(500), 7):
        acc.update(s[chunk], p[chunk], q[chunk])
    thr, cp, cq, dp, dq = acc.sweep()
    t0, p0, q0 = _direct_sweep(s, p.astype(float), q)
    assert np.array_equal(thr, t0) and np.allclose(cp, p0) and np.allclose(cq, q0)
    assert np.allclose(np.cumsum(dp), cp) and np.allclose(np.cumsum(dq), cq)
    assert acc.n == 500 and acc.state_dict() == {"mode": "exact", "bins": None, "value_range": None, "n": 500}


def test_histogram_sweep_is_the_exact_sweep_of_the_binned_scores():
    rng = np.random.default_rng(1)
    s = rng.normal(size=3000)
    p = rng.random(3000) < 0.2
    acc = ScoreAccumulator(mode="hist", bins=32, value_range=(-1.0, 1.0))
    acc.update(s, p, ~p)
    thr, cp, cq, _, _ = acc.sweep()
    # scores outside the range are clipped into the edge bins; a threshold is a bin's lower edge
    b = np.clip(np.floor((s + 1.0) * 16), 0, 31)
    edges = -1.0 + np.arange(32) / 16
    t0, p0, q0 = _direct_sweep(edges[b.astype(int)], p.astype(float), (~p).astype(float))
    assert np.allclose(thr, t0) and np.array_equal(cp, p0) and np.array_equal(cq, q0)
    assert cp[-1] + cq[-1] == 3000                 # nothing lost to clipping
    assert acc.state_dict()["value_range"] == [-1.0, 1.0]


def test_auto_mode_switches_over_the_range_seen():
    acc = ScoreAccumulator(mode="auto", bins=8, max_exact=10)
    acc.update(np.linspace(0, 1, 8), np.ones(8), np.zeros(8))
    assert acc.mode == "exact"
    acc.update(np.array([0.5, 0.5, 2.0]), np.zeros(3), np.ones(3))
    assert acc.mode == "hist" and acc.value_range == (0.0, 2.0) and acc.n == 11
    _, cp, cq, _, _ = acc.sweep()
    assert cp[-1] == 8 and cq[-1] == 3


def test_bad_modes_and_values():
    with pytest.raises(ValueError, match="auto|exact|hist"):
        ScoreAccumulator(mode="fast")
    with pytest.raises(ValueError, match="value_range"):
        ScoreAccumulator(mode="hist")
    with pytest.raises(ValueError, match="NaN or infinite"):
        ScoreAccumulator().update([0.1, np.nan], [1, 0], [0, 1])
    acc = ScoreAccumulator(mode="exact")
    acc.update(np.zeros(0), np.zeros(0), np.zeros(0))
    assert acc.n == 0 and acc.sweep()[0].size == 0


def test_rates_and_area_up_to_a_limit():
    x, y = rates(np.array([1.0, 3.0, 4.0]), np.array([0.0, 2.0, 4.0]))
    assert np.allclose(x, [0, 0, 0.5, 1]) and np.allclose(y, [0, 0.25, 0.75, 1])
    assert area_up_to(x, y) == pytest.approx(0.5 * (0.25 + 0.75) / 2 + 0.5 * (0.75 + 1.0) / 2)   # vertical step: 0
    # cut at 0.25 by linear interpolation (y = 0.5 there), normalised by the limit
    assert area_up_to(x, y, 0.25, normalise=False) == pytest.approx(0.25 * (0.25 + 0.5) / 2)
    assert area_up_to(x, y, 0.25) == pytest.approx((0.25 + 0.5) / 2)
    assert area_up_to([0, 1], [1, 1]) == 1.0 and area_up_to([0, 1], [0, 1]) == 0.5


def test_area_error_bound_holds_for_every_staircase_inside_the_steps():
    """The bound is the worst case over exact curves that pass through the binned points."""
    x = np.array([0.0, 0.2, 0.6, 1.0])
    y = np.array([0.0, 0.5, 0.7, 1.0])
    for limit in (1.0, 0.4):
        binned, bound = area_up_to(x, y, limit), area_error_bound(x, y, limit)
        for first_up in (True, False):                 # the two extreme staircases of each step
            xs, ys = [0.0], [0.0]
            for x1, y1 in zip(x[1:], y[1:]):
                xs += [xs[-1], x1] if first_up else [x1, x1]
                ys += [y1, y1] if first_up else [ys[-1], y1]
            assert abs(area_up_to(xs, ys, limit) - binned) <= bound + 1e-12
        assert bound > 0
    assert area_error_bound([0, 0.5, 0.5, 1], [0, 0, 1, 1]) == 0.0  # only flat or vertical steps: exact


def test_to_numpy_takes_tensors_and_lists():
    torch = pytest.importorskip("torch")
    a = to_numpy(torch.tensor([1, 2], requires_grad=False), np.float64)
    assert a.dtype == np.float64 and a.tolist() == [1.0, 2.0]
    assert to_numpy([True, False]).dtype == bool
