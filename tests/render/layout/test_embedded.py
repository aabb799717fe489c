"""Tests for the pybullet BOP layout sampler (world in metres, BOP in mm)."""
import shutil

import numpy as np
import pytest
import trimesh

from polar_render import bop

from polar_render.layout import embedded as layout
from polar_render.geometry import project_points
from polar_render.config.schema import layout_from_dict
from polar_render.layout.embedded import LayoutConfig, generate_layout, sample_scene
from polar_render.parts.usb_brick import combined_mesh

# rest height found with convex hulls and a 0.1 mm collision margin: 0.07-0.09 mm above the plane
REST_TOL_MM = 0.25


@pytest.fixture(scope="module")
def models():
    return {1: combined_mesh(), 2: trimesh.creation.box((30.0, 15.0, 20.0))}


def _posed_min_z_mm(mesh, T):
    v = np.asarray(mesh.vertices) * 1e-3 @ T[:3, :3].T + T[:3, 3]
    return 1000.0 * v[:, 2].min()


def test_objects_rest_on_support(models):
    cfg = LayoutConfig(instances=[1], cameras_per_scene=1)
    for s in range(6):
        stats = {}
        objs, _ = sample_scene(models, cfg, np.random.default_rng([1, s]), stats=stats)
        assert stats["at_rest"] and stats["settle_s"] < cfg.settle_max_s
        assert stats["max_lin_speed"] < layout.REST_LIN_SPEED_M_S
        assert stats["max_ang_speed"] < layout.REST_ANG_SPEED_RAD_S
        (oid, T), = objs
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
        assert abs(_posed_min_z_mm(models[oid], T)) < REST_TOL_MM
        assert np.hypot(*T[:2, 3]) < 0.1   # did not fly away


def test_several_instances_no_penetration(models):
    cfg = LayoutConfig(instances=[1, 1, 2], cameras_per_scene=1)
    for s in range(3):
        stats = {}
        objs, _ = sample_scene(models, cfg, np.random.default_rng([2, s]), stats=stats)
        assert stats["at_rest"]
        assert [o for o, _ in objs] == [1, 1, 2]
        zs = [_posed_min_z_mm(models[o], T) for o, T in objs]
        assert min(zs) > -REST_TOL_MM
        assert abs(min(zs)) < REST_TOL_MM   # the lowest one lies on the support


def test_cameras(models):
    cfg = LayoutConfig(instances=[1, 2], cameras_per_scene=8)
    K = layout.camera_matrix(cfg)
    assert K[0, 2] == pytest.approx(319.5) and K[1, 2] == pytest.approx(239.5)
    for s in range(3):
        objs, cams = sample_scene(models, cfg, np.random.default_rng([3, s]))
        assert len(cams) == 8
        centres = []
        for oid, T in objs:
            v = np.asarray(models[oid].vertices) * 1e-3 @ T[:3, :3].T + T[:3, 3]
            centres.append((v.min(0) + v.max(0)) / 2)
        c = np.mean(centres, axis=0)
        for R, t in cams:
            eye = -R.T @ t / 1000.0
            d = eye - c
            r = np.linalg.norm(d)
            assert 0.40 - 1e-9 <= r <= 0.49 + 1e-9
            el = np.degrees(np.arcsin(d[2] / r))
            assert 15.0 - 1e-6 <= el <= 85.0 + 1e-6
            # the centre projects near the image centre: offset <= f * |jitter| / distance
            uv = project_points(K, R, t, (c * 1000.0)[None])[0]
            tol = cfg.fx * np.sqrt(3) * cfg.look_at_jitter_mm / (1000 * 0.40) + 1.0
            assert np.hypot(uv[0] - K[0, 2], uv[1] - K[1, 2]) <= tol


