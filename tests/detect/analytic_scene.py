"""An analytic scene rendered into every dataset modality, independent of polar_detect.

A tilted plane with a spherical bump, seen by an orthographic camera in the OpenCV frame;
``transformed_scene`` mirrors / rotates it *as geometry* (its parameters), so tests can
compare an image transform of one rendering with the rendering of the transformed scene
(tests/detect/test_modalities.py, tests/detect/test_augment.py).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from polar_detect.dataset.encodings import encode_aolp

ALBEDO = np.array([0.8, 0.5, 0.3])


def render(scene: dict, h: int, w: int) -> dict[str, torch.Tensor]:
    """Every dataset modality of ``scene`` as (C, H, W) float64 tensors.

    Orthographic camera looking along +z (OpenCV frame: x right, y down); pixel (v, u) sees the
    ray at x = u - (w-1)/2, y = v - (h-1)/2. Surfaces: plane depth z = z0 + a x + b y and a
    sphere of radius r centred on the plane at (cx, cy); the nearer one is seen. Diffuse
    polarization: AoLP = azimuth of the projected normal, counter-clockwise on screen
    (atan2(-ny, nx)); DoLP a function of the zenith angle; Lambertian S0 lit along the view axis.
    """
    a, b, z0, cx, cy, r = (scene[k] for k in ("a", "b", "z0", "cx", "cy", "r"))
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x -= (w - 1) / 2
    y -= (h - 1) / 2
    n = np.stack([np.full_like(x, a), np.full_like(x, b), -np.ones_like(x)])      # plane, faces camera
    zc = z0 + a * cx + b * cy
    d2 = (x - cx) ** 2 + (y - cy) ** 2
    inside = d2 < r * r
    zs = zc - np.sqrt(np.maximum(r * r - d2, 0.0))
    front = inside & (zs < z0 + a * x + b * y)
    sph = np.stack([x - cx, y - cy, zs - zc]) / r
    n = np.where(front[None], sph, n)
    n = n / np.linalg.norm(n, axis=0, keepdims=True)
    theta = np.arccos(np.clip(-n[2], -1, 1))
    rho = 0.4 * np.sin(theta) ** 2
    phi = np.arctan2(-n[1], n[0])                       # counter-clockwise on screen
    phi = (phi + np.pi / 2) % np.pi - np.pi / 2
    s0 = ALBEDO[:, None, None] * (-n[2])[None]          # (3, H, W)
    s1 = s0 * rho * np.cos(2 * phi)
    s2 = s0 * rho * np.sin(2 * phi)
    out = {"intensity": s0, "dolp": np.repeat(rho[None], 3, 0), "normals": n,
           "aolp": encode_aolp(np.repeat(phi[..., None], 3, -1)).transpose(2, 0, 1).astype(np.float64),
           "stokes": np.concatenate([s0, s1, s2])}
    for ang in (0, 45, 90, 135):
        t = math.radians(ang)
        out[f"pol{ang}"] = 0.5 * (s0 + s1 * math.cos(2 * t) + s2 * math.sin(2 * t))
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}


SCENE = {"a": 0.35, "b": -0.2, "z0": 50.0, "cx": 3.3, "cy": -2.7, "r": 7.0}


def transformed_scene(scene: dict, op: str) -> dict:
    """The same scene mirrored / rotated as geometry (independent of polar_detect)."""
    s = dict(scene)
    if op == "hflip":                        # x -> -x
        s.update(a=-scene["a"], cx=-scene["cx"])
    elif op == "vflip":                      # y -> -y
        s.update(b=-scene["b"], cy=-scene["cy"])
    else:                                    # rot90 (counter-clockwise on screen): (x, y) -> (y, -x)
        # depth'(q) = depth(R^-1 q), R^-1 (x, y) = (-y, x): z0 + a(-y) + b x
        s.update(a=scene["b"], b=-scene["a"], cx=scene["cy"], cy=-scene["cx"])
    return s
