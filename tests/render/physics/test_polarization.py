"""Polarization physics: Fresnel DoLP of a smooth dielectric sphere, AoLP orientation,
Stokes <-> polarizer-image round trip and Malus' law on rendered outputs.

The rendered tests run once per render mode (Mitsuba-style variant parametrisation): an RGB
sensor on the spectral polarized variant, a mono sensor on the mono polarized variant
(chosen automatically), and the RGB sensor with OIDN denoising (``render.denoise: oidn``)."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
import yaml

from polar_render import bop
from polar_render.geometry import look_at_w2c
from polar_render.physics.polarization import (aolp, dolp, fresnel_reflection_dolp, polarizer_image,
                                       polarizer_images, stokes_from_polarizer_images)

from tests.render.conftest import render_dir, samples

IOR = 1.5
W, H, F = 256, 192, 700.0
# render mode -> (sensor.mode, render.denoise); the variant follows the sensor (variants.py)
RENDER_MODES = {"spectral": ("rgb", "none"), "mono": ("mono", "none"), "spectral_oidn": ("rgb", "oidn")}


def _channel_mean(x: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, W); mono images are stored (H, W)."""
    return x if x.ndim == 2 else x.mean(axis=-1)


@pytest.fixture(scope="module", params=list(RENDER_MODES))
def sphere_render(request, tmp_path_factory):
    """A 20 mm smooth black dielectric sphere under a uniform unpolarized environment
    (no spot light, ground moved 100 m away), seen from 0.3 m at 40 deg elevation."""
    sensor, denoise = RENDER_MODES[request.param]
    root = tmp_path_factory.mktemp(f"sphere_{request.param}")
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=20.0)  # mm, smooth normals
    mesh_path = root / "sphere.ply"
    mesh_path.write_bytes(sphere.export(file_type="ply", vertex_normal=True))
    scene = {
        "name": "sphere",
        "objects": {1: {"name": "sphere", "parts": {"ball": {"mesh": str(mesh_path), "material": "glass"}}}},
        "materials": {"glass": {"type": "pplastic", "color": 0.0, "alpha": 0.001, "ior": IOR}},
        "lights": {"spot": {"intensity": 0.0}},
        "background": {"ground": {"z_m": -100.0, "size_m": 1.0}, "environment": {"radiance": 1.0}},
        "render": {"spp": 32, "max_depth": 3, "denoise": denoise},
        "sensor": {"mode": sensor},
    }
    (root / "scene.yaml").write_text(yaml.safe_dump(scene))
    K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1.0]])
    eye = np.array([0.3 * np.cos(np.radians(40)), 0.0, 0.3 * np.sin(np.radians(40))])
    R_w2c, t_w2c = look_at_w2c(eye, np.zeros(3), roll_rad=np.radians(25))
    layout = root / "layout"
    bop.write_camera(layout, bop.CameraInfo(K, W, H))
    bop.write_models(layout, {1: sphere})
    frame = bop.Frame("train_pbr", 0, 0, K, W, H, 1.0, R_w2c, t_w2c,
                      (bop.ObjectPose(1, R_w2c, t_w2c),))  # sphere at the world origin
    bop.write_scene(layout, "train_pbr", 0, [frame])
    out = render_dir(root / "out", scene=root / "scene.yaml", layout=layout, n=1)
    sample = samples(out)[0]
    assert ("mono_polarized" in sample["meta"]["variant"]) == (sensor == "mono")
    assert sample["meta"]["denoise"]["method"] == denoise
    return sample, K


def _sphere_pixels(sample, K):
    n = sample["normals"].astype(np.float64)
    on = sample["object_mask"] == 1
    # erode: silhouette pixels mix sphere and background within the pixel
    inner = on.copy()
    inner[1:-1, 1:-1] &= on[:-2, 1:-1] & on[2:, 1:-1] & on[1:-1, :-2] & on[1:-1, 2:]
    v, u = np.nonzero(inner)
    rays = np.linalg.solve(K, np.stack([u, v, np.ones_like(u)]).astype(np.float64)).T
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    normals = n[v, u]
    cos_t = np.clip(-np.einsum("ij,ij->i", normals, rays), 0.0, 1.0)
    return v, u, rays, normals, np.arccos(cos_t)


