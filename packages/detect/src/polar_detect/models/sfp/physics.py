"""Physics-only shape from polarization: the baseline the learned network must beat.

Inputs are a pixel's DoLP rho in [0, 1] and AoLP phi (radians, from the image x axis,
counter-clockwise on screen, as ``polar_render.physics.polarization``); the output are candidate
unit normals in the OpenCV camera frame (x right, y down, z forward; a surface facing
the camera has n_z < 0), the convention of ``normals.tiff``.

Model (orthographic: every pixel is viewed along +z; with the station cameras' focal
length of 1000 px at 320x240 the viewing ray of the outermost part pixel is within ~11
degrees of the axis, and the network gets the same images without intrinsics either):

* zenith theta = angle between the normal and the direction to the camera (-z);
* azimuth alpha = direction of the normal's projection on the image, counter-clockwise
  on screen from the image x axis, so ``n = (sin t cos a, -sin t sin a, -cos t)``
  (screen "up" is -y of the pixel grid);
* diffuse reflection (light scattered under the surface and refracted out) is polarized
  parallel to the plane of emittance: phi = alpha (mod pi); its DoLP follows
  :func:`diffuse_dolp` (Atkinson & Hancock 2006), monotonic in theta;
* specular reflection is s-polarized, perpendicular to the plane of incidence:
  phi = alpha + pi/2 (mod pi) (``tests/render/test_physics.py`` pins this for the
  renderer); its DoLP is ``polar_render.physics.polarization.fresnel_reflection_dolp``, rising
  from 0 to 1 at Brewster's angle atan(n) and falling back to 0 at 90 degrees.

Ambiguities (why physics alone does not give one normal per pixel):

* the pi azimuth ambiguity: AoLP is an orientation (period pi), so alpha and alpha + pi
  fit equally well, for either reflection type;
* the reflection type: diffuse (alpha = phi) or specular (alpha = phi +- pi/2);
* the two specular zenith solutions: every specular DoLP below 1 is met once below and
  once above Brewster's angle.

That gives :data:`CANDIDATES` = 2 diffuse + 4 specular candidate normals per pixel, plus
the refractive index, which is unknown in practice (``ior`` parameter, default 1.5; the
station's plastics are 1.49). DoLP above a model's maximum is clamped (diffuse: 90
degrees; specular: Brewster's angle). Mixed diffuse + specular light fits neither model;
it is what the learned network is for.

Fair comparison: :func:`oracle` picks, for every pixel, the candidate nearest to the
ground truth. No real method can do that (it needs the answer), so the baseline numbers
are *optimistic* upper bounds on what any disambiguation of the physics model can reach;
``sfp evaluate`` reports the oracle over all six candidates ("physics_oracle") and over
the diffuse pair and the specular quadruple alone.
"""
from __future__ import annotations

import numpy as np

from polar_render.physics.polarization import fresnel_reflection_dolp

DEFAULT_IOR = 1.5
# (family, azimuth offset to phi, zenith branch) of every candidate
CANDIDATES = (("diffuse", 0.0, "diffuse"), ("diffuse", np.pi, "diffuse"),
              ("specular", np.pi / 2, "below_brewster"), ("specular", -np.pi / 2, "below_brewster"),
              ("specular", np.pi / 2, "above_brewster"), ("specular", -np.pi / 2, "above_brewster"))
FAMILIES = {"diffuse": (0, 1), "specular": (2, 3, 4, 5), "all": (0, 1, 2, 3, 4, 5)}
_GRID = 4097


def _check_ior(ior: float) -> float:
    ior = float(ior)
    if not np.isfinite(ior) or ior <= 1.0 or ior > 5.0:
        raise ValueError(f"refractive index must be in (1, 5], got {ior}")
    return ior


