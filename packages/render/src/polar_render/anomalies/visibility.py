"""What the sample's camera sees of each part, for placing anomalies where they are visible.

Built from the exact AOV pass of the *clean* sample (one ray through each pixel centre, the
same pass that gives ``normals.tiff`` and the masks), before anomalies are sampled, so the
draws stay a pure function of (scene file, seed, i).

Per part slot: the model-frame points (mm), unit shading normals and triangle indices seen
through pixel centres (the triangle restricts anomalies to a region of faces:
``anomalies.classes.<c>.faces``), the cosine between normal and the direction back to the camera, and the scale
``px_per_mm`` (pixels per millimetre of surface facing the camera at that depth:
``f / (1000 z)`` with ``f`` in pixels and ``z`` in metres). A pixel is a *candidate* for an
anomaly centre when its surface faces the camera at no more than ``max_view_angle_deg``
(scene key ``anomalies.max_view_angle_deg``, default 75 deg): grazing faces would squeeze
the anomaly into a sliver.

Projected size estimate (pixels) of a surface patch of area ``A`` (mm^2) at a candidate
pixel: ``A * px_per_mm^2 * cos``; the sampler redraws anomalies whose estimate is below
``anomalies.min_visible_px`` (the exact size comes later from the mask).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_MIN_VISIBLE_PX = 40
DEFAULT_MAX_VIEW_ANGLE_DEG = 75.0


@dataclass
class SlotView:
    """Pixels of one part slot that the camera sees (arrays of equal length N)."""
    pixels: np.ndarray        # (N, 2) row, col
    points_mm: np.ndarray     # (N, 3) model frame
    normals: np.ndarray       # (N, 3) unit, model frame
    cos_view: np.ndarray      # (N,) normal . direction to the camera
    px_per_mm: np.ndarray     # (N,)
    faces: np.ndarray | None = None   # (N,) triangle index within the slot's mesh (anomaly regions)

    def candidates(self, min_cos: float) -> np.ndarray:
        return np.flatnonzero(self.cos_view >= min_cos)


@dataclass
class VisibleSurface:
    """Per slot key: the :class:`SlotView`; plus the camera (for corner tests)."""
    slots: dict[str, SlotView] = field(default_factory=dict)
    shape: tuple[int, int] = (0, 0)
    K: np.ndarray | None = None
    m2c: dict[int, np.ndarray] = field(default_factory=dict)     # instance -> 4x4 model(mm) -> camera(mm)
    min_cos: float = float(np.cos(np.radians(DEFAULT_MAX_VIEW_ANGLE_DEG)))

    def count(self, key: str) -> int:
        sv = self.slots.get(key)
        return 0 if sv is None else int(len(sv.candidates(self.min_cos)))

    def pixels_of(self, key: str) -> int:
        sv = self.slots.get(key)
        return 0 if sv is None else int(len(sv.pixels))

    def sees_point(self, instance: int, p_mm: np.ndarray, tol_mm: float, keys: list[str]) -> tuple[bool, float]:
        """Whether the model point ``p_mm`` of ``instance`` is seen (the surface point seen
        through its pixel lies within ``tol_mm`` of it, on one of ``keys``); and its px/mm."""
        T = self.m2c.get(instance)
        if T is None or self.K is None:
            return False, 0.0
        pc = T[:3, :3] @ p_mm + T[:3, 3]
        if pc[2] <= 0:
            return False, 0.0
        u, v = (self.K @ (pc / pc[2]))[:2]
        col, row = int(np.rint(u)), int(np.rint(v))
        h, w = self.shape
        if not (0 <= row < h and 0 <= col < w):
            return False, 0.0
        for key in keys:
            sv = self.slots.get(key)
            if sv is None or not len(sv.pixels):
                continue
            hit = np.flatnonzero((sv.pixels[:, 0] == row) & (sv.pixels[:, 1] == col))
            if hit.size and np.linalg.norm(sv.points_mm[hit[0]] - p_mm) <= tol_mm:
                return True, float(sv.px_per_mm[hit[0]])
        return False, 0.0


def visible_surface(view, slots, poses_m: dict, w2c_m: np.ndarray, K: np.ndarray,
                    max_view_angle_deg: float = DEFAULT_MAX_VIEW_ANGLE_DEG) -> VisibleSurface:
    """Build a :class:`VisibleSurface` from an ``anomalies.AovView`` at pixel resolution.

    ``poses_m``: instance -> model-to-world 4x4 (metres); ``w2c_m``: world-to-camera (metres,
    OpenCV); ``K``: intrinsics (pixels)."""
    f_px = float(K[0, 0])
    out = VisibleSurface(shape=tuple(view.slot.shape), K=np.asarray(K, np.float64),
                         min_cos=float(np.cos(np.radians(max_view_angle_deg))))
    for inst, T in poses_m.items():
        m2c = w2c_m @ T
        out.m2c[inst] = np.block([[m2c[:3, :3], 1000.0 * m2c[:3, 3:4]], [np.zeros((1, 3)), np.ones((1, 1))]])
    for k, s in enumerate(slots):
        sel = view.slot == k
        if not sel.any() or s.instance not in poses_m:
            continue
        rows, cols = np.nonzero(sel)
        T = poses_m[s.instance]
        w2m = np.linalg.inv(T)
        pw = view.pos[sel].astype(np.float64)
        pts = (pw @ w2m[:3, :3].T + w2m[:3, 3]) * 1000.0
        n_cam = view.nrm[sel].astype(np.float64)                       # OpenCV camera frame
        p_cam = pw @ w2c_m[:3, :3].T + w2c_m[:3, 3]
        to_cam = -p_cam / np.maximum(np.linalg.norm(p_cam, axis=1, keepdims=True), 1e-12)
        cos = np.einsum("ij,ij->i", n_cam, to_cam)
        R_c2m = w2m[:3, :3] @ w2c_m[:3, :3].T
        n_model = n_cam @ R_c2m.T
        z = np.maximum(p_cam[:, 2], 1e-9)
        faces = view.face[sel] if getattr(view, "face", None) is not None else None
        out.slots[s.key] = SlotView(np.stack([rows, cols], 1), pts, n_model, cos, f_px / (1000.0 * z), faces)
    return out
