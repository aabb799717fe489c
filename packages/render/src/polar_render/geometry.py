"""Small rigid-geometry helpers (pure numpy, float64).

Conventions used throughout polar_render:

* Camera frame is OpenCV: x right, y down, z forward (optical axis).
* ``K`` is a 3x3 pinhole matrix whose pixel coordinates put pixel *centres*
  at integer coordinates (OpenCV): pixel ``(row i, col j)`` is centred on
  ``u = j, v = i``; the image spans ``u in [-0.5, W - 0.5]``.
* ``R_a2b`` / ``t_a2b`` map points from frame *a* to frame *b*:
  ``p_b = R_a2b @ p_a + t_a2b``.  Translations are in millimetres (BOP)
  unless the argument name ends in ``_m`` (metres).
* A 4x4 pose is ``[[R, t], [0, 0, 0, 1]]`` in the same units as ``t``.
"""
from __future__ import annotations

import numpy as np

SQUARE_PIXEL_RTOL = 1e-4   # fx and fy may differ by this share: the renderer needs square pixels

__all__ = ["pose_matrix", "invert_pose", "project_points", "look_at_w2c", "is_rotation"]


def pose_matrix(R, t) -> np.ndarray:
    """4x4 homogeneous matrix ``[[R, t], [0, 1]]`` (t keeps its unit)."""
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def invert_pose(T) -> np.ndarray:
    """Rigid inverse of a 4x4 pose: ``[[R^T, -R^T t], [0, 1]]``."""
    T = np.asarray(T, dtype=np.float64).reshape(4, 4)
    R, t = T[:3, :3], T[:3, 3]
    return pose_matrix(R.T, -R.T @ t)


def project_points(K, R_m2c, t_m2c_mm, pts_mm) -> np.ndarray:
    """Project model points (N,3, mm) to OpenCV pixel coordinates (N,2).

    ``p_c = R_m2c @ p + t_m2c_mm``; ``(u, v) = (K @ p_c)[:2] / z``.  Pixel
    centres are at integer coordinates, so ``np.rint`` gives the pixel index
    ``(col, row)``.  Points at or behind the camera (z <= 0) yield NaN.
    """
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    pts = np.asarray(pts_mm, dtype=np.float64).reshape(-1, 3)
    pc = pts @ np.asarray(R_m2c, dtype=np.float64).reshape(3, 3).T
    pc = pc + np.asarray(t_m2c_mm, dtype=np.float64).reshape(1, 3)
    uvw = pc @ K.T
    z = uvw[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.where(pc[:, 2:3] > 0, uvw[:, :2] / z, np.nan)
    return uv


def look_at_w2c(eye_m, target_m, up=(0.0, 0.0, 1.0), roll_rad: float = 0.0):
    """OpenCV world-to-camera pose of a camera at ``eye_m`` looking at ``target_m``.

    Inputs are world points in metres; ``up`` is a world direction.  The
    camera +z points from eye to target; before the roll, the image "up"
    direction (camera -y) is the projection of ``up`` onto the image plane.
    ``roll_rad`` then rotates the camera about its optical axis (+z), i.e.
    the camera x axis turns towards its y axis by ``roll_rad`` (the scene
    appears rotated by ``-roll_rad`` in the image, clockwise-positive).

    Returns ``(R_w2c (3,3), t_w2c_mm (3,))`` with ``p_c = R_w2c @ p_w + t``
    and the translation in millimetres.  Raises ValueError when eye ==
    target or ``up`` is parallel to the viewing direction.
    """
    eye = np.asarray(eye_m, dtype=np.float64).reshape(3)
    target = np.asarray(target_m, dtype=np.float64).reshape(3)
    up = np.asarray(up, dtype=np.float64).reshape(3)
    z = target - eye
    nz = np.linalg.norm(z)
    if not np.isfinite(nz) or nz < 1e-12:
        raise ValueError("look_at_w2c: eye and target coincide")
    z = z / nz
    up_img = up - (up @ z) * z  # component of `up` in the image plane
    nu = np.linalg.norm(up_img)
    if nu < 1e-9 * max(np.linalg.norm(up), 1e-300):
        raise ValueError("look_at_w2c: `up` is parallel to the viewing direction")
    y = -up_img / nu  # image up is -y
    x = np.cross(y, z)  # right-handed: x = y x z
    c, s = np.cos(roll_rad), np.sin(roll_rad)
    x, y = c * x + s * y, -s * x + c * y
    R_w2c = np.stack([x, y, z])  # rows are the camera axes in world coords
    t_w2c_mm = -R_w2c @ (eye * 1000.0)
    return R_w2c, t_w2c_mm


def is_rotation(R, tol: float = 1e-4) -> bool:
    """True iff R is a finite 3x3 matrix with ``R^T R ~ I`` and ``det R ~ +1``
    (max absolute deviation <= tol)."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        return False
    if np.max(np.abs(R.T @ R - np.eye(3))) > tol:
        return False
    return abs(np.linalg.det(R) - 1.0) <= tol
