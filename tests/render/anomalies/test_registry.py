"""The registry of anomaly classes (the shipped ones: test_builtin.py): duplicates and unknown
families are refused, and a class registered from outside is sampled, masked and applied
without touching other modules."""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.anomalies import builtin  # noqa: F401
from polar_render.anomalies import registry
from polar_render.anomalies.aov import AovView
from polar_render.anomalies.context import Dropped
from polar_render.anomalies.edits import geometry_edits
from polar_render.anomalies.masks import instance_masks
from polar_render.anomalies.sampling import sample_anomalies

from tests.render.anomalies.conftest import Slot


def test_register_refuses_duplicates_and_unknown_families(monkeypatch):
    monkeypatch.setattr(registry, "_CLASSES", dict(registry._CLASSES))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("dent"))
    bad = type("Bad", (registry.AnomalyClass,), {"name": "bad", "family": "cosmetic"})()
    with pytest.raises(ValueError, match="family"):
        registry.register(bad)
    with pytest.raises(KeyError, match="unknown anomaly class 'nope'"):
        registry.get("nope")


class Vanished(registry.AnomalyClass):
    """Toy logical class: one listed part of an instance disappears (needs >= min_px seen)."""
    name, family, mask_rank, geometric = "vanished", "logical", 50, True

    def sample(self, ctx, spec, where):
        cands = ctx.targets(spec["parts"])
        if not cands:
            return None
        if len(cands) > 1 and spec.get("refuse"):
            raise Dropped("refused")
        s = cands[int(ctx.rng.integers(len(cands)))]
        return registry.Anomaly(self.name, s.instance, {"part": s.part, "draw": float(ctx.rng.uniform())})

    def hides(self, a, slot):
        return slot.instance == a.instance and slot.part == a.params["part"]

    def mask(self, a, views):
        ids = views.slot_ids(lambda s: s.instance == a.instance and s.part == a.params["part"])
        return [(views.differs & np.isin(views.clean.slot, ids), {"part": a.params["part"]})]


def test_a_registered_toy_class_is_sampled_applied_and_masked(monkeypatch):
    monkeypatch.setattr(registry, "_CLASSES", dict(registry._CLASSES))
    registry.register(Vanished())
    slots = [Slot("i1_a", 1, "a"), Slot("i1_b", 1, "b")]
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    models = {s.key: (v, np.array([[0, 1, 2]])) for s in slots}
    spec = {"probability": 1.0, "classes": {"vanished": {"parts": ["b"]}}}
    events = [sample_anomalies(spec, 3, i, slots, models) for i in range(5)]
    assert all(len(e) == 1 and e[0].cls == "vanished" and e[0].params["part"] == "b" for e in events)
    assert events[0][0].to_meta()["kind"] == "defect"
    assert events[0][0].params == sample_anomalies(spec, 3, 0, slots, models)[0].params   # (seed, i) -> same draw
    assert len({e[0].params["draw"] for e in events}) == 5
    # geometry: the part's slot is hidden, the other untouched
    assert geometry_edits(events[0], slots, models, {s.key: None for s in slots}) == {"i1_b": None}
    # mask: where the clean twin saw part b and the anomalous image differs
    clean = AovView(np.array([[0, 1], [1, -1]]), np.zeros((2, 2, 3)), np.tile([0, 0, 1.0], (2, 2, 1)), np.ones((2, 2)))
    anom = AovView(np.array([[0, -1], [-1, -1]]), np.zeros((2, 2, 3)), np.tile([0, 0, 1.0], (2, 2, 1)), np.ones((2, 2)))
    mask, table = instance_masks(events[0], slots, anom, clean, {1: np.eye(4)})
    assert mask.tolist() == [[0, 1], [1, 0]]
    assert table == [{"id": 1, "class": "vanished", "kind": "defect", "instance": 1, "part": "b",
                      "area_px": 2, "coverage_px": 2.0, "bbox": [0, 0, 2, 2]}]
    # a drop is recorded with its reason, nothing is returned
    dropped = []
    spec2 = {"probability": 1.0, "classes": {"vanished": {"parts": ["a", "b"], "refuse": True}}}
    assert sample_anomalies(spec2, 3, 0, slots, models, dropped=dropped) == []
    assert dropped == [{"class": "vanished", "reason": "refused"}]
