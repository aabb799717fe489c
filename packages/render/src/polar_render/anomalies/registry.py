"""The registry of anomaly classes: the protocol every class follows, and the name -> class table.

An anomaly class (one instance of a subclass of :class:`AnomalyClass`) says

* ``name``: its key under ``anomalies.classes`` of a scene file;
* ``family``: ``structural`` (the shape of a part changes), ``impurity`` (something lies on
  the surface) or ``logical`` (parts are missing, extra or swapped). ``kind``, written with
  every instance in ``meta.json``, is ``impurity`` for impurities and ``defect`` otherwise;
* ``mask_rank``: pixels claimed by several instances keep the one of lower rank;
* ``geometric`` (the geometry changes: masks compare with an exact AOV pass of the clean
  twin), ``surface`` (it displaces the vertices of a part's surface, after refining the
  mesh: ``edits.py``) and ``regional`` (it may be restricted to a region of faces, ``faces``);
* how to sample its parameters (:meth:`AnomalyClass.sample`), how it edits the geometry
  (:meth:`hides`, :meth:`shows_extra`, and for surface classes :meth:`displacement` and
  :meth:`refinement_zone`) and its mask (:meth:`AnomalyClass.mask`, :meth:`contrast`).

The shipped classes are registered by ``builtin.py``; :func:`register` adds another. This
module imports nothing from polar_render, so any module may read the table.
Units: millimetres in the part's model frame (BOP), as everywhere in ``anomalies``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FAMILIES = ("structural", "impurity", "logical")


@dataclass
class Anomaly:
    """One sampled anomaly: its class name, the object instance (1-based) it applies to and
    its parameters (plain JSON values, written to ``meta.json``)."""
    cls: str
    instance: int
    params: dict = field(default_factory=dict)
    stain: object | None = None      # stain.StainParams of a water stain

    @property
    def kind(self) -> str:
        return get(self.cls).kind

    def to_meta(self) -> dict:
        d = {"class": self.cls, "kind": self.kind, "instance": self.instance, **self.params}
        if self.stain is not None:
            d.update(self.stain.to_meta())
        return d


class AnomalyClass:
    """Base of every anomaly class; subclasses set the attributes and override the hooks
    they need (the defaults: nothing changes, no mask)."""
    name: str = ""
    family: str = "structural"
    mask_rank: int = 100
    geometric: bool = False
    surface: bool = False
    regional: bool = False

    @property
    def kind(self) -> str:
        return "impurity" if self.family == "impurity" else "defect"

    def sample(self, ctx, spec: dict, where: str) -> Anomaly | None:
        """One anomaly drawn from ``ctx.rng`` (``context.SampleContext``) with the class's
        scene-file mapping ``spec``; None when no part qualifies; raises ``context.Dropped``
        when it cannot be placed visibly."""
        raise NotImplementedError

    def hides(self, a: Anomaly, slot) -> bool:
        """Whether ``a`` removes the (base) part slot ``slot`` from the geometry."""
        return False

    def shows_extra(self, a: Anomaly, slot) -> bool:
        """Whether ``a`` uses the spare (extra) slot ``slot``; unused spares stay hidden."""
        return False

    def applies_to(self, a: Anomaly, slot) -> bool:
        """Surface classes: whether ``a`` displaces the vertices of base slot ``slot``."""
        return False

    def displacement(self, v_mm: np.ndarray, a: Anomaly) -> np.ndarray:
        """Surface classes: displacement (mm) of model-frame vertices, a function of position."""
        raise NotImplementedError

    def refinement_zone(self, a: Anomaly):
        """Surface classes: ``zone(v, f) -> bool (F,)`` of the triangles to refine."""
        raise NotImplementedError

    def mask(self, a: Anomaly, views) -> list[tuple[np.ndarray, dict]]:
        """Pixel sets (bool, views' resolution) of the instances of ``a`` with the extra
        table entries of each (``aov.MaskViews``), in mask order."""
        return []

    def contrast(self, a: Anomaly, pix: np.ndarray, views) -> dict:
        """A noise-free contrast of one instance from the exact AOV passes, or {}."""
        return {}


_CLASSES: dict[str, AnomalyClass] = {}


def register(anomaly_class: AnomalyClass) -> AnomalyClass:
    """Add a class to the table (a scene file may then name it); returns it. A name is
    registered once."""
    name = anomaly_class.name
    if not name or name in _CLASSES:
        raise ValueError(f"anomaly class {name!r}: no name or already registered")
    if anomaly_class.family not in FAMILIES:
        raise ValueError(f"anomaly class {name!r}: family {anomaly_class.family!r} not in {FAMILIES}")
    _CLASSES[name] = anomaly_class
    return anomaly_class


def get(name: str) -> AnomalyClass:
    """The registered class called ``name`` (KeyError naming the known ones otherwise)."""
    try:
        return _CLASSES[name]
    except KeyError:
        raise KeyError(f"unknown anomaly class {name!r}; registered: {sorted(_CLASSES)}") from None


def names() -> list[str]:
    """Names of the registered classes, in registration order."""
    return list(_CLASSES)


def changes_geometry(anomalies: list[Anomaly]) -> bool:
    """Whether any of ``anomalies`` changes the geometry (so masks need the clean twin)."""
    return any(get(a.cls).geometric for a in anomalies)
