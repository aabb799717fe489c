"""Rendered geometry agrees with BOP poses and cam_K (our layouts and BlenderProc's)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from polar_render.bop import read_layout
from polar_render.geometry import project_points
from polar_render.io import read_png
from polar_render.mitsuba.scene import SceneError, intrinsics_to_mitsuba

from tests.render.conftest import PLAIN_SCENE, copy_layout, render_dir, samples


def _check_projection(sample: dict, models: dict, min_visible: int = 50) -> dict:
    """Project model surface points with cam_K and the BOP pose; visible ones (front-facing,
    depth agreeing with the rendered depth) must land on their instance in the object mask,
    within 1 px. Returns per-instance statistics."""
    meta = sample["meta"]
    K = np.array(meta["frame"]["cam_K"])
    mask, depth = sample["object_mask"], sample["depth"]
    h, w = mask.shape
    stats = {}
    for obj in meta["frame"]["objects"]:
        mesh = models[obj["obj_id"]]
        pts, fidx = trimesh.sample.sample_surface(mesh, 4000, seed=obj["instance"])
        R, t = np.array(obj["cam_R_m2c"]), np.array(obj["cam_t_m2c_mm"])
        cam = pts @ R.T + t
        normals_cam = mesh.face_normals[fidx] @ R.T
        front = np.einsum("ij,ij->i", normals_cam, cam) < 0
        uv = project_points(K, R, t, pts)
        px = np.rint(uv).astype(int)
        inside = (px[:, 0] >= 1) & (px[:, 0] < w - 1) & (px[:, 1] >= 1) & (px[:, 1] < h - 1) & front
        px, z_mm = px[inside], cam[inside, 2]
        rendered_mm = depth[px[:, 1], px[:, 0]] * 1000.0
        visible = np.abs(rendered_mm - z_mm) < 1.0
        px = px[visible]
        hits = np.zeros(len(px), bool)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                hits |= mask[px[:, 1] + dy, px[:, 0] + dx] == obj["instance"]
        stats[obj["instance"]] = (len(px), float(hits.mean()) if len(px) else 0.0, int(inside.sum()))
        assert len(px) >= min_visible, f"instance {obj['instance']}: only {len(px)} visible points"
        assert hits.mean() > 0.995, f"instance {obj['instance']}: {1 - hits.mean():.2%} of points miss the mask"
    return stats


def test_projection_blenderproc_layout(fixture_render, bop_fixture_dir):
    layout = read_layout(bop_fixture_dir)
    models = {i: layout.load_model(i) for i in (1, 2)}
    for s in samples(fixture_render):
        stats = _check_projection(s, models)
        # most front-facing in-image points are also visible (not occluded): poses really agree
        for n_vis, _, n_front in stats.values():
            assert n_vis > 0.5 * n_front


def test_depth_matches_blenderproc_depth_maps(fixture_render, bop_fixture_dir):
    """Our z-depth (m) against BlenderProc's own depth PNGs (mm, rounded): independent client."""
    for s in samples(fixture_render):
        im_id = s["meta"]["frame"]["im_id"]
        ref = read_png(bop_fixture_dir / "train_pbr/000000/depth" / f"{im_id:06d}.png").astype(np.float64)
        ours = s["depth"].astype(np.float64) * 1000.0
        on_obj = (s["object_mask"] > 0) & (ref > 0)
        # erode by one pixel: silhouette pixels legitimately differ between ray casters
        inner = on_obj.copy()
        inner[1:-1, 1:-1] &= on_obj[:-2, 1:-1] & on_obj[2:, 1:-1] & on_obj[1:-1, :-2] & on_obj[1:-1, 2:]
        diff = np.abs(ours[inner] - ref[inner])
        assert inner.sum() > 500
        assert np.median(diff) < 0.6, np.median(diff)
        assert np.mean(diff < 1.0) > 0.98


def test_projection_own_layout(usb_brick_render):
    layout = read_layout(usb_brick_render / "layout")
    models = {1: layout.load_model(1)}
    for s in samples(usb_brick_render):
        _check_projection(s, models)


def test_off_centre_principal_point(tmp_path, bop_fixture_dir):
    """Shifting cx, cy in cam_K moves the rendered object by exactly that many pixels."""
    layout_dir = copy_layout(bop_fixture_dir, tmp_path / "bop")
    sc = layout_dir / "train_pbr/000000/scene_camera.json"
    data = json.loads(sc.read_text())
    for v in data.values():
        v["cam_K"][2] += 37.0   # cx
        v["cam_K"][5] -= 23.0   # cy
    sc.write_text(json.dumps(data))
    shifted = render_dir(tmp_path / "out", scene=PLAIN_SCENE, layout=layout_dir, spp=1, n=1)
    s = samples(shifted)[0]
    layout = read_layout(layout_dir)
    _check_projection(s, {i: layout.load_model(i) for i in (1, 2)})


def test_non_square_pixels_refused():
    K = np.array([[600.0, 0, 320], [0, 610.0, 240], [0, 0, 1]])
    with pytest.raises(SceneError, match="non-square"):
        intrinsics_to_mitsuba(K, 640, 480)


def test_intrinsics_field_of_view():
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    m = intrinsics_to_mitsuba(K, 640, 480)
    assert m["fov"] == pytest.approx(np.degrees(2 * np.arctan(320 / 500)))
    assert m["principal_point_offset_x"] == 0.0 and m["principal_point_offset_y"] == 0.0
