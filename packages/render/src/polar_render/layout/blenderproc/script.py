import blenderproc as bproc  # noqa: I001  (blenderproc run requires this to be the first import)

# BlenderProc layout script: one BOP scene (chunk) per layout scene, written by BlenderProc.
#
# Runs unchanged in two ways (polar_render/layout/blenderproc/backend.py starts it):
#   blenderproc run script.py SPEC.json [--custom-blender-path ...]   (Blender's Python)
#   in-process through polar_render.layout.blenderproc.compat (bpy==4.2.0 as a module)
# It imports nothing from polar_render, so Blender's own Python can run it.
#
# SPEC.json (written by backend.make_spec): models {obj_id: PLY path, mm},
# layout (LayoutConfig fields), K/width/height, seed, split, root, scenes [{scene_id,
# fixed?}], ground_size_m. Per scene:
#   * np.random and random are seeded from (seed, scene_id) only, so a scene is the same
#     whether made alone or in a batch;
#   * models loaded with bproc.loader.load_obj and scaled mm -> m (BlenderProc's writer
#     takes the rotation from the quaternion, so the scale does not leak into cam_R_m2c);
#   * poses: bproc.object.sample_poses (uniform SO(3) rotation, xy uniform in
#     +-xy_range_mm, lowest point drop_height_cm above the support, resampled on
#     collision), then bproc.object.simulate_physics_and_fix_final_poses on a passive
#     ground plane (z = 0, Blender Z-up world, metres);
#   * cameras: bproc.sampler.shell around bproc.object.compute_poi plus look-at jitter,
#     bproc.camera.rotation_from_forward_vec with a uniform in-plane rotation;
#   * or, with "fixed", the given world poses (T_m2w in m) and OpenCV cameras (R_w2c,
#     t_w2c in mm) are set as they are (no sampling, no physics);
#   * depth by BlenderProc's ray casting (bproc.camera.depth_via_raytracing; 0 where no
#     hit, the BOP convention), written with bproc.writer.write_bop(annotation_unit="mm",
#     frames_per_chunk=cameras, calc_mask_info_coco=False). No image is rendered: the
#     writer needs colour frames, so it gets black placeholders, removed afterwards.
#   * the chunk is written into a temporary directory and renamed into place
#     (<root>/<split>/<scene_id:06d>), so an interrupted run leaves no partial scene;
#     nothing it writes stays world-writable, whatever the umask.
import json
import os
import random
import shutil
import sys

import numpy as np

GROUND_NAME = "polar_render_ground"


def scene_seed(seed: int, scene_id: int) -> int:
    """32-bit seed for np.random / random from (seed, scene_id)."""
    return int(np.random.SeedSequence([int(seed), int(scene_id), 9]).generate_state(1)[0])


def _load_objects(spec):
    objs = []
    for oid in spec["layout"]["instances"]:
        obj = bproc.loader.load_obj(spec["models"][str(oid)])[0]
        obj.set_scale([1e-3, 1e-3, 1e-3])          # models are in mm, the world in m
        obj.set_cp("category_id", int(oid))
        objs.append(obj)
    return objs


def _ground(size_m):
    ground = bproc.object.create_primitive("PLANE", scale=[size_m / 2, size_m / 2, 1.0])
    ground.set_name(GROUND_NAME)
    return ground


def _sample_poses(objs, ground, lay):
    xy_m = lay["xy_range_mm"] * 1e-3
    h_lo, h_hi = (h * 1e-2 for h in lay["drop_height_cm"])

    def sample_pose(obj):
        obj.set_rotation_euler(bproc.sampler.uniformSO3())
        obj.set_location([np.random.uniform(-xy_m, xy_m), np.random.uniform(-xy_m, xy_m), 0.0])
        low = float(np.min(obj.get_bound_box()[:, 2]))
        obj.set_location([*obj.get_location()[:2], np.random.uniform(h_lo, h_hi) - low])

    bproc.object.sample_poses(objs, sample_pose_func=sample_pose, objects_to_check_collisions=objs + [ground],
                              max_tries=1000)
    for obj in objs:
        obj.enable_rigidbody(active=True, collision_shape="CONVEX_HULL", friction=lay["friction"],
                             collision_margin=0.0005)
    ground.enable_rigidbody(active=False, collision_shape="BOX", friction=lay["friction"], collision_margin=0.0005)
    bproc.object.simulate_physics_and_fix_final_poses(min_simulation_time=1.0, max_simulation_time=lay["settle_max_s"],
                                                      check_object_interval=0.25, substeps_per_frame=20,
                                                      solver_iters=25)


def blenderproc_azimuth(lo, hi):
    """Our azimuth range (degrees from world +x towards +y, any interval) as the
    [-180, 180] interval ``bproc.sampler.shell`` accepts (same directions)."""
    if hi - lo >= 360:
        return -180.0, 180.0
    if lo >= 180:
        lo, hi = lo - 360, hi - 360
    if not -180 <= lo <= hi <= 180:
        raise ValueError(f"azimuth_deg ({lo}, {hi}) crosses 180 degrees; BlenderProc's shell sampler "
                         f"needs an interval inside [-180, 180]")
    return float(lo), float(hi)