def test_dolp_follows_fresnel(sphere_render):
    """Rendered DoLP vs incidence angle follows (Rs - Rp)/(Rs + Rp) for IOR 1.5:
    median per 5-degree bin within 0.03 up to 80 degrees (Brewster peak included)."""
    sample, K = sphere_render
    v, u, _, _, theta = _sphere_pixels(sample, K)
    d = _channel_mean(sample["dolp"])[v, u]
    expected = fresnel_reflection_dolp(theta, IOR)
    bins = np.arange(0, 81, 5)
    checked = 0
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (np.degrees(theta) >= lo) & (np.degrees(theta) < hi)
        if sel.sum() < 20:
            continue
        err = np.median(d[sel]) - np.median(expected[sel])
        assert abs(err) < 0.03, f"{lo}-{hi} deg: rendered {np.median(d[sel]):.3f} vs Fresnel {np.median(expected[sel]):.3f}"
        checked += 1
    assert checked >= 12
    brewster = np.degrees(np.arctan(IOR))
    near = np.abs(np.degrees(theta) - brewster) < 2
    assert np.median(d[near]) > 0.9  # specular reflection at Brewster's angle is almost fully polarized


def test_aolp_is_tangential(sphere_render):
    """Specular reflection is s-polarized: E perpendicular to the plane of incidence. AoLP is
    measured from the image x axis, counter-clockwise on screen (towards -y of the pixel grid)."""
    sample, K = sphere_render
    v, u, rays, normals, theta = _sphere_pixels(sample, K)
    s_dir = np.cross(rays, normals)
    expected = np.arctan2(-s_dir[:, 1], s_dir[:, 0])  # screen counter-clockwise
    a = _channel_mean(sample["aolp"])[v, u]
    diff = (a - expected + np.pi / 2) % np.pi - np.pi / 2
    strong = _channel_mean(sample["dolp"])[v, u] > 0.2
    assert strong.sum() > 500
    assert np.degrees(np.median(np.abs(diff[strong]))) < 2.0


def test_rendered_polarizer_images_round_trip(sphere_render):
    """pol0 + pol90 = pol45 + pol135 = S0 * exposure_scale (to 16-bit quantisation)."""
    sample, _ = sphere_render
    meta = sample["meta"]
    scale = meta["exposure_scale"]
    st = sample["stokes"]
    c = st.shape[-1] // 4
    comp = [st[..., k * c:(k + 1) * c].squeeze(-1) if c == 1 else st[..., k * c:(k + 1) * c] for k in range(4)]
    s0 = comp[0]
    p = {a: sample[f"pol{a}"].astype(np.float64) for a in (0, 45, 90, 135)}
    ok = np.all([p[a] < 65535 for a in p], axis=0)  # unsaturated in all four images
    assert ok.mean() > 0.99
    assert np.allclose((p[0] + p[90])[ok], s0[ok] * scale, atol=1.01)
    assert np.allclose((p[45] + p[135])[ok], s0[ok] * scale, atol=1.01)
    # the PNGs carry S1, S2 too: recover them and compare with the float Stokes
    rec = stokes_from_polarizer_images(p[0], p[45], p[90], p[135]) / scale
    assert np.allclose(rec[1][ok], comp[1][ok], atol=1.5 / scale)


def test_zero_intensity_has_no_nan():
    st = np.zeros((4, 3, 3), np.float32)
    st[:, 1, 1] = [1.0, 0.5, 0.5, 0.0]
    d, a = dolp(st), aolp(st)
    assert np.all(np.isfinite(d)) and np.all(np.isfinite(a))
    assert d[0, 0] == 0 and a[0, 0] == 0
    assert d[1, 1] == pytest.approx(np.sqrt(0.5)) and a[1, 1] == pytest.approx(np.pi / 8)


def test_stokes_polarizer_algebra():
    rng = np.random.default_rng(0)
    s0 = rng.uniform(0.1, 2.0, 1000)
    p = rng.uniform(0, 1, 1000)
    phi = rng.uniform(-np.pi / 2, np.pi / 2, 1000)
    st = np.stack([s0, p * s0 * np.cos(2 * phi), p * s0 * np.sin(2 * phi), np.zeros_like(s0)])
    imgs = polarizer_images(st)
    assert np.allclose(imgs[0] + imgs[90], s0) and np.allclose(imgs[45] + imgs[135], s0)
    assert np.allclose(dolp(st), p) and np.allclose(aolp(st), phi)
    # Malus: fully polarized light at phi through a polarizer at theta gives S0 cos^2(theta - phi)
    full = np.stack([s0, s0 * np.cos(2 * phi), s0 * np.sin(2 * phi), np.zeros_like(s0)])
    for theta in np.radians([0, 30, 45, 90, 135]):
        assert np.allclose(polarizer_image(full, theta), s0 * np.cos(theta - phi) ** 2)
    rec = stokes_from_polarizer_images(*(imgs[a] for a in (0, 45, 90, 135)))
    assert np.allclose(rec, st[:3])


def test_fresnel_reference_values():
    assert fresnel_reflection_dolp(0.0, 1.5) == pytest.approx(0.0, abs=1e-9)
    assert fresnel_reflection_dolp(np.arctan(1.5), 1.5) == pytest.approx(1.0)
    assert 0 < fresnel_reflection_dolp(np.radians(80), 1.5) < 1
