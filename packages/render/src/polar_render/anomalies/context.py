"""What an anomaly class samples with: the sample's random stream, its part slots and meshes,
what the camera sees, and the draws every class shares.

Units: millimetres in the part's model frame. Ranges of the scene file are ``[lo, hi]``
(uniform) or one number (fixed), drawn with :func:`uniform`; a size ``<name>_rel`` is a share
of the part's largest extent instead of ``<name>_mm`` (:func:`size`).

Regions (``faces`` of a regional class, or ``anomalies.faces`` for all of them):
:func:`region_faces` selects the faces of a part's clean mesh whose normal lies within
``within_deg`` of ``normal`` (model frame) and/or that belong to the face group ``group``
stored with the mesh; the pixel of a candidate centre knows its triangle from the AOV pass.

With ``visible`` (``visibility.VisibleSurface`` of the clean sample), centres lie on pixels
the camera sees facing it within ``max_view_angle_deg``; without it (geometry-only callers)
they are drawn area-uniformly over the part, hidden faces included.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polar_render.anomalies.refine import max_edge
from polar_render.anomalies.visibility import DEFAULT_MIN_VISIBLE_PX
from polar_render.config.scenes import check_range
from polar_render.parts.meshes import face_groups

MAX_TRIES = 8   # redraws of an anomaly whose projected size is below min_visible_px


class Dropped(Exception):
    """An anomaly that cannot be placed visibly (the message says why)."""


def uniform(rng: np.random.Generator, v, where: str) -> float:
    """One uniform draw from a range value (``[lo, hi]`` or a number) of the scene file."""
    a, b = check_range(v, where)
    return float(rng.uniform(a, b))


def size(rng: np.random.Generator, c: dict, name: str, where: str, part_mm: float) -> float:
    """A size in mm: ``<name>_mm`` as given, or ``<name>_rel`` x the part's largest extent."""
    if f"{name}_rel" in c:
        return uniform(rng, c[f"{name}_rel"], f"{where}.{name}_rel") * part_mm
    return uniform(rng, c[f"{name}_mm"], f"{where}.{name}_mm")


def part_extent(v: np.ndarray) -> float:
    """Largest side (mm) of the bounding box of a part's vertices."""
    return float((v.max(0) - v.min(0)).max())


def limits(spec: dict) -> tuple[int, int]:
    """(min_visible_px, tries) of the ``anomalies`` mapping."""
    return int(spec.get("min_visible_px", DEFAULT_MIN_VISIBLE_PX)), MAX_TRIES


def region_faces(region: dict, mesh_path, v_mm: np.ndarray, f: np.ndarray) -> np.ndarray:
    """bool (F,) faces of a part's clean mesh (model frame, mm) inside an anomaly region
    (``faces`` of the scene file): face normal within ``within_deg`` of ``normal`` and/or in
    the face group ``group`` stored with the mesh (``polar_render.parts.meshes.face_groups``)."""
    mask = np.ones(len(f), bool)
    if region.get("normal") is not None:
        fn = np.cross(v_mm[f[:, 1]] - v_mm[f[:, 0]], v_mm[f[:, 2]] - v_mm[f[:, 0]])
        fn = fn / np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-300)
        mask &= fn @ np.asarray(region["normal"], np.float64) >= np.cos(np.radians(float(region.get("within_deg", 15.0)))) - 1e-9
    if region.get("group") is not None:
        g = face_groups(mesh_path).get(region["group"])
        mask &= g if g is not None and len(g) == len(f) else False
    return mask