def _sample_cameras(objs, lay):
    poi = bproc.object.compute_poi(objs)
    az_lo, az_hi = blenderproc_azimuth(*lay["azimuth_deg"])
    for _ in range(lay["cameras_per_scene"]):
        location = bproc.sampler.shell(center=poi, radius_min=lay["radius_m"][0], radius_max=lay["radius_m"][1],
                                       elevation_min=lay["elevation_deg"][0], elevation_max=lay["elevation_deg"][1],
                                       azimuth_min=az_lo, azimuth_max=az_hi)
        jitter = np.random.uniform(-lay["look_at_jitter_mm"], lay["look_at_jitter_mm"], size=3) * 1e-3
        inplane = np.radians(np.random.uniform(*lay["inplane_deg"]))
        R = bproc.camera.rotation_from_forward_vec(poi + jitter - location, inplane_rot=inplane)
        bproc.camera.add_camera_pose(bproc.math.build_transformation_mat(location, R))


def _set_fixed(objs, fixed):
    scale = np.diag([1e-3, 1e-3, 1e-3, 1.0])
    for obj, (oid, T) in zip(objs, fixed["objects"]):
        if int(oid) != obj.get_cp("category_id"):
            raise ValueError(f"fixed pose for obj_id {oid} given for object {obj.get_cp('category_id')}")
        obj.set_local2world_mat(np.asarray(T, np.float64) @ scale)
    for R_w2c, t_w2c_mm in fixed["cameras"]:
        T_w2c = np.eye(4)
        T_w2c[:3, :3] = np.asarray(R_w2c, np.float64)
        T_w2c[:3, 3] = np.asarray(t_w2c_mm, np.float64) * 1e-3
        T_c2w_opencv = np.linalg.inv(T_w2c)
        bproc.camera.add_camera_pose(
            bproc.math.change_source_coordinate_frame_of_transformation_matrix(T_c2w_opencv, ["X", "-Y", "-Z"]))


def make_scene(spec, scene, init):
    """Build, simulate and write one scene; returns the final scene directory."""
    lay = spec["layout"]
    sid = int(scene["scene_id"])
    final = os.path.join(spec["root"], spec["split"], f"{sid:06d}")
    if os.path.exists(os.path.join(final, "scene_gt.json")):
        return final
    init()
    s = scene_seed(spec["seed"], sid)
    np.random.seed(s)
    random.seed(s)
    bproc.camera.set_intrinsics_from_K_matrix(np.asarray(spec["K"], np.float64), spec["width"], spec["height"])
    objs = _load_objects(spec)
    ground = _ground(spec["ground_size_m"])
    if scene.get("fixed"):
        _set_fixed(objs, scene["fixed"])
    else:
        _sample_poses(objs, ground, lay)
        _sample_cameras(objs, lay)

    bvh = bproc.object.create_bvh_tree_multi_objects(objs + [ground])
    depths = []
    for frame in range(bproc.utility.num_frames()):
        d = bproc.camera.depth_via_raytracing(bvh, frame)
        depths.append(np.where(np.isfinite(d), d, 0.0))
    colors = [np.zeros((spec["height"], spec["width"], 3), np.uint8) for _ in depths]

    tmp = os.path.join(spec["root"], f".tmp-bproc-{sid:06d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    bproc.writer.write_bop(tmp, target_objects=objs, depths=depths, colors=colors, depth_scale=1.0,
                           annotation_unit="mm", frames_per_chunk=len(depths), calc_mask_info_coco=False,
                           append_to_existing_output=False)
    chunk = os.path.join(tmp, "train_pbr", "000000")
    shutil.rmtree(os.path.join(chunk, "rgb"))
    os.makedirs(os.path.dirname(final), exist_ok=True)
    camera_json = os.path.join(spec["root"], "camera.json")
    if not os.path.exists(camera_json):
        os.replace(os.path.join(tmp, "camera.json"), camera_json)
    os.replace(chunk, final)
    shutil.rmtree(tmp, ignore_errors=True)
    _no_world_write([camera_json, final])
    return final


def _no_world_write(paths):
    """Clear the world-write bit (a umask of 000 would leave it) on ``paths`` and everything
    below them: files of a run are never world-writable (polar_render.io.FILE_MODE)."""
    for top in paths:
        walk = [(top, [], [])] if os.path.isfile(top) else os.walk(top)
        for d, _, files in walk:
            for p in [d] + [os.path.join(d, f) for f in files]:
                mode = os.stat(p).st_mode
                if mode & 0o002:
                    os.chmod(p, mode & 0o7775)


def run(spec, init=None, progress=None):
    """Make every scene of ``spec`` (skipping finished ones); ``init`` prepares a clean
    BlenderProc scene (default: bproc.init once, then bproc.clean_up)."""
    state = {"ready": False}

    def default_init():
        if state["ready"]:
            bproc.clean_up(clean_up_camera=True)
        else:
            bproc.init()
            state["ready"] = True

    for k, scene in enumerate(spec["scenes"]):
        make_scene(spec, scene, init or default_init)
        if progress is not None:
            progress(k + 1, len(spec["scenes"]))
        else:
            print(f"blenderproc layout: scene {k + 1}/{len(spec['scenes'])}", flush=True)


if __name__ == "__main__":
    with open(sys.argv[-1], encoding="utf-8") as f:
        run(json.load(f))
