"""Tests for polar_render.bop (BOP reader/writer) and polar_render.geometry."""
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import trimesh

from polar_render.bop import (BopFormatError, CameraInfo, Frame, ObjectPose, read_layout, write_camera,
                              write_models, write_scene)
from polar_render.geometry import invert_pose, is_rotation, look_at_w2c, pose_matrix, project_points

SCENE = Path("train_pbr") / "000000"


# ----------------------------------------------------------------------------- helpers

def _rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _edit_json(path: Path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))  # json.dumps writes NaN/Infinity tokens for non-finite floats


@pytest.fixture
def bop_copy(bop_fixture_dir, tmp_path):
    dst = tmp_path / "bop"
    shutil.copytree(bop_fixture_dir, dst)
    return dst


# ----------------------------------------------------------------------------- the BlenderProc fixture

def test_read_fixture(bop_fixture_dir):
    lay = read_layout(bop_fixture_dir)
    assert lay.split == "train_pbr"
    assert lay.scene_ids() == [0]
    frames = lay.frames()
    assert [(f.scene_id, f.im_id) for f in frames] == [(0, 0), (0, 1), (0, 2)]
    assert [f.im_id for f in lay.frames(0)] == [0, 1, 2]
    with pytest.raises(ValueError, match="no scene 5"):
        lay.frames(5)
    assert (lay.camera.width, lay.camera.height, lay.camera.depth_scale) == (640, 480, 1.0)
    assert sorted(lay.models_info) == [1, 2]
    for f in frames:
        assert [o.obj_id for o in f.objects] == [1, 2]
        assert (f.width, f.height) == (640, 480)
        np.testing.assert_allclose(f.K, lay.camera.K)
        assert f.R_w2c is not None and is_rotation(f.R_w2c)
    assert lay.model_path(2) == bop_fixture_dir / "models" / "obj_000002.ply"
    m = lay.load_model(1)
    np.testing.assert_allclose(m.extents, [40, 30, 20], atol=1e-4)  # mm


def test_fixture_principal_point_convention(bop_fixture_dir):
    # BlenderProc's cam_K puts cx, cy at W/2, H/2 (up to float32 noise of the lens shift), i.e. half a
    # pixel right/below the OpenCV image centre ((W-1)/2, (H-1)/2); the depth maps are consistent with
    # this K read in the OpenCV convention (see test_fixture_depth_agrees_with_poses).
    cam = read_layout(bop_fixture_dir).camera
    assert cam.K[0, 2] == pytest.approx(cam.width / 2, abs=1e-6)
    assert cam.K[1, 2] == pytest.approx(cam.height / 2, abs=1e-6)


def test_fixture_depth_agrees_with_poses(bop_fixture_dir):
    import imageio.v3 as iio

    lay = read_layout(bop_fixture_dir)
    all_diff = []
    for f in lay.frames():
        depth = iio.imread(lay.root / lay.split / f"{f.scene_id:06d}" / "depth" / f"{f.im_id:06d}.png")
        assert depth.dtype == np.uint16 and depth.shape == (f.height, f.width)
        depth_mm = depth.astype(np.float64) * f.depth_scale
        for o in f.objects:
            mesh = lay.load_model(o.obj_id)
            pts, face_idx = trimesh.sample.sample_surface(mesh, 3000, seed=o.obj_id + 10 * f.im_id)
            pc = pts @ o.R_m2c.T + o.t_m2c_mm
            n_c = mesh.face_normals[face_idx] @ o.R_m2c.T
            front = np.einsum("ij,ij->i", n_c, pc) < -1e-6  # back faces cannot be seen
            uv = project_points(f.K, o.R_m2c, o.t_m2c_mm, pts)
            col, row = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)  # OpenCV: centres at ints
            ok = front & (col >= 0) & (col < f.width) & (row >= 0) & (row < f.height)
            assert ok.sum() > 500
            diff = pc[ok, 2] - depth_mm[row[ok], col[ok]]
            match = np.abs(diff) < 5.0  # the rest is occluded (by the other object) or at silhouettes
            frac = match.mean()
            assert frac >= 0.30, f"im {f.im_id} obj {o.obj_id}: only {frac:.0%} of visible points match depth"
            assert np.median(np.abs(diff[match])) < 2.0, f"im {f.im_id} obj {o.obj_id}"
            all_diff.append(diff)
    # pooled, tighter: the PNG's 1 mm quantisation gives ~0.3 mm; a principal point off by 3 px already fails this
    all_diff = np.abs(np.concatenate(all_diff))
    assert np.mean(all_diff < 5.0) > 0.8
    assert np.median(all_diff[all_diff < 5.0]) < 0.6


