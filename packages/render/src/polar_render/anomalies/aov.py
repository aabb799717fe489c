"""Exact per-pixel geometry (AOV passes) and the views anomaly masks are computed from.

An :class:`AovView` holds one exact ray per (sub)pixel: the part slot hit (-1 = none), the
world position (metres), the unit shading normal (OpenCV camera frame) and the z-depth
(metres). :class:`MaskViews` pairs the anomalous pass with the clean twin's and marks the
pixels whose visible surface differs: another slot, depth by more than ``DEPTH_EPS_M``
(1 um) or normal by more than 0.1 deg (``NORMAL_EPS_COS``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEPTH_EPS_M = 1e-6                    # 1 um
NORMAL_EPS_COS = np.cos(np.radians(0.1))


@dataclass
class AovView:
    """Per-pixel exact geometry of one AOV pass: slot index (-1 = none), world position (m),
    unit normal, z-depth (m)."""
    slot: np.ndarray
    pos: np.ndarray
    nrm: np.ndarray
    depth: np.ndarray
    face: np.ndarray | None = None    # triangle index within the slot's mesh (-1 / any where slot is -1)


class MaskViews:
    """The anomalous pass ``anom``, the clean twin's ``clean`` (None when nothing geometric
    changed), the frame's part slots and the instances' model-to-world poses (metres)."""

    def __init__(self, slots, anom: AovView, clean: AovView | None, poses: dict):
        self.slots, self.anom, self.clean, self.poses = slots, anom, clean, poses
        self.shape = anom.slot.shape
        if clean is not None:
            self.differs = ((anom.slot != clean.slot) | (np.abs(anom.depth - clean.depth) > DEPTH_EPS_M)
                            | (np.sum(anom.nrm * clean.nrm, axis=-1) < NORMAL_EPS_COS))
        else:
            self.differs = np.zeros(self.shape, bool)

    def slot_ids(self, pred) -> list[int]:
        """Indices of the slots for which ``pred(slot)`` holds (the values of ``AovView.slot``)."""
        return [k for k, s in enumerate(self.slots) if pred(s)]

    def model_points(self, view: AovView, sel: np.ndarray, instance: int) -> np.ndarray:
        """Model-frame points (mm) of instance ``instance`` at the selected pixels of ``view``."""
        w2m = np.linalg.inv(self.poses[instance])
        p = view.pos[sel].astype(np.float64)
        return (p @ w2m[:3, :3].T + w2m[:3, 3]) * 1000.0
