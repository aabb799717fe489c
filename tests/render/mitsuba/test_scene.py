"""``MitsubaScene`` (polar_render.mitsuba.scene): built once per structure, updated per sample.

Every sample writes all it renders through ``mi.traverse``, so a scene updated to sample j
after rendering sample i must render exactly what a scene built fresh for j renders (same
Monte Carlo seed: bit-identical, see tests/render/run/test_determinism.py for why exact).
Runs on every polarized variant (``mi_scene_variant``); frames are hand-made (one object
at the origin, camera on a sphere around it) so no layout sampling is involved.
"""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.config.scenes import load_scene
from polar_render.mitsuba.scene import SceneError
from tests.render.mitsuba.scenes import built_scene, object_frame, scene_inputs


@pytest.fixture(scope="module")
def usb_brick():
    return load_scene("usb_brick")


def _render(scene, frame, appearance, seed: int = 11):
    """(Stokes image, exact AOVs with channel 6 turned from Mitsuba's registry ids, which
    are per process, into the structure's part ids: 0 ground, -1 anything else)."""
    scene.update(frame, appearance)
    aov = scene.render_aov()
    ids = {**{k: s.part_id for k, s in scene.shape_registry.items()}, scene.ground_registry: 0}
    aov[..., 6] = np.vectorize(lambda i: ids.get(int(i), -1))(aov[..., 6])
    return scene.render_stokes(seed), aov


def test_update_to_a_sample_equals_building_it_fresh(mi_scene_variant, usb_brick):
    mi, cfg = mi_scene_variant, usb_brick
    st0, f0, app0 = scene_inputs(cfg, 0)
    st1, f1, app1 = scene_inputs(cfg, 1)
    assert st0.key(cfg.materials) == st1.key(cfg.materials)    # one structure: one scene serves both
    reused = built_scene(mi, cfg, st0, app0, stains=False)
    first_stokes, _ = _render(reused, f0, app0)
    stokes, aov = _render(reused, f1, app1)
    fresh_stokes, fresh_aov = _render(built_scene(mi, cfg, st1, app1, stains=False), f1, app1)
    assert not np.array_equal(first_stokes, stokes)               # sample 1 really differs from 0
    assert np.array_equal(aov, fresh_aov) and {0, 1} <= set(np.unique(aov[..., 6]))   # ground and a part in view
    assert np.array_equal(stokes, fresh_stokes)
    assert np.isfinite(stokes).all() and stokes[..., -12:-9].mean() > 0.01


def test_aov_pass_is_exact_camera_geometry(mi_scene_variant, usb_brick):
    """World positions of the exact AOV pass project back onto their own pixel centres
    through the frame's OpenCV intrinsics and pose; normals are unit length; the object
    covers the middle of the image and its shape ids are the structure's."""
    mi, cfg = mi_scene_variant, usb_brick
    structure, frame, app = scene_inputs(cfg, 2)
    scene = built_scene(mi, cfg, structure, app, stains=False)
    scene.update(frame, app)
    aov = scene.render_aov()
    on_part = np.isin(aov[..., 6], list(scene.shape_registry))
    assert on_part[frame.height // 2, frame.width // 2] and 20 < on_part.sum() < on_part.size
    assert {scene.shape_registry[int(i)].part for i in np.unique(aov[..., 6][on_part])} <= \
        {p.name for p in cfg.objects[1].parts}
    R, t = np.asarray(frame.R_w2c), np.asarray(frame.t_w2c_mm) / 1000.0
    cam = aov[..., 0:3][on_part] @ R.T + t
    uv = cam[:, :2] / cam[:, 2:3] @ np.diag([frame.K[0, 0], frame.K[1, 1]]) + frame.K[:2, 2]
    v, u = np.nonzero(on_part)
    assert np.abs(uv - np.stack([u, v], -1)).max() < 1e-2                    # pixels
    assert np.allclose(np.linalg.norm(aov[..., 3:6][on_part], axis=-1), 1.0, atol=1e-4)


def test_update_refuses_a_frame_of_another_size(mi_scene_variant, usb_brick):
    mi, cfg = mi_scene_variant, usb_brick
    structure, frame, app = scene_inputs(cfg, 0)
    scene = built_scene(mi, cfg, structure, app, stains=False)
    with pytest.raises(SceneError, match="differs from the scene's 32x24"):
        scene.update(object_frame(cfg, 0, res=(40, 30)), app)


def _part_noise(run_a, run_b, n: int) -> float:
    """Median over samples of std(a - b) / sqrt(2) / mean(a) on the part's pixels: the render
    noise of two independent Monte Carlo streams of the same samples."""
    import polar_render

    out = []
    for i in range(n):
        a = polar_render.load_sample(run_a / "samples" / f"{i:06d}")
        b = polar_render.load_sample(run_b / "samples" / f"{i:06d}")
        part = a["object_mask"] > 0
        ia, ib = a["intensity"].astype(np.float64)[part], b["intensity"].astype(np.float64)[part]
        out.append(np.std(ia - ib) / np.sqrt(2) / ia.mean())
    return float(np.median(out))


def test_render_sampler_lowers_noise_and_stays_deterministic(tmp_path):
    """``render.sampler: ldsampler`` (low-discrepancy pixel positions) renders bit-identically on
    rerun and has less part noise than the ``independent`` sampler at equal spp (edges: its
    pixel-coverage estimate converges faster; ldsampler renders exactly its spp when that is a power of 4); setting the key changes
    the scene's digest."""
    import polar_render
    from polar_render.config.scenes import write_scene_variant

    kw = dict(n=4, seed=1000, spp=16, res=(160, 120), progress=False, denoise="none")
    noise = {}
    for sampler in ("independent", "ldsampler"):
        scene = write_scene_variant(tmp_path / sampler / "scene.yaml", "usb_brick_station", {"render.sampler": sampler})
        polar_render.render(scene, tmp_path / f"{sampler}_a", **kw)
        polar_render.render(scene, tmp_path / f"{sampler}_b", noise_seed=1, **kw)
        noise[sampler] = _part_noise(tmp_path / f"{sampler}_a", tmp_path / f"{sampler}_b", kw["n"])
    assert noise["ldsampler"] < 0.85 * noise["independent"], noise
    polar_render.render(tmp_path / "ldsampler" / "scene.yaml", tmp_path / "ld_again", **kw)
    for i in range(kw["n"]):
        a = polar_render.load_sample(tmp_path / "ldsampler_a" / "samples" / f"{i:06d}")
        b = polar_render.load_sample(tmp_path / "ld_again" / "samples" / f"{i:06d}")
        assert np.array_equal(a["stokes"], b["stokes"])
    assert load_scene(tmp_path / "independent" / "scene.yaml").digest() != \
        load_scene(tmp_path / "ldsampler" / "scene.yaml").digest()