def _ray_box_depth(K, R_m2c, t_m2c, lo, hi, u, v):
    """z (mm) where the camera ray through OpenCV pixel coords (u, v) first hits the box [lo, hi] (model
    frame); inf on a miss.  Slab method in the model frame."""
    rays = np.stack([u, v, np.ones_like(u)], 1) @ np.linalg.inv(K).T  # z = 1
    o, d = -R_m2c.T @ t_m2c, rays @ R_m2c
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - o) / d, (hi - o) / d
    near, far = np.nanmax(np.minimum(t1, t2), 1), np.nanmin(np.maximum(t1, t2), 1)
    return np.where((far >= near) & (near > 0), near, np.inf)


def test_fixture_pixel_centre_convention(bop_fixture_dir):
    """Ray-cast the two boxes through every pixel: the depth PNGs match cam_K read with OpenCV pixel
    centres (u = col) exactly, and worse with centres at col + 0.5 (so cx = W/2 is a real half-pixel
    principal-point offset, not a different pixel convention)."""
    import imageio.v3 as iio

    lay = read_layout(bop_fixture_dir)
    for f in lay.frames():
        depth = iio.imread(lay.root / lay.split / f"{f.scene_id:06d}" / "depth" / f"{f.im_id:06d}.png") * f.depth_scale
        rows, cols = np.mgrid[0:f.height, 0:f.width]
        bad = {}
        for off in (0.0, 0.5):
            z = np.full(rows.size, np.inf)
            for o in f.objects:
                mi = lay.models_info[o.obj_id]
                lo = np.array([mi["min_x"], mi["min_y"], mi["min_z"]])
                hi = lo + [mi["size_x"], mi["size_y"], mi["size_z"]]
                z = np.minimum(z, _ray_box_depth(f.K, o.R_m2c, o.t_m2c_mm, lo, hi,
                                                 cols.ravel() + off, rows.ravel() + off))
            hit = np.isfinite(z)
            bad[off] = int(np.sum(np.abs(z[hit] - depth.ravel()[hit]) > 1.0))
            assert hit.sum() > 1000
        assert bad[0.0] <= 2, bad  # quantisation only (|diff| <= 0.5 mm)
        assert bad[0.5] > 20 * max(bad[0.0], 1), bad


def test_fixture_world_poses_consistent(bop_fixture_dir):
    lay = read_layout(bop_fixture_dir)
    wp = json.loads((bop_fixture_dir / "world_poses.json").read_text())
    flip = np.diag([1.0, -1.0, -1.0, 1.0])  # Blender camera (y up, looks -z) -> OpenCV camera
    frames = lay.frames()
    assert len(wp["cam2world_blender"]) == len(frames)
    for f, c2w_blender in zip(frames, wp["cam2world_blender"]):
        T_w2c_m = pose_matrix(f.R_w2c, f.t_w2c_mm / 1000.0)
        np.testing.assert_allclose(np.asarray(c2w_blender) @ flip, invert_pose(T_w2c_m), atol=1e-4)
        for o in f.objects:
            T_m2w = np.asarray(wp["objects"][str(o.obj_id)])  # metres
            np.testing.assert_allclose(o.R_m2c, f.R_w2c @ T_m2w[:3, :3], atol=1e-4)
            t = f.R_w2c @ (T_m2w[:3, 3] * 1000.0) + f.t_w2c_mm
            np.testing.assert_allclose(o.t_m2c_mm, t, atol=0.05)  # mm


# ----------------------------------------------------------------------------- round trip

