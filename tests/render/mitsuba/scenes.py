"""Tiny hand-built Mitsuba scenes for the variant tests (tests/render/mitsuba/test_*.py).

World in metres, Z up. ``plane_scene``: Mitsuba's ``rectangle`` ([-1, 1]^2 at z = 0,
normal +z, uv in [0, 1]^2) under a uniform, unpolarized ``constant`` environment, seen
by a narrow (``fov`` deg) perspective camera 2 m away whose axis meets the plane's normal
at ``incidence_deg``: every pixel sees the plane at almost that angle, and a mirror-like
BSDF reflects the environment there, so the rendered Stokes vector is the BSDF's Mueller
matrix applied to unpolarized light. ``sphere_scene``: a unit-radius sphere on a ground
rectangle, lit by a point light and the environment, for checks with several regions.
"""
from __future__ import annotations

import numpy as np

EXACT_AOVS = "dd:depth,nn:sh_normal,pp:position"   # one ray per pixel centre: no Monte Carlo noise


def film(mi, width: int, height: int) -> dict:
    fmt = "luminance" if "mono" in mi.variant() else "rgb"
    return {"type": "hdrfilm", "width": width, "height": height, "pixel_format": fmt, "rfilter": {"type": "box"}}


def camera(mi, eye, target, res, spp: int, fov: float, exact: bool = False) -> dict:
    """Perspective camera; ``exact``: one unjittered ray through each pixel centre (AOVs)."""
    sampler = ({"type": "stratified", "sample_count": 1, "jitter": False} if exact
               else {"type": "independent", "sample_count": int(spp)})
    view = np.subtract(target, eye, dtype=np.float64)
    up = [0.0, 1.0, 0.0] if abs(view[2]) > 0.999 * np.linalg.norm(view) else [0.0, 0.0, 1.0]   # image up: +y looking down
    return {"type": "perspective", "fov": float(fov), "fov_axis": "x", "film": film(mi, *res), "sampler": sampler,
            "to_world": mi.ScalarTransform4f().look_at(origin=[float(x) for x in eye],
                                                       target=[float(x) for x in target], up=up)}


def stokes_integrator(max_depth: int = 4) -> dict:
    return {"type": "stokes", "integrator": {"type": "path", "max_depth": max_depth}}


def plane_scene(mi, bsdf: dict, incidence_deg: float, res=(16, 12), spp: int = 64, fov: float = 5.0):
    th = np.radians(incidence_deg)
    eye = [0.0, -2.0 * np.sin(th), 2.0 * np.cos(th)]
    return mi.load_dict({"type": "scene", "integrator": stokes_integrator(),
                         "camera": camera(mi, eye, [0.0, 0.0, 0.0], res, spp, fov),
                         "plane": {"type": "rectangle", "bsdf": bsdf},
                         "env": {"type": "constant", "radiance": {"type": "uniform", "value": 1.0}}})


def sphere_scene(mi, sphere_bsdf: dict, res=(32, 24), spp: int = 64, exact: bool = False):
    """Sphere (radius 1 m, centre (0, 0, 1)) on a 6 m diffuse ground, camera at 30 deg
    elevation 6 m away, point light up and to the side, dim environment."""
    eye = [0.0, -6.0 * np.cos(np.radians(30.0)), 1.0 + 6.0 * np.sin(np.radians(30.0))]
    return mi.load_dict({
        "type": "scene", "integrator": stokes_integrator(max_depth=2),   # direct light only: no caustics
        "camera": camera(mi, eye, [0.0, 0.0, 0.9], res, spp, 40.0, exact),
        "sphere": {"type": "sphere", "center": [0.0, 0.0, 1.0], "radius": 1.0, "bsdf": sphere_bsdf},
        "ground": {"type": "rectangle", "to_world": mi.ScalarTransform4f().scale([3.0, 3.0, 1.0]),
                   "bsdf": {"type": "diffuse", "reflectance": {"type": "rgb", "value": [0.5, 0.4, 0.3]}}},
        "light": {"type": "point", "position": [3.0, -3.0, 5.0], "intensity": {"type": "uniform", "value": 40.0}},
        "env": {"type": "constant", "radiance": {"type": "uniform", "value": 0.2}}})


def fresnel_dielectric(cos_i: float, eta: float) -> tuple[float, float]:
    """(Rs, Rp) power reflectances of a smooth dielectric of relative IOR ``eta``."""
    sin_t = np.sqrt(max(0.0, 1.0 - cos_i ** 2)) / eta
    cos_t = np.sqrt(1.0 - sin_t ** 2)
    rs = (cos_i - eta * cos_t) / (cos_i + eta * cos_t)
    rp = (eta * cos_i - cos_t) / (eta * cos_i + cos_t)
    return float(rs ** 2), float(rp ** 2)


# ----------------------------------------------------------------------------- MitsubaScene inputs
def object_frame(cfg, index: int, res=(32, 24), distance_m: float = 0.2, fov_deg: float = 20.0):
    """A hand-made BOP frame of one instance of the scene's first object: the object at
    world (0.25 m x ``index``, 0, 0) turned by 40 deg x ``index`` about z (so the ground, centred
    under it, and the scene's bounds move from sample to sample), the camera ``distance_m``
    away at 50 deg elevation and azimuth -90 + 25 deg x ``index``, looking at the object."""
    from polar_render.bop import Frame, ObjectPose
    from polar_render.geometry import look_at_w2c

    w, h = res
    f = w / (2.0 * np.tan(np.radians(fov_deg) / 2.0))
    K = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    az, el = np.radians(-90.0 + 25.0 * index), np.radians(50.0)
    centre = np.array([0.25 * index, 0.0, 0.0])
    eye = centre + distance_m * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    R_w2c, t_w2c = look_at_w2c(eye, centre)
    yaw = np.radians(40.0 * index)
    R_m2w = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    obj = ObjectPose(min(cfg.objects), R_w2c @ R_m2w, R_w2c @ (centre * 1000.0) + t_w2c)
    return Frame("test", 0, index, K, w, h, 1.0, R_w2c, t_w2c, (obj,))


def scene_inputs(cfg, index: int, seed: int = 5, res=(32, 24)):
    """(structure, frame, appearance) of sample ``index`` as the runner draws them."""
    from polar_render.mitsuba.scene import frame_structure, objects_centre
    from polar_render.randomize import sample_appearance

    frame = object_frame(cfg, index, res)
    structure = frame_structure(cfg, None, frame)
    slots = [(s.instance, s.obj_id, s.part, s.material) for s in structure.base_slots]
    return structure, frame, sample_appearance(cfg, seed, index, slots, objects_centre(frame))


def built_scene(mi, cfg, structure, appearance, res=(32, 24), spp: int = 4, stains: bool = True):
    from polar_render.mitsuba.scene import MitsubaScene

    return MitsubaScene(mi, cfg, structure, appearance, res[0], res[1], spp, int(cfg.render["max_depth"]),
                        stains=stains)
