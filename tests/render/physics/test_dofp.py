"""DoFP (polar_render.physics.dofp, the only DoFP code): layout, mosaic, the tie between the
render-side mosaic and the detect-side capture import for every layout, signal chain, noise
statistics, clipping, determinism and super-pixel Stokes recovery."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from polar_render.physics.polarization import polarizer_images, stokes_from_polarizer_images
from polar_render.physics.dofp import (DEFAULT_LAYOUT, DEFAULT_LAYOUT_TEXT, SensorModel, expose, format_layout,
                                       mosaic, parse_layout, simulate, superpixel_images)

ANGLES = (0, 45, 90, 135)


def _tagged(h=4, w=6, c=None):
    """Polarizer images whose values encode (angle, y, x): angle*1000 + y*10 + x (+ 0.1*ch)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = {}
    for a in ANGLES:
        img = (a * 1000 + yy * 10 + xx).astype(np.float64)
        if c is not None:
            img = img[..., None] + 0.1 * np.arange(c)
        out[a] = img
    return out


def test_default_layout_is_sony_and_the_cli_default():
    from polar_detect.dataset.__main__ import _parser

    assert SensorModel().layout == ((90, 45), (135, 0)) == DEFAULT_LAYOUT
    assert parse_layout(DEFAULT_LAYOUT_TEXT) == DEFAULT_LAYOUT and format_layout(DEFAULT_LAYOUT) == DEFAULT_LAYOUT_TEXT
    args = _parser().parse_args(["import-polar", "--src", "s", "--out", "o"])
    assert parse_layout(args.layout) == DEFAULT_LAYOUT