def test_round_trip(tmp_path):
    root = tmp_path / "ds"
    K = np.array([[610.5, 0.0, 319.5], [0.0, 605.25, 241.0], [0.0, 0.0, 1.0]])  # non-square pixels allowed
    cam = CameraInfo(K=K, width=640, height=480, depth_scale=0.1)
    meshes = {1: trimesh.creation.box(extents=(40.0, 30.0, 20.0)),
              7: trimesh.creation.icosphere(subdivisions=2, radius=12.5)}
    rng = np.random.default_rng(0)
    frames = []
    for im_id in (3, 0, 11):
        objs = tuple(ObjectPose(obj_id=oid, R_m2c=_rot(rng.normal(size=3), rng.uniform(0, 3)),
                                t_m2c_mm=rng.uniform(-50, 50, 3) + [0, 0, 500]) for oid in (1, 7, 1))
        pose = (None, None) if im_id == 11 else look_at_w2c(rng.uniform(-1, 1, 3) + [0, 0, 2], [0, 0, 0])
        frames.append(Frame(split="train_pbr", scene_id=4, im_id=im_id, K=K * [[1.0], [1.0], [1.0]],
                            width=640, height=480, depth_scale=0.1 if im_id else 0.25,
                            R_w2c=pose[0], t_w2c_mm=pose[1], objects=objs))
    write_camera(root, cam)
    write_models(root, meshes)
    sdir = write_scene(root, "train_pbr", 4, frames)
    assert sdir == root / "train_pbr" / "000004"
    assert not list(root.rglob("*.tmp"))  # atomic writes leave no temporaries

    lay = read_layout(root)
    assert lay.split == "train_pbr" and lay.scene_ids() == [4]
    np.testing.assert_array_equal(lay.camera.K, K)
    assert (lay.camera.width, lay.camera.height, lay.camera.depth_scale) == (640, 480, 0.1)
    got = lay.frames(4)
    assert [f.im_id for f in got] == [0, 3, 11]
    for g, f in zip(got, sorted(frames, key=lambda f: f.im_id)):
        assert (g.split, g.scene_id, g.width, g.height, g.depth_scale) == ("train_pbr", 4, 640, 480, f.depth_scale)
        np.testing.assert_array_equal(g.K, f.K)
        if f.R_w2c is None:
            assert g.R_w2c is None and g.t_w2c_mm is None
        else:
            np.testing.assert_array_equal(g.R_w2c, f.R_w2c)
            np.testing.assert_array_equal(g.t_w2c_mm, f.t_w2c_mm)
        assert [o.obj_id for o in g.objects] == [o.obj_id for o in f.objects]
        for go, fo in zip(g.objects, f.objects):
            np.testing.assert_array_equal(go.R_m2c, fo.R_m2c)
            np.testing.assert_array_equal(go.t_m2c_mm, fo.t_m2c_mm)

    assert sorted(lay.models_info) == [1, 7]
    box = lay.models_info[1]
    assert box["diameter"] == pytest.approx(math.sqrt(40**2 + 30**2 + 20**2))
    assert [box[k] for k in ("min_x", "min_y", "min_z")] == pytest.approx([-20, -15, -10])
    assert [box[k] for k in ("size_x", "size_y", "size_z")] == pytest.approx([40, 30, 20])
    assert lay.models_info[7]["diameter"] == pytest.approx(25.0, rel=1e-6)
    for oid, mesh in meshes.items():
        m = lay.load_model(oid)
        np.testing.assert_allclose(m.vertices, mesh.vertices, atol=1e-4)  # float32 PLY
        np.testing.assert_array_equal(m.faces, mesh.faces)
    assert (root / "models" / "obj_000001.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")


def test_write_scene_refuses_bad_rotation(tmp_path):
    bad = Frame(split="s", scene_id=0, im_id=0, K=np.eye(3), width=4, height=4, depth_scale=1.0,
                R_w2c=None, t_w2c_mm=None,
                objects=(ObjectPose(obj_id=1, R_m2c=np.diag([1.0, 1.0, -1.0]), t_m2c_mm=[0, 0, 500]),))
    with pytest.raises(BopFormatError, match=r"scene_gt\.json.*'0'\[0\]\.cam_R_m2c"):
        write_scene(tmp_path, "s", 0, [bad])
    assert not (tmp_path / "s" / "000000" / "scene_gt.json").exists()


def test_write_models_refuses_metres(tmp_path):
    with pytest.raises(ValueError, match="metres"):
        write_models(tmp_path, {1: trimesh.creation.box(extents=(0.04, 0.03, 0.02))})


# ----------------------------------------------------------------------------- bad inputs

def _gt(root, fn):
    _edit_json(root / SCENE / "scene_gt.json", fn)


def _sc(root, fn):
    _edit_json(root / SCENE / "scene_camera.json", fn)


def _cam(root, fn):
    _edit_json(root / "camera.json", fn)


def _scale(key, factor, im="1", i=0):
    return lambda d: d[im][i].__setitem__(key, [v * factor for v in d[im][i][key]])


