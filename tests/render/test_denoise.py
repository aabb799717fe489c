"""Radiance policy, OIDN denoising through the polarizer images, and the mono variant path.

* no negative radiance in any output (cone projection, counted in meta.json);
* denoised outputs: I0 + I90 = I45 + I135 = S0, DoLP in [0, 1], |S3| inside the cone,
  bit-identical rerun, setting recorded in meta.json and run.json (other setting refused);
* mono sensors render with the mono variant; an RGB sensor refuses it;
* a bad ``render.denoise`` fails at load, naming the file and key.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from polar_render.config.scenes import SceneConfigError, load_scene
from polar_render.denoise import denoise_stokes
from polar_render.outputs import stokes_array
from polar_render.run.request import RenderRequest
from polar_render.run.runner import run
from polar_render.physics.polarization import dolp, polarizer_images, project_to_cone

from tests.render.conftest import render_dir, samples, scene_variant

KW = dict(scene="usb_brick", n=2, res=(96, 72), spp=2, seed=5)
RADIANCE = ("intensity", "pol0", "pol45", "pol90", "pol135", "dolp")


def _assert_physical(sample) -> None:
    """S0 >= 0, |(S1, S2, S3)| <= S0, radiance modalities >= 0, polarizer identities."""
    st = stokes_array(sample).astype(np.float64)
    assert np.all(st[0] >= 0)
    assert np.all(np.sqrt((st[1:] ** 2).sum(0)) <= st[0] * (1 + 1e-5) + 1e-12)
    for k in RADIANCE:
        assert np.all(sample[k] >= 0), k
    assert np.all(sample["dolp"] <= 1)
    img = polarizer_images(st)
    assert min(float(i.min()) for i in img.values()) >= -1e-6 * max(float(st[0].max()), 1.0)
    assert np.allclose(img[0] + img[90], st[0], atol=1e-6) and np.allclose(img[45] + img[135], st[0], atol=1e-6)


# --------------------------------------------------------------------------- cone projection
def test_project_to_cone_properties():
    rng = np.random.default_rng(1)
    st = rng.normal(0, 1, (4, 5000)).astype(np.float32)
    st[0, :2500] = np.abs(st[0, :2500]) * 3  # about half inside
    out, changed = project_to_cone(st)
    norm = np.sqrt((out[1:].astype(np.float64) ** 2).sum(0))
    assert np.all(out[0] >= 0) and np.all(norm <= out[0] * (1 + 1e-6) + 1e-12)
    assert np.array_equal(out[:, ~changed], st[:, ~changed])   # vectors inside kept bit for bit
    inside = np.sqrt((st[1:].astype(np.float64) ** 2).sum(0)) <= st[0]
    assert np.array_equal(changed, ~inside)
    again, changed2 = project_to_cone(out)
    assert np.allclose(again, out, atol=1e-6) and changed2.sum() <= changed.sum()
    # nearest point: no cone point tried at random is closer
    k = np.flatnonzero(changed)[0]
    trial = rng.normal(0, 1, (4, 20000))
    trial[0] = np.abs(trial[0]) + np.sqrt((trial[1:] ** 2).sum(0))
    best = np.linalg.norm(trial - st[:, k:k + 1], axis=0).min()
    assert np.linalg.norm(out[:, k] - st[:, k]) <= best + 1e-6
    # polarizer images of projected vectors are non-negative
    assert min(float(i.min()) for i in polarizer_images(out).values()) >= -1e-6


# --------------------------------------------------------------------------- denoiser on synthetic Stokes
def _synthetic(noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = 64, 80
    y, x = np.mgrid[0:h, 0:w] / 40.0
    s0 = 0.5 + 0.3 * np.sin(3 * x) * np.cos(2 * y)
    p, phi = 0.4 + 0.2 * np.cos(4 * x), 0.8 * np.sin(2 * y)
    clean = np.stack([s0, p * s0 * np.cos(2 * phi), p * s0 * np.sin(2 * phi), 0.05 * s0])[..., None]
    clean = np.repeat(clean, 3, axis=-1).astype(np.float32)
    noisy = (clean * rng.gamma(1 / noise**2, noise**2, clean.shape[1:])[None]
             + rng.normal(0, noise * 0.2, clean.shape)).astype(np.float32)
    guides = np.concatenate([np.full((h, w, 3), 0.5, np.float32), np.tile([0, 0, 1.0], (h, w, 1)).astype(np.float32)], -1)
    return clean, noisy, guides


@pytest.mark.parametrize("channels", [3, 1])
def test_denoise_stokes_consistent_and_better(channels):
    clean, noisy, guides = _synthetic(0.5)
    clean, noisy = clean[..., :channels], noisy[..., :channels]
    out, _ = denoise_stokes(noisy, guides)
    again, _ = denoise_stokes(noisy, guides)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert np.array_equal(out, again)                     # deterministic (OIDN CPU device)
    img = polarizer_images(out.astype(np.float64))
    assert np.allclose(img[0] + img[90], out[0], atol=1e-5) and np.allclose(img[45] + img[135], out[0], atol=1e-5)
    d = dolp(out)
    assert np.all((d >= 0) & (d <= 1))
    assert np.all(np.sqrt((out[1:].astype(np.float64) ** 2).sum(0)) <= out[0] * (1 + 1e-5) + 1e-12)
    rmse = lambda a: float(np.sqrt(np.mean((dolp(a) - dolp(clean)) ** 2)))  # noqa: E731
    assert rmse(out) < 0.6 * rmse(project_to_cone(noisy)[0])


# --------------------------------------------------------------------------- rendered outputs
@pytest.fixture(scope="module")
def denoised_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("denoised")
    return render_dir(out / "a", denoise="oidn", **KW)


def test_raw_outputs_have_no_negative_radiance(usb_brick_render):
    for s in samples(usb_brick_render):
        _assert_physical(s)
        assert s["meta"]["denoise"] == {"method": "none"}
        assert s["meta"]["cone_projection"]["stokes_vectors"] >= 0


def test_denoised_outputs_physical_recorded_and_deterministic(denoised_run, tmp_path):
    first = samples(denoised_run)
    for s in first:
        _assert_physical(s)
        assert s["meta"]["denoise"]["method"] == "oidn" and s["meta"]["denoise"]["guides"] == "albedo+normal"
        assert s["meta"]["timings"]["denoise_s"] > 0
    assert json.loads((denoised_run / "run.json").read_text())["denoise"] == "oidn"
    again = samples(render_dir(tmp_path / "b", denoise="oidn", **KW))
    for a, b in zip(first, again):
        for k in ("stokes", "pol0", "pol45", "pol90", "pol135", "intensity", "dolp", "aolp"):
            assert np.array_equal(a[k], b[k]), k
    raw = samples(render_dir(tmp_path / "raw", **KW))
    assert not np.array_equal(raw[0]["stokes"], first[0]["stokes"])


def test_rerun_with_other_denoise_setting_is_refused(denoised_run):
    with pytest.raises(ValueError, match="denoise"):
        run(RenderRequest(out=denoised_run, denoise="none", progress=False, **KW))


def test_scene_file_denoise_key(tmp_path):
    cfg = load_scene("usb_brick")
    bad = scene_variant(tmp_path, render={**cfg.render, "denoise": "bm3d"})
    with pytest.raises(SceneConfigError, match=r"render\.denoise") as exc:
        load_scene(bad)
    assert str(bad) in str(exc.value)
    good = scene_variant(tmp_path, "usb_brick", render={**cfg.render, "denoise": "oidn"})
    assert load_scene(good).render["denoise"] == "oidn"


# --------------------------------------------------------------------------- mono variant
def test_mono_sensor_uses_mono_variant(tmp_path):
    cfg = load_scene("usb_brick")
    scene = scene_variant(tmp_path, sensor={**cfg.sensor, "mode": "mono"})
    s = samples(render_dir(tmp_path / "mono", scene=scene, n=1, res=(96, 72), spp=4, seed=2, denoise="oidn"))[0]
    assert "mono_polarized" in s["meta"]["variant"]
    assert s["stokes"].shape == (72, 96, 4) and s["pol0"].shape == (72, 96) and s["dolp"].shape == (72, 96)
    assert s["meta"]["files"]["stokes"]["channels"] == ["S0.Y", "S1.Y", "S2.Y", "S3.Y"]
    _assert_physical(s)
    assert (s["object_mask"] > 0).any() and (s["intensity"][s["object_mask"] > 0] > 0).mean() > 0.9


def test_rgb_sensor_refuses_mono_variant(tmp_path):
    from polar_render.mitsuba.variants import find_libllvm

    variant = "llvm_ad_mono_polarized" if find_libllvm() else "scalar_mono_polarized"
    with pytest.raises(ValueError, match="sensor.mode"):
        run(RenderRequest(scene="usb_brick", out=tmp_path / "o", n=1, res=(32, 24), spp=1, variant=variant,
                          progress=False))


def test_oidn_device_choice(monkeypatch):
    """OIDN's CUDA device only where a GPU is visible and its CUDA backend supports it."""
    import pyoidn

    from polar_render import denoise

    from polar_render.mitsuba import variants

    monkeypatch.setattr(variants, "cuda_visible", lambda: False)
    assert denoise.oidn_device() == "cpu"
    monkeypatch.setattr(variants, "cuda_visible", lambda: True)
    monkeypatch.setattr(pyoidn.Device, "is_cuda_available", staticmethod(lambda device_id=0: True))
    assert denoise.oidn_device() == "cuda"
    monkeypatch.setattr(pyoidn.Device, "is_cuda_available", staticmethod(lambda device_id=0: False))
    assert denoise.oidn_device() == "cpu"