@dataclass
class SampleContext:
    """The state one sample's anomaly classes draw from (``rng``: stream ``anomaly``)."""
    rng: np.random.Generator
    base_slots: list                 # scene.PartSlot of the frame, spare (extra) slots excluded
    models_mm: dict                  # slot key -> (vertices mm, faces), clean, model frame
    visible: object                  # visibility.VisibleSurface or None
    min_px: int
    tries: int
    _edges: dict = field(default_factory=dict)
    _regions: dict = field(default_factory=dict)

    def longest_edge(self, key: str) -> float:
        """Longest edge (mm) of a slot's clean mesh, computed once per slot and sample."""
        if key not in self._edges:
            self._edges[key] = float(max_edge(*self.models_mm[key]).max())
        return self._edges[key]

    def targets(self, parts) -> list:
        return [s for s in self.base_slots if s.part in parts]

    def allowed(self, slot, region: dict | None) -> np.ndarray | None:
        """bool (F,) faces of a slot's clean mesh inside ``region`` (None: no region)."""
        if region is None:
            return None
        key = (slot.key, repr(sorted(region.items())))
        if key not in self._regions:
            self._regions[key] = region_faces(region, slot.mesh, *self.models_mm[slot.key])
        return self._regions[key]

    def candidates(self, slot, region: dict | None = None) -> np.ndarray:
        """Indices into the slot's SlotView of the pixels an anomaly may be centred on: facing
        the camera within max_view_angle_deg, and on a face of ``region``."""
        sv = self.visible.slots.get(slot.key)
        if sv is None:
            return np.zeros(0, np.int64)
        idx = sv.candidates(self.visible.min_cos)
        if region is None:
            return idx
        return idx[self.pixels_in_region(slot, sv, region)[idx]]

    def pixels_in_region(self, slot, sv, region: dict) -> np.ndarray | None:
        """bool per seen pixel of a SlotView (None: unseen): on a face of ``region``."""
        if sv is None:
            return None
        allowed = self.allowed(slot, region)
        if sv.faces is None:
            raise RuntimeError("anomaly regions need the triangle index of each pixel (AOV prim_index)")
        return allowed[np.clip(sv.faces, 0, len(allowed) - 1)]

    def pick_visible(self, cands, region: dict | None = None) -> tuple:
        """(slot, index into its SlotView) of a uniformly drawn candidate pixel over ``cands``."""
        per = [self.candidates(s, region) for s in cands]
        counts = np.array([len(c) for c in per], np.float64)
        if counts.sum() == 0:
            raise Dropped("no visible surface of its parts" + (" in its region of faces" if region else ""))
        k = int(self.rng.choice(len(cands), p=counts / counts.sum()))
        idx = per[k]
        return cands[k], int(idx[int(self.rng.integers(len(idx)))])

    def in_region(self, cands, region: dict | None) -> list:
        """The slots of ``cands`` with a face in ``region`` (all without one); Dropped if none."""
        if region is None:
            return cands
        cands = [s for s in cands if self.allowed(s, region).any()]
        if not cands:
            raise Dropped("no face of its parts lies in its region")
        return cands

    def surface_point(self, cands, region: dict | None = None):
        """(slot, centre mm, unit normal, projected px per mm^2) of a surface point (on a face
        of ``region`` when given)."""
        if self.visible is None:
            return self._any_surface_point(self.in_region(cands, region), region)
        s, j = self.pick_visible(cands, region)
        sv = self.visible.slots[s.key]
        nrm = sv.normals[j] / np.linalg.norm(sv.normals[j])
        return s, sv.points_mm[j].copy(), nrm, float(sv.px_per_mm[j] ** 2 * sv.cos_view[j])

    def _any_surface_point(self, cands, region: dict | None):
        """Without a camera: a slot, then a face by area (of the region), then a point on it."""
        target = cands[int(self.rng.integers(len(cands)))]
        v, f = self.models_mm[target.key]
        tri = v[f]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        if region is not None:
            area = area * self.allowed(target, region)
        fi = int(self.rng.choice(len(f), p=area / area.sum()))
        centre = self.rng.dirichlet([1.0, 1.0, 1.0]) @ tri[fi]
        nrm = np.cross(tri[fi, 1] - tri[fi, 0], tri[fi, 2] - tri[fi, 0])
        return target, centre, nrm / np.linalg.norm(nrm), np.inf