def _truncate(rel):
    def f(root):
        p = root / rel
        text = p.read_text()
        p.write_text(text[: len(text) // 2])
    return f


def _add_split(root):
    shutil.copytree(root / "train_pbr", root / "val")


BAD_CASES = {
    # name: (corruption, file named in the message, key/detail named in the message)
    "missing_camera_json": (lambda r: (r / "camera.json").unlink(), "camera.json", "not found"),
    "missing_scene_camera": (lambda r: (r / SCENE / "scene_camera.json").unlink(), "scene_camera.json", "not found"),
    "missing_scene_gt": (lambda r: (r / SCENE / "scene_gt.json").unlink(), "scene_gt.json", "not found"),
    "invalid_json_gt": (_truncate(SCENE / "scene_gt.json"), "scene_gt.json", "invalid JSON at line 3"),
    "invalid_json_camera": (_truncate("camera.json"), "camera.json", "invalid JSON at line"),
    "invalid_json_models_info": (_truncate("models/models_info.json"), "models_info.json", "invalid JSON at line"),
    "camera_missing_fx": (lambda r: _cam(r, lambda d: d.pop("fx")), "camera.json", "'fx'"),
    "camera_nan_cy": (lambda r: _cam(r, lambda d: d.__setitem__("cy", float("nan"))), "camera.json", "'cy'"),
    "camera_float_width": (lambda r: _cam(r, lambda d: d.__setitem__("width", 640.5)), "camera.json", "'width'"),
    "missing_cam_K": (lambda r: _sc(r, lambda d: d["1"].pop("cam_K")), "scene_camera.json", "'1': missing key 'cam_K'"),
    "missing_cam_R_m2c": (lambda r: _gt(r, lambda d: d["2"][1].pop("cam_R_m2c")), "scene_gt.json",
                          "'2'[1]: missing key 'cam_R_m2c'"),
    "missing_cam_t_m2c": (lambda r: _gt(r, lambda d: d["0"][0].pop("cam_t_m2c")), "scene_gt.json",
                          "'0'[0]: missing key 'cam_t_m2c'"),
    "missing_obj_id": (lambda r: _gt(r, lambda d: d["1"][1].pop("obj_id")), "scene_gt.json",
                       "'1'[1]: missing key 'obj_id'"),
    "R_w2c_without_t": (lambda r: _sc(r, lambda d: d["2"].pop("cam_t_w2c")), "scene_camera.json",
                        "'2': missing key 'cam_t_w2c'"),
    "t_w2c_without_R": (lambda r: _sc(r, lambda d: d["0"].pop("cam_R_w2c")), "scene_camera.json",
                        "'0': missing key 'cam_R_w2c'"),
    "R_m2c_6_numbers": (lambda r: _gt(r, lambda d: d["1"][0].__setitem__("cam_R_m2c", d["1"][0]["cam_R_m2c"][:6])),
                        "scene_gt.json", "'1'[0].cam_R_m2c: expected 9 numbers, got 6"),
    "t_m2c_2_numbers": (lambda r: _gt(r, lambda d: d["1"][0].__setitem__("cam_t_m2c", [1.0, 500.0])),
                        "scene_gt.json", "'1'[0].cam_t_m2c: expected 3 numbers, got 2"),
    "cam_K_nested": (lambda r: _sc(r, lambda d: d["0"].__setitem__("cam_K", np.eye(3).tolist())),
                     "scene_camera.json", "'0'.cam_K"),
    "R_w2c_8_numbers": (lambda r: _sc(r, lambda d: d["1"].__setitem__("cam_R_w2c", d["1"]["cam_R_w2c"][:8])),
                        "scene_camera.json", "'1'.cam_R_w2c: expected 9 numbers, got 8"),
    "t_m2c_string": (lambda r: _gt(r, lambda d: d["0"][1].__setitem__("cam_t_m2c", ["1", "2", "3"])),
                     "scene_gt.json", "'0'[1].cam_t_m2c"),
    "obj_id_string": (lambda r: _gt(r, lambda d: d["0"][1].__setitem__("obj_id", "2")), "scene_gt.json",
                      "'0'[1].obj_id"),
    "nan_t_m2c": (lambda r: _gt(r, lambda d: d["2"][0]["cam_t_m2c"].__setitem__(1, float("nan"))),
                  "scene_gt.json", "'2'[0].cam_t_m2c: non-finite"),
    "inf_cam_K": (lambda r: _sc(r, lambda d: d["1"]["cam_K"].__setitem__(2, float("inf"))),
                  "scene_camera.json", "'1'.cam_K: non-finite"),
    "nan_R_w2c": (lambda r: _sc(r, lambda d: d["0"]["cam_R_w2c"].__setitem__(4, float("nan"))),
                  "scene_camera.json", "'0'.cam_R_w2c: non-finite"),
    "R_m2c_scaled": (lambda r: _gt(r, _scale("cam_R_m2c", 1.001)), "scene_gt.json", "'1'[0].cam_R_m2c: not a rotation"),
    "R_m2c_reflection": (lambda r: _gt(r, _scale("cam_R_m2c", -1.0)), "scene_gt.json",
                         "'1'[0].cam_R_m2c: not a rotation"),
    "R_w2c_reflection": (lambda r: _sc(r, lambda d: d["2"].__setitem__("cam_R_w2c", [-v for v in d["2"]["cam_R_w2c"]])),
                         "scene_camera.json", "'2'.cam_R_w2c: not a rotation"),
    "depth_scale_zero": (lambda r: _sc(r, lambda d: d["1"].__setitem__("depth_scale", 0)), "scene_camera.json",
                         "'1'.depth_scale"),
    "gt_image_missing_from_camera": (lambda r: _sc(r, lambda d: d.pop("2")), "scene_gt.json",
                                     "'2': image id missing from"),
    "missing_model_file": (lambda r: (r / "models" / "obj_000002.ply").unlink(), "scene_gt.json",
                           "'0'[1].obj_id: model file for obj_id 2 not found (expected"),
    "t_m2c_in_metres": (lambda r: _gt(r, _scale("cam_t_m2c", 1e-3, im="0", i=1)), "scene_gt.json",
                        "'0'[1].cam_t_m2c"),
    "bad_image_key": (lambda r: _gt(r, lambda d: d.__setitem__("x1", d.pop("1"))), "scene_gt.json", "'x1'"),
    "several_splits": (_add_split, "bop", "several splits found ['train_pbr', 'val']; pass split="),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input(bop_copy, case):
    corrupt, fname, detail = BAD_CASES[case]
    read_layout(bop_copy)  # the pristine copy reads fine
    corrupt(bop_copy)
    with pytest.raises(BopFormatError) as ei:
        read_layout(bop_copy)
    msg = str(ei.value)
    assert fname in msg, msg
    assert detail in msg, msg


def test_metres_message_suggests_factor(bop_copy):
    _gt(bop_copy, _scale("cam_t_m2c", 1e-3, im="0", i=0))
    with pytest.raises(BopFormatError, match=r"looks like metres.*multiply by 1000"):
        read_layout(bop_copy)


def test_explicit_split(bop_copy):
    _add_split(bop_copy)
    assert read_layout(bop_copy, split="val").split == "val"
    with pytest.raises(BopFormatError, match="nope"):
        read_layout(bop_copy, split="nope")


def test_non_square_pixels_accepted(bop_copy):
    _cam(bop_copy, lambda d: d.__setitem__("fy", 590.0))
    _sc(bop_copy, lambda d: d["0"]["cam_K"].__setitem__(4, 590.0))
    lay = read_layout(bop_copy)
    assert lay.camera.K[1, 1] == 590.0 and lay.frames()[0].K[1, 1] == 590.0


def test_load_model_in_metres_rejected(bop_copy):
    p = bop_copy / "models" / "obj_000001.ply"
    m = trimesh.load(p, process=False)
    m.apply_scale(1e-3)
    p.write_bytes(m.export(file_type="ply", encoding="binary"))
    with pytest.raises(BopFormatError, match=r"obj_000001\.ply.*metres"):   # at read time, not per sample
        read_layout(bop_copy)


@pytest.mark.parametrize("content", [b"", b"ply\nformat ascii 1.0\ngarbage\n", b"not a mesh at all"])
def test_load_model_unreadable_rejected(bop_copy, content):
    (bop_copy / "models" / "obj_000002.ply").write_bytes(content)
    with pytest.raises(BopFormatError, match=r"obj_000002\.ply"):
        read_layout(bop_copy)


def test_unreferenced_model_checked_when_loaded(bop_copy):
    """Models no frame references are not read by read_layout, but load_model applies the same checks."""
    shutil.copy(bop_copy / "models" / "obj_000001.ply", bop_copy / "models" / "obj_000003.ply")
    (bop_copy / "models" / "obj_000004.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 0\nend_header\n")
    lay = read_layout(bop_copy)
    np.testing.assert_allclose(lay.load_model(3).extents, [40, 30, 20], atol=1e-4)
    with pytest.raises(BopFormatError, match=r"obj_000004\.ply"):
        lay.load_model(4)
    a = lay.load_model(1)
    a.vertices += 1.0                        # callers get a copy of the validated model
    np.testing.assert_allclose(lay.load_model(1).extents, [40, 30, 20], atol=1e-4)
    assert lay.load_model(1).bounds[0][0] == pytest.approx(-20.0, abs=1e-4)


def test_default_depth_scale_from_camera(bop_copy):
    _cam(bop_copy, lambda d: d.__setitem__("depth_scale", 0.5))
    _sc(bop_copy, lambda d: d["1"].pop("depth_scale"))
    f = {f.im_id: f for f in read_layout(bop_copy).frames()}
    assert f[1].depth_scale == 0.5 and f[0].depth_scale == 1.0


# ----------------------------------------------------------------------------- geometry

def test_project_points_by_hand():
    K = np.array([[500.0, 0, 320], [0, 400.0, 240], [0, 0, 1]])
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # 90 deg about z
    uv = project_points(K, R, [10.0, -20.0, 1000.0], [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    # R @ (1,2,3) + t = (-2+10, 1-20, 3+1000) = (8, -19, 1003)
    np.testing.assert_allclose(uv[0], [500 * 8 / 1003 + 320, 400 * -19 / 1003 + 240])
    np.testing.assert_allclose(uv[1], [500 * 10 / 1000 + 320, 400 * -20 / 1000 + 240])
    behind = project_points(K, np.eye(3), [0, 0, -5.0], [[0, 0, 0]])
    assert np.all(np.isnan(behind))


def test_pose_helpers():
    R = _rot([1, 2, 3], 0.7)
    T = pose_matrix(R, [1.0, -2.0, 30.0])
    np.testing.assert_allclose(T @ invert_pose(T), np.eye(4), atol=1e-12)
    assert is_rotation(R)
    assert not is_rotation(R * 1.001)
    assert not is_rotation(-R)  # det -1
    assert not is_rotation(np.eye(2))
    assert is_rotation(R.astype(np.float32))  # float32 precision is within tolerance


@pytest.mark.parametrize("seed", range(5))
def test_look_at(seed):
    rng = np.random.default_rng(seed)
    eye, target = rng.uniform(-1, 1, 3), rng.uniform(-0.1, 0.1, 3)
    K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
    R, t = look_at_w2c(eye, target)
    assert is_rotation(R, 1e-12)
    np.testing.assert_allclose(-R.T @ t / 1000.0, eye, atol=1e-12)  # camera centre (m)
    np.testing.assert_allclose(project_points(K, R, t, [target * 1000]), [[319.5, 239.5]], atol=1e-9)
    assert (R @ (target - eye))[2] > 0  # target in front
    # world up appears straight up in the image (smaller v, same u)
    up_uv = project_points(K, R, t, [target * 1000 + [0, 0, 10.0]])[0]
    assert up_uv[1] < 239.5 and up_uv[0] == pytest.approx(319.5, abs=1e-6)
    assert R[0, 2] == pytest.approx(0.0, abs=1e-12)  # camera x axis is horizontal without roll
    # roll rotates about the optical axis: the up-point moves to direction (-sin r, -cos r)
    roll = rng.uniform(-3, 3)
    Rr, tr = look_at_w2c(eye, target, roll_rad=roll)
    np.testing.assert_allclose(Rr[2], R[2], atol=1e-12)
    np.testing.assert_allclose(tr, Rr @ R.T @ t, atol=1e-9)
    d = project_points(K, Rr, tr, [target * 1000 + [0, 0, 10.0]])[0] - [319.5, 239.5]
    np.testing.assert_allclose(d / np.linalg.norm(d), [-math.sin(roll), -math.cos(roll)], atol=1e-6)


def test_look_at_degenerate():
    with pytest.raises(ValueError):
        look_at_w2c([0, 0, 1], [0, 0, 0])  # looking straight down along up
    with pytest.raises(ValueError):
        look_at_w2c([1, 2, 3], [1, 2, 3])


# ----------------------------------------------------------------------------- load-time checks (issue 16)

def _layout_with(tmp_path, poses, size=(40.0, 30.0, 20.0), K=None, wh=(640, 480)):
    """A one-frame layout with a box model (obj 1, mm) at the given (R, t_mm) poses."""
    root = tmp_path / "ds"
    K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]]) if K is None else K
    write_camera(root, CameraInfo(K=K, width=wh[0], height=wh[1]))
    write_models(root, {1: trimesh.creation.box(extents=size)})
    objs = tuple(ObjectPose(obj_id=1, R_m2c=R, t_m2c_mm=t) for R, t in poses)
    write_scene(root, "train_pbr", 0, [Frame(split="train_pbr", scene_id=0, im_id=0, K=K, width=wh[0],
                                             height=wh[1], depth_scale=1.0, R_w2c=None, t_w2c_mm=None,
                                             objects=objs)])
    return root


def test_frustum_side_at_the_image_border():
    """The image spans u in [-0.5, W - 0.5] (pixel centres at integers): a box whose right
    face projects just left of u = -0.5 is out of view, one reaching just past it is not."""
    from polar_render.bop import _frustum_side

    K = np.array([[500.0, 0.0, 31.5], [0.0, 500.0, 23.5], [0.0, 0.0, 1.0]])
    z = 1000.0
    x_edge = (-0.5 - 31.5) * z / 500.0          # camera x (mm) that projects onto u = -0.5
    for eps, expect in ((-0.01, "left of the image"), (0.01, None)):
        pts = np.array([[x_edge - 20.0, 0.0, z], [x_edge + eps, 0.0, z], [x_edge - 20.0, 5.0, z + 10.0],
                        [x_edge + eps, 5.0, z + 10.0]])
        pts[[2, 3], 0] = pts[[2, 3], 0] * (z + 10.0) / z  # same image column at the farther depth
        assert _frustum_side(K, 64, 48, pts) == expect, eps
    # the bottom border v = H - 0.5 likewise
    y_edge = (48 - 0.5 - 23.5) * z / 500.0
    assert _frustum_side(K, 64, 48, np.array([[0.0, y_edge + 0.01, z], [0.0, y_edge + 9.0, z]])) == "below the image"
    assert _frustum_side(K, 64, 48, np.array([[0.0, y_edge - 0.01, z], [0.0, y_edge + 9.0, z]])) is None
    # behind the camera, and straddling the camera plane (partly in front: may be visible)
    assert _frustum_side(K, 64, 48, np.array([[0.0, 0.0, -1.0], [5.0, 5.0, -30.0]])) == "behind the camera"
    assert _frustum_side(K, 64, 48, np.array([[0.0, 0.0, -10.0], [0.0, 0.0, 10.0]])) is None


def test_object_out_of_view_warns_when_others_are_seen(tmp_path):
    root = _layout_with(tmp_path, [(np.eye(3), [0.0, 0.0, 500.0]), (np.eye(3), [0.0, 0.0, -500.0]),
                                   (np.eye(3), [4000.0, 0.0, 500.0])])
    lay = read_layout(root)
    assert len(lay.frames()) == 1
    assert len(lay.warnings) == 2, lay.warnings
    assert "scene_gt.json: key '0'[1] (obj_id 1): behind the camera" in lay.warnings[0]
    assert "'0'[2] (obj_id 1): right of the image" in lay.warnings[1]


def test_frame_with_every_object_out_of_view_refused(tmp_path):
    root = _layout_with(tmp_path, [(np.eye(3), [0.0, -4000.0, 500.0]), (np.eye(3), [0.0, 0.0, -500.0])])
    with pytest.raises(BopFormatError, match=r"scene_gt\.json: key '0': no object can be seen .*above the image.*"
                                             r"behind the camera"):
        read_layout(root)


def test_large_object_around_the_camera_is_not_refused(tmp_path):
    """A model that surrounds the camera (corners behind and in front, all outside the image
    sideways) may still fill the view: only whole-plane separation counts as out of view."""
    root = _layout_with(tmp_path, [(np.eye(3), [0.0, 0.0, 100.0])], size=(4000.0, 4000.0, 4000.0))
    assert read_layout(root).warnings == []


def test_empty_annotations_refused(bop_copy):
    _gt(bop_copy, lambda d: d.__setitem__("0", []))
    with pytest.raises(BopFormatError, match=r"scene_gt\.json: key '0': no object annotated"):
        read_layout(bop_copy)
    _gt(bop_copy, lambda d: d.clear())
    with pytest.raises(BopFormatError, match=r"scene_gt\.json: no image is annotated"):
        read_layout(bop_copy)


def test_models_info_required_and_consistent(bop_copy):
    info = bop_copy / "models" / "models_info.json"
    _edit_json(info, lambda d: d["2"].__setitem__("min_z", d["2"]["min_z"] * 1000))
    with pytest.raises(BopFormatError, match=r"models_info\.json: key '2'\.min_z: .*obj_000002\.ply has -4\.8 mm"):
        read_layout(bop_copy)
    info.unlink()
    with pytest.raises(BopFormatError, match=r"models_info\.json: file not found"):
        read_layout(bop_copy)


def test_symlinks_inside_the_root_are_followed(bop_copy):
    """A layout may use symlinks that stay inside it (shared models, a renamed scene)."""
    ref = read_layout(bop_copy)
    (bop_copy / "store").mkdir()
    shutil.move(bop_copy / "models" / "obj_000001.ply", bop_copy / "store" / "box.ply")
    (bop_copy / "models" / "obj_000001.ply").symlink_to(Path("..") / "store" / "box.ply")
    lay = read_layout(bop_copy)
    assert lay.digest == ref.digest          # same content, other storage
    np.testing.assert_allclose(lay.load_model(1).extents, [40, 30, 20], atol=1e-4)


def test_symlink_escape_and_loop_named(bop_copy, tmp_path):
    from polar_render.bop import BopPathError
    from polar_render.paths import UnsafePathError

    shutil.copytree(bop_copy / SCENE, tmp_path / "elsewhere")
    os.chmod(bop_copy / "train_pbr", 0o755)
    shutil.rmtree(bop_copy / SCENE)
    (bop_copy / SCENE).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BopPathError, match=r"train_pbr/000000: .*outside") as ei:
        read_layout(bop_copy)
    assert isinstance(ei.value, UnsafePathError) and isinstance(ei.value, BopFormatError)
    (bop_copy / SCENE).unlink()
    (bop_copy / SCENE).symlink_to("000000")
    with pytest.raises(BopPathError, match=r"train_pbr/000000.*symlink loop"):
        read_layout(bop_copy)


def test_digest_identifies_content(bop_copy, bop_fixture_dir):
    a, b = read_layout(bop_fixture_dir), read_layout(bop_copy)
    assert a.digest == b.digest and len(a.digest) == 64
    _gt(bop_copy, lambda d: d["0"][0]["cam_t_m2c"].__setitem__(2, d["0"][0]["cam_t_m2c"][2] + 1.0))
    assert read_layout(bop_copy).digest != a.digest


def test_written_files_have_the_run_permissions(tmp_path):
    """Layout files are not 0600 (mkstemp's mode): another user may read OUT/layout, and
    nothing is world-writable."""
    from polar_render import io

    root = _layout_with(tmp_path, [(np.eye(3), [0.0, 0.0, 500.0])])
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == 5   # camera, model, models_info, scene_camera, scene_gt
    for p in files:
        assert p.stat().st_mode & 0o777 == io.FILE_MODE, (p, oct(p.stat().st_mode))
    assert io.FILE_MODE & 0o002 == 0 and io.DIR_MODE & 0o002 == 0
    assert io.FILE_MODE & 0o044 == 0o044 & ~io._UMASK


def test_layout_write_on_full_disk_names_the_file(tmp_path, monkeypatch):
    import errno

    from polar_render import io

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "_write_all", full)
    with pytest.raises(io.NoSpaceError, match=r"models/obj_000001\.ply: no space left on device"):
        write_models(tmp_path / "ds", {1: trimesh.creation.box(extents=(40.0, 30.0, 20.0))})
    assert [p.name for p in (tmp_path / "ds").rglob("*") if p.is_file()] == []   # no temporaries, no partial file


def test_cli_warns_once_about_an_unseen_object(bop_copy, tmp_path, capsys):
    """One object of frame 1 pushed out of view: the run renders (the other object is seen)
    and says so once, naming the frame and the object, not once per sample."""
    from polar_render import cli

    _gt(bop_copy, lambda d: d["1"][1].__setitem__("cam_t_m2c", [0.0, 0.0, -400.0]))
    scene = Path(__file__).parent / "data" / "plain" / "scene.yaml"
    rc = cli.main(["render", "--scene", str(scene), "--layout", str(bop_copy), "--out", str(tmp_path / "out"),
                   "--n", "5", "--res", "64x48", "--spp", "1", "--quiet"])   # frame 1: samples 1 and 4
    err = capsys.readouterr().err
    assert rc == 0, err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, err
    assert "scene_gt.json: key '1'[1] (obj_id 2): behind the camera" in warnings[0]
