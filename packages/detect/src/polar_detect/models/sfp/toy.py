"""An analytic toy dataset for the SfP network: spheres on a plane, mixed Fresnel polarization.

Each image (orthographic camera looking along +z; OpenCV frame) shows a ground plane
facing the camera and 1-3 spherical caps (the "part", ``object_mask``). Per pixel, with
the zenith theta = acos(-n_z) and azimuth alpha = atan2(-n_y, n_x) (``physics`` conventions):

* diffuse radiance ``I_d = k_d sum_l max(n . l, 0) + ambient``, polarized along alpha with
  DoLP ``physics.diffuse_dolp(theta, ior)``;
* specular radiance ``I_s = k_s sum_l exp(-(angle(n, h_l) / sigma)^2)`` (h_l = half vector
  of light l and the view), polarized along alpha + pi/2 with DoLP
  ``physics.specular_dolp(theta, ior)``;
* Stokes: ``S0 = I_d + I_s``, ``(S1, S2) = (I_d rho_d - I_s rho_s) (cos 2 alpha, sin 2 alpha)``.

The material (ior 1.35..1.75, k_d, k_s, sigma) and 1-3 lights vary per image, so neither
pure model explains the light of a pixel and the refractive index is unknown: what real
parts do, in miniature. Ground truth normals are exact. Written as a regular
``polar_detect.dataset`` (intensity, dolp, aolp, normals, object_mask) with train and test
splits, so every SfP command runs on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from polar_detect.dataset import encodings as enc

from polar_detect.models.sfp import physics


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def toy_scene(rng: np.random.Generator, height: int = 48, width: int = 64) -> dict[str, np.ndarray]:
    """One toy image: {'intensity', 'dolp', 'aolp' (H, W, 2), 'normals' (H, W, 3), 'part' (H, W)}."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    normals = np.zeros((height, width, 3))
    normals[..., 2] = -1.0
    part = np.zeros((height, width), bool)
    depth = np.full((height, width), np.inf)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.18, 0.38) * min(height, width)
        cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
        d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2
        inside = d2 < 0.98
        z = -np.sqrt(np.clip(1.0 - d2, 0.0, 1.0)) * r          # towards the camera: negative z
        closer = inside & (z < depth)
        n = np.stack([(xx - cx) / r, (yy - cy) / r, z / r], axis=-1)
        normals[closer] = _normalise(n[closer])
        depth[closer] = z[closer]
        part |= closer
    ior = rng.uniform(1.35, 1.75)
    kd, ks = rng.uniform(0.2, 0.8), rng.uniform(0.5, 3.0)
    sigma = rng.uniform(0.2, 0.6)
    depolarization = rng.uniform(0.5, 1.0)
    ambient = rng.uniform(0.02, 0.1)
    view = np.array([0.0, 0.0, -1.0])
    i_d = np.full((height, width), ambient)
    i_s = np.zeros((height, width))
    for _ in range(int(rng.integers(1, 4))):
        tilt, az = rng.uniform(0.0, 0.9), rng.uniform(0.0, 2 * np.pi)
        light = np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), -np.cos(tilt)])
        i_d += kd * np.clip(normals @ light, 0.0, None)
        half = _normalise(light + view)
        ang = np.arccos(np.clip(normals @ half, -1.0, 1.0))
        i_s += ks * np.exp(-(ang / sigma) ** 2)
    theta = np.arccos(np.clip(-normals[..., 2], -1.0, 1.0))
    alpha = np.arctan2(-normals[..., 1], normals[..., 0])
    lin = depolarization * (i_d * physics.diffuse_dolp(theta, ior) - i_s * physics.specular_dolp(theta, ior))
    s0 = i_d + i_s
    s1, s2 = lin * np.cos(2 * alpha), lin * np.sin(2 * alpha)
    dolp = np.abs(lin) / s0
    phi = 0.5 * np.arctan2(s2, s1)
    return {"intensity": s0.astype(np.float32), "dolp": dolp.astype(np.float32),
            "aolp": enc.encode_aolp(phi), "normals": normals.astype(np.float32), "part": part}


def build_toy(out: str | Path, n_train: int = 24, n_test: int = 8, seed: int = 0, height: int = 48,
              width: int = 64, overwrite: bool = False) -> dict:
    """Write the toy dataset to ``out``; returns its manifest."""
    from polar_detect.dataset.writer import DatasetWriter

    if height % 2 or width % 2 or height < 8 or width < 8:
        raise ValueError(f"toy images need even sizes >= 8, got {height}x{width}")
    rng = np.random.default_rng(seed)
    scenes = [toy_scene(rng, height, width) for _ in range(n_train + n_test)]
    scale = enc.robust_scale(np.concatenate([s["intensity"].ravel() for s in scenes[:n_train]]))
    mods = ("intensity", "dolp", "aolp", "normals")
    with DatasetWriter(Path(out), Path(out).name, seed, overwrite) as w:
        for k, s in enumerate(scenes):
            w.add(f"{k:04d}", "train" if k < n_train else "test", 0, "polar_detect.models.sfp.toy",
                  {m: s[m] for m in mods}, object_mask=s["part"])
        modal = {m: enc.modality_entry(m, ["Y"], scale, "99.5th percentile of train-split S0",
                                       "radiance" if m == "intensity" else "") for m in mods}
        return w.finish(modal, {}, source_kind="toy", generator="polar_detect.models.sfp.toy", colour_channels=["Y"])
