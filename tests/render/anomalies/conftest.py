"""Helpers shared by the anomaly tests: a coarse 12-triangle box, a dent on its top face, and
a stand-in for a part slot (``mitsuba.scene.PartSlot``: key, instance, part)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from polar_render.anomalies.registry import Anomaly


@dataclass
class Slot:
    key: str = "i1_box"
    instance: int = 1
    part: str = "box"
    mesh: object = None     # the part's mesh file (face groups of anomaly regions)

    @property
    def is_extra(self):
        return self.key.startswith("x")


def box_mesh():
    """A 20 mm cube of 12 triangles, vertices shared (no normals)."""
    b = trimesh.creation.box(extents=(20.0, 20.0, 20.0))
    assert len(b.faces) == 12
    return np.asarray(b.vertices, float), np.asarray(b.faces, np.int64)


def box_dent(radius=3.0, depth=0.5):
    """A dent centred on the box's top face (z = 10 mm)."""
    return Anomaly("dent", 1, {"part": "box", "centre_mm": [2.0, -1.0, 10.0], "normal": [0.0, 0.0, 1.0],
                               "height_mm": -depth, "radius_mm": radius, "ring_mm": radius / 4})
