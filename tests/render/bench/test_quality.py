"""The quality bench's measures: equal-error time, contrast kept and its intervals."""
import numpy as np
import pytest

from polar_render.bench import quality as q


def _raw(points):
    return [{"render_s": t, "dolp_rmse": e, "mode": "raw"} for t, e in points]


def test_equal_error_time_interpolates_log_log_between_bracketing_rows():
    # a pure power law e = 0.1 t^-0.5 through three rows: every target is recovered exactly
    raw = _raw([(t, 0.1 * t ** -0.5) for t in (1.0, 4.0, 16.0)])
    t, how = q.equal_error_time(raw, 0.1 * 9.0 ** -0.5)
    assert how == "interpolated" and t == pytest.approx(9.0, rel=1e-9)


def test_equal_error_time_uses_local_slope_not_a_global_fit():
    # steep first segment, shallow second: a target in the second segment follows that segment only
    raw = _raw([(1.0, 0.08), (4.0, 0.02), (16.0, 0.014)])
    t, how = q.equal_error_time(raw, 0.017)
    frac = np.log(0.02 / 0.017) / np.log(0.02 / 0.014)
    assert how == "interpolated" and t == pytest.approx(4.0 * 4.0 ** frac, rel=1e-9)
    assert 4.0 < t < 16.0


def test_equal_error_time_extrapolates_along_the_nearest_rows_and_says_so():
    raw = _raw([(1.0, 0.08), (4.0, 0.04), (16.0, 0.02)])   # e ~ t^-0.5
    t, how = q.equal_error_time(raw, 0.01)
    assert how == "extrapolated" and t == pytest.approx(64.0, rel=1e-9)
    t, how = q.equal_error_time(raw, 0.16)
    assert how == "extrapolated" and t == pytest.approx(0.25, rel=1e-9)


def _rows(cs, crefs):
    return [{"I": {"c": c, "c_ref": r, "noise": 1.0}, "DoLP": {"c": c, "c_ref": r, "noise": 1.0}}
            for c, r in zip(cs, crefs)]


def test_kept_weights_by_reference_contrast_and_sign():
    rows = _rows([0.09, -0.018], [0.1, -0.02])   # both keep 90 %, one with negative contrast
    assert q.kept(rows, "DoLP") == pytest.approx(90.0)
    flipped = _rows([-0.1], [0.1])                # contrast of the wrong sign counts against
    assert q.kept(flipped, "DoLP") == pytest.approx(-100.0)


def test_contrast_change_is_paired_and_its_interval_covers_a_uniform_loss():
    raw = _rows([0.12, 0.05, 0.3, 0.02], [0.1, 0.05, 0.25, 0.02])
    den = _rows([0.9 * r["DoLP"]["c"] for r in raw], [r["DoLP"]["c_ref"] for r in raw])
    change, (lo, hi) = q.contrast_change(den, raw), q.contrast_change_ci(den, raw)
    assert change == pytest.approx(-10.0)
    assert lo == pytest.approx(-10.0) and hi == pytest.approx(-10.0)   # the same loss on every anomaly
    mixed = _rows([0.06, 0.05, 0.3, 0.02], [0.1, 0.05, 0.25, 0.02])
    change, (lo, hi) = q.contrast_change(mixed, raw), q.contrast_change_ci(mixed, raw)
    assert lo <= change <= hi and lo < hi   # unequal losses: a real interval around the estimate


def test_contrasts_measure_anomaly_minus_ring_in_luminance_and_dolp():
    h = w = 40
    stokes = np.zeros((4, h, w, 1), np.float32)
    stokes[0] = 1.0
    stokes[1] = 0.1                                   # DoLP 0.1 on the part
    amask = np.zeros((h, w), np.int32)
    amask[15:25, 15:25] = 7
    stokes[0][amask == 7] = 0.5                       # darker stain ...
    stokes[1][amask == 7] = 0.15                      # ... with DoLP 0.3
    parts = np.ones((h, w), np.int32)
    ref = {"stokes": stokes, "anomaly_mask": amask, "part_mask": parts,
           "anomalies": [{"id": 7, "class": "water_stain"}]}
    rows = q.contrasts(stokes, ref)
    assert len(rows) == 1
    assert rows[0]["I"]["c"] == pytest.approx(-0.5) and rows[0]["I"]["c_ref"] == pytest.approx(-0.5)
    assert rows[0]["DoLP"]["c"] == pytest.approx(0.2, abs=1e-6)
    assert rows[0]["DoLP"]["noise"] == pytest.approx(0.0)
    assert q.summarize(rows)["kept_DoLP"] == pytest.approx(100.0)


def test_corrected_removes_the_reference_error_in_quadrature():
    assert q.corrected(0.05, 0.03) == pytest.approx(0.04)
    assert q.corrected(0.02, 0.03) == 0.0
    assert q.corrected(0.05, 0.0) == pytest.approx(0.05)


def test_reference_noise_estimates_the_error_of_the_mean_of_two_halves():
    rng = np.random.default_rng(3)
    h, w, sigma = 200, 200, 0.05
    truth = np.zeros((4, h, w, 1), np.float32)
    truth[0], truth[1] = 1.0, 0.2
    half_a, half_b = (truth + sigma * rng.standard_normal(truth.shape).astype(np.float32) for _ in range(2))
    parts = np.ones((h, w), np.int32)
    est = q.reference_noise(half_a, half_b, parts)
    actual = q.errors((half_a + half_b) / 2, truth, parts)     # the reference's real error
    assert est["s0_rrmse"] == pytest.approx(actual["s0_rrmse"], rel=0.05)
    assert est["dolp_rmse"] == pytest.approx(actual["dolp_rmse"], rel=0.1)
    assert est["s0_rrmse"] == pytest.approx(sigma / np.sqrt(2), rel=0.05)