def diffuse_dolp(theta_rad, ior: float = DEFAULT_IOR) -> np.ndarray:
    """DoLP of diffuse reflection at emittance zenith ``theta_rad`` for refractive index ``ior``:
    ``(n - 1/n)^2 sin^2 t / (2 + 2 n^2 - (n + 1/n)^2 sin^2 t + 4 cos t sqrt(n^2 - sin^2 t))``."""
    n = _check_ior(ior)
    t = np.asarray(theta_rad, dtype=np.float64)
    s2 = np.sin(t) ** 2
    num = (n - 1.0 / n) ** 2 * s2
    den = 2.0 + 2.0 * n * n - (n + 1.0 / n) ** 2 * s2 + 4.0 * np.cos(t) * np.sqrt(n * n - s2)
    return num / den


def specular_dolp(theta_rad, ior: float = DEFAULT_IOR) -> np.ndarray:
    """DoLP of specular reflection of unpolarized light (the renderer's Fresnel model)."""
    return fresnel_reflection_dolp(theta_rad, _check_ior(ior))


def brewster_angle(ior: float = DEFAULT_IOR) -> float:
    """atan(n), radians: where specular DoLP reaches 1."""
    return float(np.arctan(_check_ior(ior)))


def zenith_diffuse(rho, ior: float = DEFAULT_IOR) -> np.ndarray:
    """Invert :func:`diffuse_dolp` (monotonic): zenith in [0, pi/2] radians."""
    t = np.linspace(0.0, np.pi / 2, _GRID)
    return np.interp(np.asarray(rho, np.float64), diffuse_dolp(t, ior), t)


def zenith_specular(rho, ior: float = DEFAULT_IOR) -> tuple[np.ndarray, np.ndarray]:
    """Invert :func:`specular_dolp`: (solution below Brewster's angle, solution above it)."""
    tb = brewster_angle(ior)
    rho = np.asarray(rho, np.float64)
    lo = np.linspace(0.0, tb, _GRID)
    hi = np.linspace(tb, np.pi / 2, _GRID)
    below = np.interp(rho, specular_dolp(lo, ior), lo)
    above = np.interp(rho, specular_dolp(hi, ior)[::-1], hi[::-1])   # decreasing branch, reversed
    return below, above


def normal_from_angles(azimuth, zenith) -> np.ndarray:
    """Azimuth (counter-clockwise on screen from image x) and zenith (from the direction to
    the camera), radians -> unit normals (..., 3) in the OpenCV camera frame."""
    a, t = np.asarray(azimuth, np.float64), np.asarray(zenith, np.float64)
    st = np.sin(t)
    return np.stack([st * np.cos(a), -st * np.sin(a), -np.cos(t)], axis=-1)


def candidates(rho, phi, ior: float = DEFAULT_IOR) -> np.ndarray:
    """Every physics candidate normal: (6, ..., 3) float64, in the order of :data:`CANDIDATES`."""
    rho = np.clip(np.nan_to_num(np.asarray(rho, np.float64)), 0.0, 1.0)
    phi = np.nan_to_num(np.asarray(phi, np.float64))
    zen = {"diffuse": zenith_diffuse(rho, ior)}
    zen["below_brewster"], zen["above_brewster"] = zenith_specular(rho, ior)
    return np.stack([normal_from_angles(phi + off, zen[branch]) for _, off, branch in CANDIDATES])


def angular_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between vectors along the last axis, degrees (atan2 of |a x b| and a.b: exact
    near 0 and 180 degrees; vectors need not be unit)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(a * b, axis=-1)))


def oracle(cands: np.ndarray, truth: np.ndarray, family: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the candidate of ``family`` (diffuse | specular | all) nearest to ``truth``:
    (chosen normals (..., 3), their angular errors in degrees). Optimistic by construction."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    idx = list(FAMILIES[family])
    errs = np.stack([angular_error_deg(cands[k], truth) for k in idx])
    best = np.argmin(errs, axis=0)
    chosen = np.take_along_axis(cands[idx], best[None, ..., None], axis=0)[0]
    return chosen, np.take_along_axis(errs, best[None], axis=0)[0]