def _linear_stokes(h=24, w=32):
    """Stokes (4, H, W, 1) linear in x and y (so bilinear demosaicing is exact inside the
    1-px border), inside the physical cone, DoLP 0.1..0.4, AoLP spread over (-pi/2, pi/2)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    s0 = 1000.0 + 6.0 * x + 4.0 * y
    s1 = -150.0 + 9.0 * x - 3.0 * y
    s2 = 120.0 - 4.0 * x + 7.0 * y
    return np.stack([s0, s1, s2, np.zeros_like(s0)])[..., None]


ALL_LAYOUTS = sorted({format_layout((p[:2], p[2:])) for p in itertools.permutations(ANGLES)})


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
def test_render_mosaic_decodes_in_detect_capture_import(tmp_path, layout):
    """Render side: mosaic of a known Stokes field with ``layout``. Detect side: the capture
    importer reads the file and decodes it with the same layout string. Both must give the
    Stokes / DoLP / AoLP the render side computes from the exact field; another layout must not."""
    from polar_render import io
    from polar_render.physics.polarization import aolp, dolp
    from polar_detect.dataset.encodings import decode_aolp
    from polar_detect.dataset.polar_capture import polar_modalities, read_frame

    stokes = _linear_stokes()
    raw = mosaic(polarizer_images(stokes), layout)[..., 0]
    io.write_float_tiff(tmp_path / "frame.tiff", raw)
    inner = (slice(1, -1), slice(1, -1))
    want = {"S": stokes[:3, ..., 0], "dolp": dolp(stokes)[..., 0], "aolp": aolp(stokes)[..., 0]}

    def decoded(lay):
        pol = read_frame("mosaic", tmp_path / "frame.tiff", lay)
        mods = polar_modalities(pol, ["stokes", "dolp", "aolp"])
        return {"S": np.moveaxis(mods["stokes"], -1, 0), "dolp": mods["dolp"][..., 0],
                "aolp": decode_aolp(mods["aolp"])[..., 0]}

    got = decoded(layout)
    np.testing.assert_allclose(got["S"][(slice(None), *inner)], want["S"][(slice(None), *inner)], rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(got["dolp"][inner], want["dolp"][inner], atol=1e-5)
    np.testing.assert_allclose(got["aolp"][inner], want["aolp"][inner], atol=1e-4)
    # the layout string means row-major angles: render-side binning takes angle k's samples there
    pol = polarizer_images(stokes)
    binned = superpixel_images(raw, layout)
    for k, angle in enumerate(int(v) for v in layout.split(",")):
        np.testing.assert_array_equal(binned[angle], pol[angle][k // 2::2, k % 2::2, 0])
    for other in ALL_LAYOUTS:   # every other order decodes to a visibly different polarization
        if other != layout:
            wrong = decoded(other)
            err = max(np.abs(wrong["S"][k][inner] - want["S"][k][inner]).max() for k in (1, 2))
            assert err > 50.0, other   # |S1|, |S2| ~ 100..400 here; a wrong order swaps or negates them


@pytest.mark.parametrize("c", [None, 3])
def test_mosaic_picks_layout_angle_at_each_position(c):
    pol = _tagged(c=c)
    raw = mosaic(pol)
    assert raw.shape == pol[0].shape
    # hand-written expectation for the Sony layout: (0,0)=90, (0,1)=45, (1,0)=135, (1,1)=0
    expect = {(0, 0): 90, (0, 1): 45, (1, 0): 135, (1, 1): 0}
    for y in range(4):
        for x in range(6):
            a = expect[(y % 2, x % 2)]
            np.testing.assert_array_equal(raw[y, x], pol[a][y, x])
            assert int(np.floor(np.ravel(raw[y, x])[0])) // 1000 == a


def test_mosaic_custom_layout_and_odd_size():
    pol = _tagged(h=5, w=7)
    raw = mosaic(pol, layout="0,45,135,90")
    for y in range(5):
        for x in range(7):
            a = ((0, 45), (135, 90))[y % 2][x % 2]
            assert raw[y, x] == pol[a][y, x]
    with pytest.raises(ValueError):
        mosaic(pol, layout=(0, 0, 45, 90))


def _flat_stokes(s, h, w, c=1):
    return np.broadcast_to(np.asarray(s, dtype=np.float64)[:, None, None, None], (4, h, w, c)).copy()


def test_noiseless_equals_rounded_i_theta_times_exposure_times_gain():
    rng = np.random.default_rng(0)
    h, w = 16, 12
    stokes = np.zeros((4, h, w, 1))
    stokes[0] = rng.uniform(0.1, 1.5, (h, w, 1))
    lin = stokes[0] * rng.uniform(0, 1, (h, w, 1))
    phi = rng.uniform(-np.pi / 2, np.pi / 2, (h, w, 1))
    stokes[1], stokes[2] = lin * np.cos(2 * phi), lin * np.sin(2 * phi)
    model = SensorModel(read_noise_e=0.0, shot_noise=False, full_well_e=1e9,
                        exposure_e_per_radiance=3000.0, gain_dn_per_e=0.37, bit_depth=16)
    raw, info = simulate(stokes, model, rng=1)
    assert raw.dtype == np.uint16 and raw.shape == (h, w)
    pol = polarizer_images(stokes)
    expect = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            a = DEFAULT_LAYOUT[y % 2][x % 2]
            expect[y, x] = np.rint(pol[a][y, x, 0] * 3000.0 * 0.37)
    np.testing.assert_array_equal(raw, expect.astype(np.uint16))
    assert info["dn_per_radiance"] == pytest.approx(3000.0 * 0.37)
    assert info["radiance_per_dn"] == pytest.approx(1 / (3000.0 * 0.37))
    # default gain maps the full well onto the largest code
    assert SensorModel().gain == pytest.approx(4095 / 10500.0)
    # polarizer transmission scales the signal
    half = SensorModel(**{**model.to_dict(), "polarizer_transmission": 0.5})
    raw_half, info_half = simulate(stokes, half, rng=1)
    assert info_half["dn_per_radiance"] == pytest.approx(0.5 * info["dn_per_radiance"])
    assert np.abs(raw_half.astype(int) - raw.astype(float) * 0.5).max() <= 1.0


def test_shot_noise_variance_equals_mean_and_read_noise_adds():
    n = 512
    mu_e = 1000.0
    flat = np.full((n, n), mu_e / 100.0)  # radiance; 100 e-/radiance -> 1000 e-
    base = dict(full_well_e=60000.0, bit_depth=16, gain_dn_per_e=1.0, exposure_e_per_radiance=100.0)
    dn = expose(flat, SensorModel(read_noise_e=0.0, **base), rng=0).astype(np.float64)
    assert dn.mean() == pytest.approx(mu_e, rel=0.005)
    # variance in electrons (gain 1) ~ mean; + 1/12 quantisation, negligible
    assert dn.var() == pytest.approx(dn.mean(), rel=0.05)
    # Poisson, not Gaussian-approx with another scale: off by a factor would fail
    r = 20.0
    dn_r = expose(flat, SensorModel(read_noise_e=r, **base), rng=1).astype(np.float64)
    assert dn_r.mean() == pytest.approx(mu_e, rel=0.005)
    assert dn_r.var() == pytest.approx(mu_e + r * r, rel=0.05)
    assert dn_r.var() - dn.var() == pytest.approx(r * r, rel=0.15)
    # with the default gain (0.39 DN/e-) the DN variance is gain^2 * electrons variance
    m = SensorModel(read_noise_e=0.0, exposure_e_per_radiance=100.0)
    dn_g = expose(flat, m, rng=2).astype(np.float64)
    e = dn_g / m.gain
    assert e.mean() == pytest.approx(mu_e, rel=0.005)
    assert e.var() == pytest.approx(mu_e, rel=0.05)
    # shot noise off, read noise on: variance = read_noise^2 only
    dn_ro = expose(flat, SensorModel(read_noise_e=r, shot_noise=False, **base), rng=3).astype(np.float64)
    assert dn_ro.var() == pytest.approx(r * r + 1 / 12, rel=0.05)


def test_full_well_clipping():
    m = SensorModel(full_well_e=1000.0, gain_dn_per_e=1.0, bit_depth=16, read_noise_e=0.0,
                    exposure_e_per_radiance=100.0)
    rad = np.array([[5.0, 9.5], [50.0, 1e6]])  # 500 e-, 950 e-, 5000 e-, huge
    dn = expose(rad, SensorModel(**{**m.to_dict(), "shot_noise": False}), rng=0)
    np.testing.assert_array_equal(dn, [[500, 950], [1000, 1000]])
    big = np.full((64, 64), 50.0)  # 5x the full well: shot noise cannot bring it below
    assert (expose(big, m, rng=0) == 1000).all()
    # default model: full well -> 4095 exactly (no read noise)
    d = SensorModel(read_noise_e=0.0)
    assert (expose(np.full((8, 8), 100.0), d, rng=0) == 4095).all()


def test_bit_depth_clipping():
    m = SensorModel(full_well_e=1e6, gain_dn_per_e=1.0, bit_depth=10, read_noise_e=0.0,
                    shot_noise=False, exposure_e_per_radiance=1.0)
    dn = expose(np.array([[-5.0, 0.0, 500.0, 1023.0, 1024.0, 50000.0]]), m, rng=0)
    assert dn.dtype == np.uint16
    np.testing.assert_array_equal(dn, [[0, 0, 500, 1023, 1023, 1023]])
    # read noise around zero never wraps around below 0
    noisy = expose(np.zeros((64, 64)), SensorModel(read_noise_e=5.0, gain_dn_per_e=1.0), rng=0)
    assert noisy.min() == 0 and noisy.max() < 40
    with pytest.raises(ValueError):
        SensorModel(bit_depth=17)


def test_determinism_same_seed():
    rng = np.random.default_rng(5)
    stokes = np.abs(rng.normal(0.5, 0.2, (4, 32, 32, 3)))
    stokes[1:3] *= 0.3
    a, info_a = simulate(stokes, SensorModel(), rng=np.random.default_rng(123))
    b, info_b = simulate(stokes, SensorModel(), rng=123)
    c, _ = simulate(stokes, SensorModel(), rng=124)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint16
    np.testing.assert_array_equal(a, b)
    assert info_a == info_b
    assert not np.array_equal(a, c)


def test_superpixel_binning_recovers_constant_stokes_exactly():
    s = (2.0, 0.6, -0.4, 0.0)  # I0=1.3, I45=0.8, I90=0.7, I135=1.2
    stokes = _flat_stokes(s, 8, 10)
    # the noiseless radiance mosaic: exact to float precision
    rad = mosaic(polarizer_images(stokes))
    binned = superpixel_images(rad)
    rec = stokes_from_polarizer_images(*(binned[a] for a in ANGLES))
    for k in range(3):
        np.testing.assert_allclose(rec[k], s[k], rtol=0, atol=1e-12)
    # the simulated noiseless uint16 raw, converted back with info["radiance_per_dn"]
    model = SensorModel(read_noise_e=0.0, shot_noise=False, exposure_e_per_radiance=100.0,
                        gain_dn_per_e=1.0, full_well_e=60000.0, bit_depth=16)
    raw, info = simulate(stokes, model, rng=0)
    assert raw.shape == (8, 10)
    binned = superpixel_images(raw, info["layout"])
    assert binned[0].shape == (4, 5)
    rec = stokes_from_polarizer_images(*(binned[a] * info["radiance_per_dn"] for a in ANGLES))
    for k in range(3):
        np.testing.assert_allclose(rec[k], s[k], rtol=0, atol=1e-12)
    # a wrong layout does not recover it (the test can fail)
    wrong = superpixel_images(raw, ((0, 45), (135, 90)))
    rec_w = stokes_from_polarizer_images(*(wrong[a] * info["radiance_per_dn"] for a in ANGLES))
    assert not np.allclose(rec_w[1], s[1])


def test_from_dict_and_defaults():
    m = SensorModel.from_dict({"layout": "0,45,135,90", "read_noise_e": 1.0, "bit_depth": 10})
    assert m.layout == ((0, 45), (135, 90)) and m.bit_depth == 10
    assert m.gain == pytest.approx(1023 / 10500.0)
    assert SensorModel.from_dict(None) == SensorModel()
    assert SensorModel.from_dict(SensorModel().to_dict()) == SensorModel()
    with pytest.raises(ValueError):
        SensorModel.from_dict({"fullwell": 1})
    with pytest.raises(ValueError):
        SensorModel.from_dict({"layout": [[0, 45], [90, 90]]})


def test_dofp_output_wired_into_samples(tmp_path):
    """sensor.dofp.enabled writes raw_mosaic.png; its mosaic follows the noiseless pol images."""
    from polar_render.config.scenes import load_scene
    from tests.render.conftest import render_dir, samples, scene_variant

    cfg = load_scene("usb_brick")
    dofp = {"enabled": True, "shot_noise": False, "read_noise_e": 1e-9, "bit_depth": 16, "full_well_e": 1e9,
            "exposure_e_per_radiance": 1000.0}
    path = scene_variant(tmp_path, sensor={**cfg.sensor, "mode": "mono", "dofp": dofp}, anomalies={})
    s = samples(render_dir(tmp_path / "o", scene=path, n=1, res=(64, 48), spp=2))[0]
    raw = s["raw_mosaic"]
    info = s["meta"]["files"]["raw_mosaic"]["sensor"]
    st = s["stokes"]                      # (H, W, 4) mono
    i90 = 0.5 * (st[..., 0] - st[..., 1])  # pixel (0, 0) of the default layout is 90 degrees
    expect = np.clip(np.rint(i90 * info["dn_per_radiance"]), 0, info["max_dn"])
    assert raw.shape == (48, 64) and raw.dtype == np.uint16
    assert np.allclose(raw[0::2, 0::2], expect[0::2, 0::2], atol=1)
