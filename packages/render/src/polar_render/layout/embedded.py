"""Embedded BOP layout sampler (no Blender): drop parts with pybullet, sample cameras.

Frames and units:

* world: metres, Z up, support plane z = 0 (pybullet world, gravity -9.81 m/s^2 along z);
* models: millimetres (BOP), converted to metres for the physics;
* cameras: OpenCV (x right, y down, z forward), ``R_w2c`` and ``t_w2c_mm`` (mm) as
  returned by :func:`polar_render.geometry.look_at_w2c`;
* BOP output: ``cam_R_m2c = R_w2c @ R_m2w``, ``cam_t_m2c = R_w2c @ (1000 t_m2w) + t_w2c`` (mm).

Physics: one fresh pybullet DIRECT client per scene, fixed step 1/240 s, each
object's collision shape is the convex hull of its mesh (so objects rest on
hull faces; for the USB brick the hull equals the real support polygon).  With
the collision margin lowered to 0.1 mm, settled parts rest 0.07-0.09 mm above
z = 0 (pybullet's default ~1 mm margin would leave them ~1 mm above).  A scene
is settled when all speeds stay below 2 mm/s and 0.02 rad/s for 0.1 s
(typically after 0.4-0.9 s simulated, ~25-35 ms wall time per scene).

Drop height: Polar-Ano (Table I) samples "h in (1, 4)" without a unit.  We read
it as centimetres of free fall of the object's lowest point above the support
(or above an already placed object it would overlap).  Metres or decimetres
would launch a 3 cm part far out of the 0.40-0.49 m camera shell and let it
bounce for seconds; 1-4 cm is a short drop that still tumbles the part onto a
random stable face, which is what the randomisation is for.

Top-down mode (``mode: topdown``, e.g. the aluminium plate): nothing is dropped. Each
object of ``instances`` keeps the identity orientation, centred on the origin in xy and
resting on the support (lowest model point at z = 0). Each camera looks straight down
(optical axis = world -z) from height ``distance_m`` above the support (z, metres),
image x along world +x (the plate's long axis) and image y along world -y, with jitter:
camera xy uniform in ``[-xy_jitter_mm, xy_jitter_mm]^2``, roll about the optical axis from
``inplane_deg``, and a tilt of the optical axis up to ``tilt_deg`` (uniform in angle, random
direction; 0 = exactly perpendicular). The output is a normal BOP layout.

Station mode (``mode: station``, an inspection station; e.g. ``usb_brick_station``): one
product (``instances`` has one obj_id) rests on a fixture in a fixed orientation
(``rest_rotation_deg``, xyz Euler angles in degrees, then its lowest point on z = 0 and its
bounding box centred on the origin in xy), moved by the placement tolerances
``placement_mm`` (xy, uniform +-) and ``yaw_deg`` (about z, uniform +-). Each named view of
``views`` is one camera per BOP scene (``cameras_per_scene`` = number of views; image
``im_id`` = view index in file order), framed so that the part fills ``fill`` of the shorter
image side (number, or [lo, hi] drawn per scene), with the camera tolerances
``camera_position_mm`` and ``camera_angle_deg`` (see :func:`station_camera`).

Determinism: scene ``s`` depends only on ``(cfg, seed, s)`` through the ``layout`` stream of
``(seed, s)`` (:mod:`polar_render.rng`) and a fresh physics client.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from polar_render import bop
from polar_render.geometry import look_at_w2c, pose_matrix
from polar_render.rng import stream
from polar_render.progress import progress as progress_bar

__all__ = ["LayoutConfig", "sample_scene", "generate_layout", "write_layout_models", "camera_matrix",
           "REST_LIN_SPEED_M_S", "REST_ANG_SPEED_RAD_S", "drop_framing", "topdown_framing", "station_eye",
           "framing_distance_m"]

TIME_STEP_S = 1.0 / 240.0
REST_LIN_SPEED_M_S = 2e-3      # "at rest": every object slower than this ...
REST_ANG_SPEED_RAD_S = 2e-2    # ... and rotating slower than this ...
REST_STEPS = 24                # ... for this many consecutive steps (0.1 s)
MIN_SETTLE_S = 0.1
STACK_GAP_MM = 5.0             # clearance above an overlapping, already placed object
DENSITY_KG_M3 = 1050.0         # ABS-like; only mass ratios matter for the drop
COLLISION_MARGIN_M = 1e-4      # pybullet default (~1 mm) would float the parts 1 mm above the plane


@dataclass
class LayoutConfig:
    """Scene sampling parameters (see module docstring for units and frames)."""
    instances: list[int]                                   # obj_ids dropped per scene (duplicates allowed)
    drop_height_cm: tuple[float, float] = (1.0, 4.0)       # lowest point above support, cm (Table I "h")
    xy_range_mm: float = 20.0                              # drop xy uniform in [-r, r]^2 mm around origin
    cameras_per_scene: int = 4
    radius_m: tuple[float, float] = (0.40, 0.49)           # camera distance to the objects' mean centre
    elevation_deg: tuple[float, float] = (15.0, 85.0)      # above the support plane, uniform in degrees
    azimuth_deg: tuple[float, float] = (0.0, 360.0)
    inplane_deg: tuple[float, float] = (-180.0, 180.0)     # roll about the optical axis
    look_at_jitter_mm: float = 3.0                         # per-axis uniform jitter of the look-at target
    width: int = 640
    height: int = 480
    fx: float = 2000.0
    fy: float = 2000.0
    friction: float = 0.5                                  # lateral friction (plane and objects)
    settle_max_s: float = 3.0                              # simulated time limit of the drop
    mode: str = "drop"                                     # "drop" (pybullet), "topdown" or "station" (docstring)
    distance_m: tuple[float, float] = (0.25, 0.25)         # topdown: camera height above the support
    xy_jitter_mm: float = 0.0                              # topdown: camera xy jitter
    tilt_deg: float = 0.0                                  # topdown: max tilt of the optical axis from vertical
    views: dict = dataclasses.field(default_factory=dict)  # station: name -> {elevation_deg, azimuth_deg, roll_deg}
    fill: tuple[float, float] = (0.55, 0.55)               # station: part extent / shorter image side
    rest_rotation_deg: tuple = (0.0, 0.0, 0.0)             # station: xyz Euler angles of the part on the fixture
    placement_mm: float = 0.0                              # station: part xy tolerance (uniform +-)
    yaw_deg: float = 0.0                                   # station: part rotation tolerance about z (+-)
    camera_position_mm: float = 0.0                        # station: camera position tolerance per axis (+-)
    camera_angle_deg: float = 0.0                          # station: camera orientation tolerance per axis (+-)

    def __post_init__(self):
        """Normalise the shapes (numbers -> (lo, hi), lists -> tuples); the values are checked
        by ``polar_render.config.schema.layout_from_dict``, not here."""
        self.instances = [int(i) for i in self.instances]
        for name in ("distance_m", "fill"):
            if isinstance(getattr(self, name), (int, float)):
                setattr(self, name, (float(getattr(self, name)),) * 2)
        for name in ("drop_height_cm", "radius_m", "elevation_deg", "azimuth_deg", "inplane_deg", "distance_m", "fill"):
            setattr(self, name, tuple(float(x) for x in getattr(self, name)))
        self.rest_rotation_deg = tuple(float(x) for x in self.rest_rotation_deg)
        if self.mode == "station":
            self.cameras_per_scene = len(self.views)


def camera_matrix(cfg: LayoutConfig) -> np.ndarray:
    """3x3 intrinsics (px) with the OpenCV centre cx, cy = (w-1)/2, (h-1)/2."""
    return np.array([[cfg.fx, 0.0, (cfg.width - 1) / 2.0],
                     [0.0, cfg.fy, (cfg.height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def _hull_m(mesh_mm: trimesh.Trimesh):
    """Convex hull of a model in metres: (vertices relative to the centre of mass, com_m, mass_kg)."""
    hull = trimesh.Trimesh(np.asarray(mesh_mm.vertices, dtype=np.float64) * 1e-3).convex_hull
    com = np.asarray(hull.center_mass, dtype=np.float64)
    mass = max(float(hull.volume) * DENSITY_KG_M3, 1e-4)
    return np.asarray(hull.vertices) - com, com, mass


def sample_scene(models_mm: dict[int, trimesh.Trimesh], cfg: LayoutConfig, rng: np.random.Generator,
                 *, stats: dict | None = None):
    """Drop ``cfg.instances`` onto the plane z = 0 and sample ``cfg.cameras_per_scene`` cameras.

    Returns ``(objects, cameras)``: ``objects`` = [(obj_id, T_m2w)] with T_m2w a
    4x4 model -> world pose in METRES (world Z-up, support z = 0), ``cameras`` =
    [(R_w2c, t_w2c_mm)] (OpenCV camera, translation in mm).  If ``stats`` is a
    dict it receives ``settle_s`` (simulated seconds), ``at_rest`` (bool) and
    ``max_lin_speed`` / ``max_ang_speed`` (m/s, rad/s) at the end of the drop.
    Draw order: per instance rotation, xy, height; then per camera radius, elevation,
    azimuth, roll, look-at jitter.
    """
    missing = sorted(set(cfg.instances) - set(models_mm))
    if missing:
        raise KeyError(f"sample_scene: no model for obj_id(s) {missing}")
    if cfg.mode == "topdown":
        return _topdown_scene(models_mm, cfg, rng)
    if cfg.mode == "station":
        return _station_scene(models_mm, cfg, rng)
    hulls = {oid: _hull_m(models_mm[oid]) for oid in sorted(set(cfg.instances))}
    objects, settled = _drop(hulls, cfg, rng)
    if stats is not None:
        stats.update(settled)
    return objects, _shell_cameras(objects, hulls, cfg, rng)


def _drop(hulls: dict, cfg: LayoutConfig, rng: np.random.Generator):
    """Drop the instances in one fresh pybullet DIRECT client and let them settle; returns
    ``([(obj_id, T_m2w)], stats)`` (see :func:`sample_scene`)."""
    import pybullet as pb

    cid = pb.connect(pb.DIRECT)
    try:
        pb.resetSimulation(physicsClientId=cid)
        pb.setGravity(0, 0, -9.81, physicsClientId=cid)
        pb.setTimeStep(TIME_STEP_S, physicsClientId=cid)
        plane = pb.createMultiBody(0, pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=cid),
                                   physicsClientId=cid)
        pb.changeDynamics(plane, -1, lateralFriction=cfg.friction, collisionMargin=COLLISION_MARGIN_M,
                         physicsClientId=cid)
        shapes = {oid: pb.createCollisionShape(pb.GEOM_MESH, vertices=h[0].tolist(), physicsClientId=cid)
                  for oid, h in hulls.items()}
        bodies = []
        for oid, (xyz, q) in zip(cfg.instances, _drop_poses(hulls, cfg, rng)):
            b = pb.createMultiBody(hulls[oid][2], shapes[oid], basePosition=xyz, baseOrientation=q,
                                   physicsClientId=cid)
            pb.changeDynamics(b, -1, lateralFriction=cfg.friction, collisionMargin=COLLISION_MARGIN_M,
                         physicsClientId=cid)
            bodies.append(b)
        settled = _settle(pb, cid, bodies, cfg)
        objects = []
        for oid, b in zip(cfg.instances, bodies):
            p, q = pb.getBasePositionAndOrientation(b, physicsClientId=cid)
            R = Rotation.from_quat(q).as_matrix()
            objects.append((oid, pose_matrix(R, np.asarray(p) - R @ hulls[oid][1])))   # model origin -> world
    finally:
        pb.disconnect(physicsClientId=cid)
    return objects, settled


def _drop_poses(hulls: dict, cfg: LayoutConfig, rng: np.random.Generator) -> list:
    """Initial [(xyz_m, quaternion xyzw)] of each instance's centre of mass: uniform random
    rotation, xy in +-xy_range_mm, lowest point ``drop_height_cm`` above the support or
    ``STACK_GAP_MM`` above an overlapping, already placed object (no initial interpenetration)."""
    poses, boxes = [], []   # boxes: xy-min, xy-max, top z of placed objects (m)
    for oid in cfg.instances:
        rot = Rotation.random(rng=rng)
        pv = rot.apply(hulls[oid][0])
        xy = rng.uniform(-cfg.xy_range_mm, cfg.xy_range_mm, size=2) * 1e-3
        h = rng.uniform(*cfg.drop_height_cm) * 1e-2
        lo_xy, hi_xy = pv[:, :2].min(0) + xy, pv[:, :2].max(0) + xy
        base = 0.0
        for blo, bhi, top in boxes:
            if np.all(lo_xy < bhi) and np.all(blo < hi_xy):
                base = max(base, top + STACK_GAP_MM * 1e-3)
        z = base + h - pv[:, 2].min()
        boxes.append((lo_xy, hi_xy, z + pv[:, 2].max()))
        poses.append(([xy[0], xy[1], z], rot.as_quat().tolist()))   # x, y, z, w (pybullet order)
    return poses


def _settle(pb, cid: int, bodies: list, cfg: LayoutConfig) -> dict:
    """Step until every body stays at rest for ``REST_STEPS`` steps (after ``MIN_SETTLE_S``)
    or ``settle_max_s`` passes; returns the ``stats`` of :func:`sample_scene`."""
    n_max = int(round(cfg.settle_max_s / TIME_STEP_S))
    n_min = int(round(MIN_SETTLE_S / TIME_STEP_S))
    calm, n, vmax, wmax = 0, 0, np.inf, np.inf
    while n < n_max:
        pb.stepSimulation(physicsClientId=cid)
        n += 1
        vel = [pb.getBaseVelocity(b, physicsClientId=cid) for b in bodies]
        vmax = max(float(np.linalg.norm(v)) for v, _ in vel)
        wmax = max(float(np.linalg.norm(w)) for _, w in vel)
        calm = calm + 1 if (vmax < REST_LIN_SPEED_M_S and wmax < REST_ANG_SPEED_RAD_S) else 0
        if calm >= REST_STEPS and n >= n_min:
            break
    return {"settle_s": n * TIME_STEP_S, "at_rest": calm >= REST_STEPS, "max_lin_speed": vmax, "max_ang_speed": wmax}


def _shell_cameras(objects: list, hulls: dict, cfg: LayoutConfig, rng: np.random.Generator) -> list:
    """Cameras on a shell around the mean bounding-box centre of the posed objects."""
    centres = []
    for oid, T in objects:
        v = hulls[oid][0] + hulls[oid][1]
        pw = v @ T[:3, :3].T + T[:3, 3]
        centres.append((pw.min(0) + pw.max(0)) / 2)
    centre = np.mean(centres, axis=0)
    cameras = []
    for _ in range(cfg.cameras_per_scene):
        r = rng.uniform(*cfg.radius_m)
        el = np.radians(rng.uniform(*cfg.elevation_deg))
        az = np.radians(rng.uniform(*cfg.azimuth_deg))
        roll = np.radians(rng.uniform(*cfg.inplane_deg))
        jitter = rng.uniform(-cfg.look_at_jitter_mm, cfg.look_at_jitter_mm, size=3) * 1e-3
        eye = centre + r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        cameras.append(look_at_w2c(eye, centre + jitter, up=(0.0, 0.0, 1.0), roll_rad=roll))
    return cameras


def topdown_w2c(eye_m, roll_rad: float = 0.0, tilt_rad: float = 0.0, tilt_dir_rad: float = 0.0):
    """(R_w2c, t_w2c_mm) of an OpenCV camera at ``eye_m`` looking down world -z (image x =
    world +x, image y = world -y at zero roll), rolled about its optical axis and then
    tilted by ``tilt_rad`` about the horizontal axis at azimuth ``tilt_dir_rad``."""
    c, s = np.cos(roll_rad), np.sin(roll_rad)
    x0, y0, z0 = np.array([1.0, 0.0, 0.0]), np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    R_c2w = np.column_stack([c * x0 + s * y0, -s * x0 + c * y0, z0])
    axis = np.array([np.cos(tilt_dir_rad), np.sin(tilt_dir_rad), 0.0])
    R_c2w = Rotation.from_rotvec(axis * tilt_rad).as_matrix() @ R_c2w
    R_w2c = R_c2w.T
    return R_w2c, -R_w2c @ (np.asarray(eye_m, np.float64) * 1000.0)


def _topdown_scene(models_mm: dict[int, trimesh.Trimesh], cfg: LayoutConfig, rng: np.random.Generator):
    """Objects at identity orientation resting on z = 0, cameras straight above (module docstring)."""
    objects = []
    for oid in cfg.instances:
        v = np.asarray(models_mm[oid].vertices, np.float64) * 1e-3
        lo, hi = v.min(0), v.max(0)
        objects.append((oid, pose_matrix(np.eye(3), [-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, -lo[2]])))
    cameras = []
    for _ in range(cfg.cameras_per_scene):
        h = rng.uniform(*cfg.distance_m)
        xy = rng.uniform(-cfg.xy_jitter_mm, cfg.xy_jitter_mm, size=2) * 1e-3
        roll = np.radians(rng.uniform(*cfg.inplane_deg))
        tilt = np.radians(rng.uniform(0.0, cfg.tilt_deg))
        tilt_dir = rng.uniform(0.0, 2 * np.pi)
        cameras.append(topdown_w2c([xy[0], xy[1], h], roll, tilt, tilt_dir))
    return objects, cameras


def _station_scene(models_mm: dict[int, trimesh.Trimesh], cfg: LayoutConfig, rng: np.random.Generator):
    """One product on its fixture and one camera per named view (module docstring)."""
    oid = cfg.instances[0]
    R0 = Rotation.from_euler("xyz", cfg.rest_rotation_deg, degrees=True).as_matrix()
    yaw = np.radians(rng.uniform(-cfg.yaw_deg, cfg.yaw_deg))
    R = Rotation.from_rotvec([0.0, 0.0, yaw]).as_matrix() @ R0
    v = (np.asarray(models_mm[oid].vertices, np.float64) * 1e-3) @ R.T
    lo, hi = v.min(0), v.max(0)
    dxy = rng.uniform(-cfg.placement_mm, cfg.placement_mm, size=2) * 1e-3
    t = np.array([-(lo[0] + hi[0]) / 2 + dxy[0], -(lo[1] + hi[1]) / 2 + dxy[1], -lo[2]])
    posed = v + t
    centre = (posed.min(0) + posed.max(0)) / 2
    fill = rng.uniform(*cfg.fill)
    cameras = [station_camera(posed, centre, view, fill, cfg, rng) for view in cfg.views.values()]
    return [(oid, pose_matrix(R, t))], cameras


def station_camera(points_m: np.ndarray, centre_m: np.ndarray, view: dict, fill: float, cfg: LayoutConfig,
                   rng: np.random.Generator | None):
    """(R_w2c, t_w2c_mm) of a station view: the camera looks at ``centre_m`` from elevation /
    azimuth (degrees; azimuth from world +x towards +y), image up towards world +z (for a
    view from straight above, towards the far side of the azimuth, -(cos az, sin az, 0)),
    then rolled by ``roll_deg``. The distance makes the part's larger projected extent
    (nearest face) cover ``fill`` of the shorter image side. Then the tolerances: eye moved
    by U(+-camera_position_mm) per axis, orientation turned by U(+-camera_angle_deg) per axis
    (``rng`` None: no tolerances, the nominal camera)."""
    el, az = np.radians(float(view["elevation_deg"])), np.radians(float(view.get("azimuth_deg", 0.0)))
    roll = np.radians(float(view.get("roll_deg", 0.0)))
    d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    up = (0.0, 0.0, 1.0) if el < np.radians(89.9) else (-np.cos(az), -np.sin(az), 0.0)
    R, _ = look_at_w2c(centre_m + d, centre_m, up=up, roll_rad=roll)
    rel = (points_m - centre_m) @ R.T                   # camera axes, metres
    ext = rel.max(0) - rel.min(0)
    f = max(cfg.fx, cfg.fy)
    dist = max(ext[0], ext[1]) * f / (fill * min(cfg.width, cfg.height)) + ext[2] / 2
    eye = centre_m + dist * d
    if rng is not None:   # the tolerances; None: the nominal camera
        eye = eye + rng.uniform(-cfg.camera_position_mm, cfg.camera_position_mm, 3) * 1e-3
        turn = Rotation.from_rotvec(np.radians(rng.uniform(-cfg.camera_angle_deg, cfg.camera_angle_deg, 3)))
        R = turn.as_matrix() @ R
    return R, -R @ (eye * 1000.0)


# ----------------------------------------------------------------------------- framing from the part's size
# (``polar_render.config.scaffold``: ``new-scene`` writes layouts whose part fills a set share of the image)

def framing_distance_m(extent_mm: float, fx: float, side_px: int, fill: float) -> float:
    """Distance (m) at which a length ``extent_mm`` facing the camera spans ``fill`` of
    ``side_px`` pixels with focal length ``fx`` (px): ``extent * fx / (fill * side)``."""
    return extent_mm * 1e-3 * fx / (fill * side_px)


def drop_framing(size_mm, width: int, height: int, fx: float, fill: float = 0.5) -> dict:
    """Camera shell of a drop layout for a part of bounding-box ``size_mm`` (x, y, z): the
    part's diagonal (its largest extent from any direction) spans ``fill`` of the shorter
    image side at the middle of ``radius_m`` (+-10 %); look-at jitter 5 % and drop area 50 %
    of the largest extent."""
    size = np.asarray(size_mm, np.float64)
    r = framing_distance_m(float(np.linalg.norm(size)), fx, min(width, height), fill)
    return {"radius_m": [round(0.9 * r, 4), round(1.1 * r, 4)],
            "look_at_jitter_mm": round(0.05 * float(size.max()), 3), "xy_range_mm": round(0.5 * float(size.max()), 3)}


def topdown_framing(size_mm, width: int, height: int, fx: float, fill: float = 0.8) -> dict:
    """Camera height of a topdown layout (image x = world x, image y = world -y): the part's
    x extent spans at most ``fill`` of the width and its y extent at most ``fill`` of the
    height; the height is measured from the support, so the part's own height is added.
    xy jitter: 2 % of the largest extent."""
    sx, sy, sz = (float(x) for x in size_mm)
    d = max(framing_distance_m(sx, fx, width, fill), framing_distance_m(sy, fx, height, fill)) + sz * 1e-3
    return {"distance_m": round(d, 4), "xy_jitter_mm": round(0.02 * max(sx, sy, sz), 3)}


def station_eye(size_mm, view: dict, width: int, height: int, fx: float, fill: float) -> np.ndarray:
    """Nominal eye position (m, world) of a station view for a part of bounding-box
    ``size_mm`` resting centred on the fixture (no tolerances): what :func:`station_camera`
    computes at render time."""
    size = np.asarray(size_mm, np.float64) * 1e-3
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (0.0, 1.0)]) * size
    centre = np.array([0.0, 0.0, size[2] / 2])
    cfg = LayoutConfig(instances=[1], width=width, height=height, fx=fx, fy=fx, mode="station",
                       views={"v": view})
    R, t = station_camera(corners, centre, view, fill, cfg, None)
    return -R.T @ (t / 1000.0)


def _frames(split, scene_id, objects, cameras, cfg: LayoutConfig) -> list[bop.Frame]:
    K = camera_matrix(cfg)
    frames = []
    for im_id, (R_w2c, t_w2c) in enumerate(cameras):
        objs = tuple(bop.ObjectPose(obj_id=oid, R_m2c=R_w2c @ T[:3, :3],
                                    t_m2c_mm=R_w2c @ (T[:3, 3] * 1000.0) + t_w2c)
                     for oid, T in objects)
        frames.append(bop.Frame(split=split, scene_id=int(scene_id), im_id=im_id, K=K, width=cfg.width,
                                height=cfg.height, depth_scale=1.0, R_w2c=R_w2c, t_w2c_mm=t_w2c,
                                objects=objs))
    return frames


def write_layout_models(root: Path, models_mm: dict[int, trimesh.Trimesh], cfg: LayoutConfig) -> dict[int, Path]:
    """Write ``models/`` (BOP, mm) for the obj_ids of ``cfg.instances`` unless the layout
    already has ``models_info.json`` (resume); return {obj_id: PLY path}."""
    ids = sorted(set(cfg.instances))
    if not (Path(root) / "models" / "models_info.json").exists():
        bop.write_models(root, {oid: models_mm[oid] for oid in ids})
    return {oid: bop._model_path(Path(root), oid) for oid in ids}


def generate_layout(out_root, models_mm: dict[int, trimesh.Trimesh], cfg: LayoutConfig, seed: int,
                    scene_ids: Iterable[int], split: str = "train_pbr", progress: bool = True) -> Path:
    """Write a BOP layout: ``camera.json``, ``models/`` (only if models_info.json is absent)
    and one scene per id under ``<out_root>/<split>/<scene_id:06d>/``.

    Scene ``s`` uses the ``layout`` stream of ``(seed, s)`` only, so it is identical
    whether generated alone or in a batch.  Scenes whose ``scene_gt.json``
    exists are skipped (resume; bop.write_scene writes scene_gt.json last and
    atomically).  Returns ``out_root`` as a Path.
    """
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    bop.write_camera(root, bop.CameraInfo(K=camera_matrix(cfg), width=cfg.width, height=cfg.height))
    write_layout_models(root, models_mm, cfg)
    ids = [int(s) for s in scene_ids]
    for sid in progress_bar(ids, desc=f"layout {split}", unit="scene", enabled=progress):
        if (root / split / f"{sid:06d}" / "scene_gt.json").exists():
            continue
        rng = stream("layout", seed, sid)
        objects, cameras = sample_scene(models_mm, cfg, rng)
        bop.write_scene(root, split, sid, _frames(split, sid, objects, cameras, cfg))
    return root
