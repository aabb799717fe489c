"""Stokes-vector algebra on images (pure numpy, float32/float64).

Conventions
-----------
* Stokes vectors are those Mitsuba's ``stokes`` integrator returns, re-expressed in the
  camera frame with reference axis = image x axis (pointing right in the image).
  S1 > 0: horizontally (image-x) polarized, S1 < 0: vertically polarized.
* AoLP phi = 0.5 * atan2(S2, S1) in [-pi/2, pi/2], measured from the image x axis,
  positive counter-clockwise as seen by a viewer of the image (towards image "up", i.e.
  towards -y of the OpenCV pixel grid). The ``tests/render/test_physics.py`` sphere test
  pins this down (specular reflection is polarized tangentially around the sphere).
* A linear polarizer at angle theta (same reference) transmits
  I_theta = 0.5 * (S0 + S1 cos 2theta + S2 sin 2theta)  (Malus' law for partially polarized
  light), so I0 + I90 = I45 + I135 = S0.
* Unpolarized intensity I_un = S0 (what a sensor without polarizer records).
* Pixels with S0 <= eps (no light) get DoLP 0 and AoLP 0, never NaN.
* Physical Stokes vectors lie in the cone S0 >= |(S1, S2, S3)|; ``project_to_cone`` maps
  Monte Carlo estimates that leave it (negative S0, DoP > 1) to the nearest point of it.
"""
from __future__ import annotations

import numpy as np

POLARIZER_ANGLES_DEG = (0, 45, 90, 135)
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec. 709 luminance of linear RGB (mono sensors)


def polarizer_image(stokes: np.ndarray, theta_rad: float) -> np.ndarray:
    """Intensity behind an ideal linear polarizer at ``theta_rad``; ``stokes`` is (4, ...)."""
    s0, s1, s2 = stokes[0], stokes[1], stokes[2]
    return 0.5 * (s0 + s1 * np.cos(2 * theta_rad) + s2 * np.sin(2 * theta_rad))


def polarizer_images(stokes: np.ndarray) -> dict[int, np.ndarray]:
    """{0: I0, 45: I45, 90: I90, 135: I135} from Stokes (4, ...)."""
    return {a: polarizer_image(stokes, np.deg2rad(a)) for a in POLARIZER_ANGLES_DEG}


def stokes_from_polarizer_images(i0, i45, i90, i135) -> np.ndarray:
    """Linear Stokes (S0, S1, S2) recovered from four polarizer images (S3 not observable)."""
    s0 = 0.5 * (i0 + i45 + i90 + i135)
    return np.stack([s0, i0 - i90, i45 - i135])


def project_to_cone(stokes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean projection of every Stokes vector onto the physical cone.

    ``stokes`` is (K, ...) with K = 4 (S0..S3, cone S0 >= |(S1, S2, S3)|) or K = 3 (S0..S2,
    the linear cone S0 >= |(S1, S2)|). A vector inside is kept bit for bit; one with
    |x| <= -S0 becomes 0; otherwise (S0, x) -> a (1, x / |x|) with a = (S0 + |x|) / 2.
    Afterwards S0 >= 0 and every polarizer image 0.5 (S0 + S1 cos 2t + S2 sin 2t) >= 0.
    Returns (projected array, same dtype; boolean mask (...) of the vectors changed).
    """
    s0, x = stokes[0], stokes[1:]
    n = np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=0))
    out_side = n > s0
    if not out_side.any():
        return stokes, out_side
    a = np.where(n <= -s0, 0.0, 0.5 * (s0 + n))
    scale = np.divide(a, n, out=np.zeros_like(a), where=n > 0)
    out = stokes.copy()
    out[0] = np.where(out_side, a, s0)
    out[1:] = np.where(out_side, x * scale, x)
    return out, out_side


def dolp(stokes: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Degree of linear polarization sqrt(S1^2+S2^2)/S0 in [0, 1]; 0 where S0 <= eps."""
    s0 = stokes[0]
    lin = np.hypot(stokes[1], stokes[2])
    ok = s0 > eps
    out = np.zeros_like(s0)
    np.divide(lin, s0, out=out, where=ok)
    return np.clip(out, 0.0, 1.0)


def aolp(stokes: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Angle of linear polarization 0.5*atan2(S2, S1) in [-pi/2, pi/2]; 0 where S0 <= eps."""
    out = 0.5 * np.arctan2(stokes[2], stokes[1])
    return np.where(stokes[0] > eps, out, 0.0).astype(stokes.dtype, copy=False)


def fresnel_reflection_dolp(theta_rad, ior: float) -> np.ndarray:
    """DoLP of initially unpolarized light after specular reflection on a dielectric of
    index ``ior`` (from air) at incidence ``theta_rad``: (Rs - Rp) / (Rs + Rp)."""
    t = np.asarray(theta_rad, dtype=np.float64)
    cos_i = np.cos(t)
    sin_t = np.sin(t) / ior
    cos_t = np.sqrt(np.clip(1.0 - sin_t**2, 0.0, 1.0))
    rs = ((cos_i - ior * cos_t) / (cos_i + ior * cos_t)) ** 2
    rp = ((ior * cos_i - cos_t) / (ior * cos_i + cos_t)) ** 2
    return (rs - rp) / np.maximum(rs + rp, 1e-12)
