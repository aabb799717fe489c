"""One-sample code without Mitsuba: Stokes from the integrator output, exposure, and the files
``write_sample`` writes checked against the contract in ``polar_render.outputs``."""
from __future__ import annotations

import numpy as np
import pytest

from polar_render import outputs
from polar_render.physics.polarization import LUMA, aolp, dolp
from polar_render.run.sample import (ZERO_S0, SampleImages, exposure_scale, rescale_frame, stokes_from_render,
                                     write_sample)

H, W = 6, 8


def _raw(n_lead: int, rng) -> np.ndarray:
    return rng.normal(size=(H, W, n_lead + 12)).astype(np.float32)


def test_stokes_from_spectral_output():
    raw = _raw(3, np.random.default_rng(0))
    st, ch = stokes_from_render(raw, "rgb")
    assert ch == ["R", "G", "B"] and st.shape == (4, H, W, 3) and st.dtype == np.float32
    for k in range(4):   # S_k of colour c is channel 3 + 3k + c
        assert np.array_equal(st[k], raw[..., 3 + 3 * k: 6 + 3 * k])
    mono, ch = stokes_from_render(raw, "mono")
    assert ch == ["Y"] and mono.shape == (4, H, W, 1)
    assert np.allclose(mono[..., 0], st @ LUMA, rtol=1e-6, atol=1e-6)


def test_stokes_from_mono_variant_output():
    raw = _raw(1, np.random.default_rng(1))
    st, ch = stokes_from_render(raw, "mono")
    assert ch == ["Y"] and st.shape == (4, H, W, 1)
    assert np.array_equal(st[2, ..., 0], raw[..., 1 + 6])   # S2, channel R
    with pytest.raises(RuntimeError, match="mono Mitsuba variant cannot render an RGB sensor"):
        stokes_from_render(raw, "rgb")
    with pytest.raises(RuntimeError, match="unexpected stokes output with 14 channels"):
        stokes_from_render(np.zeros((H, W, 14), np.float32), "rgb")


def test_exposure_scale():
    st = np.zeros((4, H, W, 3), np.float32)
    st[0] = np.linspace(0, 2, H * W * 3).reshape(H, W, 3)
    assert exposure_scale(st, {"exposure": 123.5}) == 123.5
    ref = np.percentile(st[0], 50.0)
    assert exposure_scale(st, {"exposure": "auto", "exposure_percentile": 50}) == pytest.approx(0.9 * 65535 / ref)
    assert exposure_scale(np.zeros_like(st), {}) == 1.0   # black image: no division by zero


def test_rescale_frame_scales_K_about_pixel_corners():
    from polar_render.bop import Frame

    K = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])
    f = Frame("train", 0, 0, K, 64, 48, 1.0, np.eye(3), np.zeros(3), [])
    g = rescale_frame(f, 128, 96)
    assert np.allclose(g.K, [[200, 0, 63.5], [0, 200, 47.5], [0, 0, 1]]) and (g.width, g.height) == (128, 96)
    assert rescale_frame(f, 64, 48) is f and np.array_equal(f.K, K)   # the original is untouched


def _images(channels: list[str], rng) -> SampleImages:
    c = len(channels)
    s0 = rng.uniform(0.1, 1.0, (H, W, c)).astype(np.float32)
    lin = rng.uniform(-0.3, 0.3, (2, H, W, c)).astype(np.float32) * s0
    stokes = np.concatenate([s0[None], lin, np.zeros((1, H, W, c), np.float32)])
    normals = np.zeros((H, W, 3), np.float32)
    normals[..., 2] = -1
    mask = rng.integers(0, 3, (H, W)).astype(np.uint16)
    return SampleImages(stokes, channels, normals, rng.uniform(0.3, 0.5, (H, W)).astype(np.float32), mask,
                        mask * 2, 0, {"update_s": 0.1}, anomaly_mask=(mask == 2).astype(np.uint16), anomalies=[],
                        radiance={"denoise": {"method": "none"}})


@pytest.mark.parametrize("channels", [["R", "G", "B"], ["Y"]], ids=["rgb", "mono"])
def test_write_sample_follows_the_contract(tmp_path, channels):
    images = _images(channels, np.random.default_rng(2))
    sensor = {"exposure": "auto", "exposure_percentile": 99.5}
    meta = write_sample(tmp_path, images, {"index": 4, "seed": 9}, sensor)
    assert outputs.is_complete(tmp_path)
    back = outputs.load_sample(tmp_path)
    assert back["meta"] == meta   # what write_sample returns is what meta.json holds
    assert set(meta["files"]) == set(outputs.MODALITIES) - {"raw_mosaic"}
    for name, e in meta["files"].items():
        m = outputs.MODALITIES[name]
        assert (e["path"], e["dtype"], e["units"]) == (m.file, m.dtype, m.units), name
        assert (tmp_path / m.file).is_file() and back[name].dtype == np.dtype(m.dtype), name
        assert list(back[name].shape) == e["shape"], name
        assert m.channels is None or e["channels"] == list(m.channels), name
    st = images.stokes
    c = len(channels)
    assert np.array_equal(outputs.stokes_array(back), st)   # float32 stored bit-exact
    assert meta["files"]["stokes"]["channels"][:c + 1] == [f"S0.{x}" for x in channels] + [f"S1.{channels[0]}"]
    squeeze = (lambda x: x[..., 0]) if c == 1 else (lambda x: x)
    assert np.array_equal(back["intensity"], squeeze(st[0]))
    assert np.array_equal(back["dolp"], squeeze(dolp(st, ZERO_S0)))
    assert np.array_equal(back["aolp"], squeeze(aolp(st, ZERO_S0)))
    scale = meta["exposure_scale"]
    assert scale == exposure_scale(st, sensor) and meta["files"]["pol45"]["exposure_scale"] == scale
    i0 = back["pol0"].astype(np.float64) / scale
    i90 = back["pol90"].astype(np.float64) / scale
    assert np.allclose(i0 + i90, squeeze(st[0]), atol=1.0 / scale)   # I0 + I90 = S0, to a DN
    assert np.array_equal(back["object_mask"], images.object_mask)
    assert np.array_equal(back["anomaly_mask"], images.anomaly_mask)
    assert meta["timings"] == {"update_s": 0.1} and meta["denoise"] == {"method": "none"}


def test_entry_needs_channels_where_the_sensor_decides():
    assert outputs.entry("depth", (4, 5)) == {"path": "depth.tiff", "dtype": "float32", "shape": [4, 5],
                                              "channels": ["z"], "units": outputs.MODALITIES["depth"].units}
    with pytest.raises(ValueError, match="'dolp': channel names depend on the sensor"):
        outputs.entry("dolp", (4, 5))
    assert outputs.sample_dir("out", 12).as_posix() == "out/samples/000012"