def _scene_files(root, sid):
    d = root / "train_pbr" / f"{sid:06d}"
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_generate_determinism_resume_and_readback(tmp_path, models):
    cfg = LayoutConfig(instances=[1, 2], cameras_per_scene=3)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_layout(a, models, cfg, seed=7, scene_ids=range(5), progress=False)
    generate_layout(b, models, cfg, seed=7, scene_ids=[3], progress=False)
    assert _scene_files(a, 3) == _scene_files(b, 3)            # alone == in a batch
    assert (a / "camera.json").read_bytes() == (b / "camera.json").read_bytes()
    generate_layout(c, models, cfg, seed=8, scene_ids=[3], progress=False)
    assert _scene_files(a, 3) != _scene_files(c, 3)            # the seed matters

    before = {s: _scene_files(a, s) for s in range(5)}
    mtime = (a / "train_pbr" / "000001" / "scene_gt.json").stat().st_mtime_ns
    shutil.rmtree(a / "train_pbr" / "000002")
    generate_layout(a, models, cfg, seed=7, scene_ids=range(5), progress=False)
    assert {s: _scene_files(a, s) for s in range(5)} == before  # resumed scene identical
    assert (a / "train_pbr" / "000001" / "scene_gt.json").stat().st_mtime_ns == mtime  # not rewritten

    lay = bop.read_layout(a)
    assert lay.split == "train_pbr" and lay.scene_ids() == [0, 1, 2, 3, 4]
    frames = lay.frames()
    assert len(frames) == 15
    assert sorted(lay.models_info) == [1, 2]
    for fr in frames:
        assert (fr.width, fr.height) == (640, 480)
        assert [o.obj_id for o in fr.objects] == [1, 2]
        # m2c composed from w2c and m2w: back in the world frame the parts sit on z >= 0
        Rwc, twc = fr.R_w2c, fr.t_w2c_mm
        for o in fr.objects:
            v = np.asarray(models[o.obj_id].vertices)
            pc = v @ o.R_m2c.T + o.t_m2c_mm
            pw = (pc - twc) @ Rwc            # R^T (p_c - t)
            assert pw[:, 2].min() > -REST_TOL_MM
            assert pc[:, 2].min() > 300.0    # in front of the camera


def test_config_from_dict():
    cfg = layout_from_dict({"instances": [1, 1], "radius_m": [0.3, 0.35], "fx": 1500})
    assert cfg.radius_m == (0.3, 0.35) and cfg.instances == [1, 1] and cfg.fx == 1500
    with pytest.raises(ValueError, match="drop_height_m"):
        layout_from_dict({"instances": [1], "drop_height_m": [1, 2]})
    with pytest.raises(ValueError):
        layout_from_dict({"instances": [1], "elevation_deg": [80, 10]})


def test_scene_s_is_the_layout_stream_of_seed_and_s(tmp_path, models):
    """generate_layout draws scene s from rng's ``layout`` stream of (seed, s), nothing else."""
    from polar_render import rng

    cfg = LayoutConfig(instances=[1], cameras_per_scene=2)
    generate_layout(tmp_path, models, cfg, seed=4, scene_ids=[2], progress=False)
    frames = bop.read_layout(tmp_path).frames()
    objects, cameras = sample_scene(models, cfg, rng.stream("layout", 4, 2))
    (_, T), = objects
    for fr, (R, t) in zip(frames, cameras):
        np.testing.assert_allclose(fr.R_w2c, R, atol=1e-9)
        np.testing.assert_allclose(fr.t_w2c_mm, t, atol=1e-6)
        np.testing.assert_allclose(fr.objects[0].R_m2c, R @ T[:3, :3], atol=1e-9)


def test_station_eye_is_the_camera_without_tolerances():
    """station_eye (nominal, no draws) equals a station scene sampled with zero tolerances,
    and the tolerances move the camera by at most their size."""
    box = trimesh.creation.box((20.0, 10.0, 6.0))
    box.apply_translation([0.0, 0.0, 3.0])
    view = {"elevation_deg": 60.0, "azimuth_deg": 30.0}
    nominal = LayoutConfig(instances=[1], mode="station", views={"v": view}, fill=0.5)
    _, ((R, t),) = sample_scene({1: box}, nominal, np.random.default_rng(0))
    eye = -R.T @ (t / 1000.0)
    np.testing.assert_allclose(layout.station_eye((20.0, 10.0, 6.0), view, 640, 480, 2000.0, 0.5), eye, atol=1e-12)
    shaken = LayoutConfig(instances=[1], mode="station", views={"v": view}, fill=0.5, camera_position_mm=2.0)
    for s in range(5):
        _, ((R2, t2),) = sample_scene({1: box}, shaken, np.random.default_rng(s))
        moved = -R2.T @ (t2 / 1000.0) - eye
        assert 0 < np.abs(moved).max() <= 2e-3 + 1e-12
