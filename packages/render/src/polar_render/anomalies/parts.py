"""Logical anomalies: parts are missing, extra or swapped.

===========  ==============================================================================
``missing``  a part is removed (its slot is hidden). It must show >= min_visible_px in the
             clean sample. Mask: the pixels that differ from the clean twin where the clean
             twin sees the removed part; contrast 1 (``presence``).
``extra``    a second copy of a part (a spare slot of every scene whose anomalies name the
             part), turned 180 degrees about the object's model z axis
             (``EXTRA_ROTATION``) and moved by ``offset_mm`` (model frame, mm), e.g. a
             second USB plug sticking out of the other end. Mask: the pixels that differ
             where the added part is seen; contrast 1 (``presence``).
``swapped``  two parts of one object exchange their sampled materials
             (:func:`swap_materials`); both must show >= min_visible_px. Mask: the visible
             pixels of both parts.
===========  ==============================================================================
"""
from __future__ import annotations

import numpy as np

from polar_render.anomalies.context import Dropped
from polar_render.anomalies.registry import Anomaly, AnomalyClass

EXTRA_ROTATION = np.diag([-1.0, -1.0, 1.0])  # 180 degrees about the model z axis


def extra_parts(spec: dict) -> list[str]:
    """Parts that get a spare slot for ``extra`` anomalies (``anomalies.classes.extra.parts``)."""
    return list(((spec or {}).get("classes") or {}).get("extra", {}).get("parts", []))


def extra_offset_mm(spec: dict) -> np.ndarray:
    """Translation (mm, model frame) of the spare copy after ``EXTRA_ROTATION``: scene key
    ``anomalies.classes.extra.offset_mm`` (default 0; e.g. to move a turned plug out of the
    body it would otherwise sit inside)."""
    extra = ((spec or {}).get("classes") or {}).get("extra") or {}
    return np.asarray(extra.get("offset_mm", [0.0, 0.0, 0.0]), np.float64)


def swap_materials(appearance: dict, anomalies: list[Anomaly]) -> dict:
    """Appearance with the materials of swapped part pairs exchanged (copy)."""
    swaps = [a for a in anomalies if a.cls == "swapped"]
    if not swaps:
        return appearance
    parts = [dict(p) for p in appearance["parts"]]
    for a in swaps:
        p0, p1 = a.params["parts"]
        i0 = next(k for k, p in enumerate(parts) if p["instance"] == a.instance and p["part"] == p0)
        i1 = next(k for k, p in enumerate(parts) if p["instance"] == a.instance and p["part"] == p1)
        keep = ("instance", "obj_id", "part")
        a0 = {k: v for k, v in parts[i0].items() if k not in keep}
        a1 = {k: v for k, v in parts[i1].items() if k not in keep}
        parts[i0] = {**{k: parts[i0][k] for k in keep}, **a1}
        parts[i1] = {**{k: parts[i1][k] for k in keep}, **a0}
    return {**appearance, "parts": parts}


class _Presence(AnomalyClass):
    """missing and extra: one part of one instance (seen as present or absent)."""
    family, geometric = "logical", True

    def _mine(self, a: Anomaly, slot, extra: bool) -> bool:
        return slot.instance == a.instance and slot.part == a.params["part"] and slot.is_extra == extra

    def sample(self, ctx, c: dict, where: str) -> Anomaly | None:
        cands = ctx.targets(c["parts"])
        if not cands:
            return None
        cands = self._seen(ctx, cands, c)
        target = cands[int(ctx.rng.integers(len(cands)))]
        return Anomaly(self.name, target.instance, {"part": target.part})

    def _seen(self, ctx, cands: list, c: dict) -> list:
        """The candidate slots the camera must see (all: an extra part is checked after rendering)."""
        return cands

    def contrast(self, a: Anomaly, pix: np.ndarray, views) -> dict:
        return {"contrast": 1.0, "contrast_measure": "presence"}


class Missing(_Presence):
    name, mask_rank = "missing", 0

    def hides(self, a: Anomaly, slot) -> bool:
        return slot.instance == a.instance and slot.part == a.params["part"]

    def _seen(self, ctx, cands: list, c: dict) -> list:
        if ctx.visible is None:
            return cands
        cands = [s for s in cands if ctx.visible.pixels_of(s.key) >= ctx.min_px]
        if not cands:
            raise Dropped(f"none of {sorted(set(c['parts']))} shows >= {ctx.min_px} px")
        return cands

    def mask(self, a: Anomaly, views) -> list[tuple[np.ndarray, dict]]:
        ids = views.slot_ids(lambda s: self._mine(a, s, extra=False))
        return [(views.differs & np.isin(views.clean.slot, ids), {})]


class Extra(_Presence):
    name, mask_rank = "extra", 1

    def shows_extra(self, a: Anomaly, slot) -> bool:
        return (slot.instance, slot.part) == (a.instance, a.params["part"])

    def mask(self, a: Anomaly, views) -> list[tuple[np.ndarray, dict]]:
        ids = views.slot_ids(lambda s: self._mine(a, s, extra=True))
        return [(views.differs & np.isin(views.anom.slot, ids), {})]


class Swapped(AnomalyClass):
    """Two parts of one object (a pair of ``pairs``) exchange their materials."""
    name, family, mask_rank = "swapped", "logical", 6

    def sample(self, ctx, c: dict, where: str) -> Anomaly | None:
        pair = c["pairs"][int(ctx.rng.integers(len(c["pairs"])))]
        insts = sorted({s.instance for s in ctx.base_slots if s.part in pair})
        if ctx.visible is not None:
            insts = [i for i in insts if all(ctx.visible.pixels_of(s.key) >= ctx.min_px
                                             for s in ctx.base_slots if s.instance == i and s.part in pair)]
            if not insts:
                raise Dropped(f"parts {list(pair)} are not both seen with >= {ctx.min_px} px")
        return Anomaly(self.name, int(ctx.rng.choice(insts)), {"parts": list(pair)})

    def mask(self, a: Anomaly, views) -> list[tuple[np.ndarray, dict]]:
        ids = views.slot_ids(lambda s: s.instance == a.instance and s.part in a.params["parts"] and not s.is_extra)
        return [(np.isin(views.anom.slot, ids), {"parts": a.params["parts"]})]


MISSING, EXTRA, SWAPPED = Missing(), Extra(), Swapped()
