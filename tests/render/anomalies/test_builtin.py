"""The anomaly classes shipped with polar_render (polar_render.anomalies.builtin): registered
once, in mask order, matching the scene schema."""
from __future__ import annotations

from polar_render.anomalies import builtin  # noqa: F401
from polar_render.anomalies import registry
from polar_render.config.schema import ANOMALY_CLASSES, Classes


def test_shipped_classes_match_the_schema_and_mask_order():
    assert set(registry.names()) == set(ANOMALY_CLASSES)
    for name in registry.names():
        cls = registry.get(name)
        assert cls.kind == Classes.model_fields[name].description   # "defect" / "impurity"
        assert cls.regional == ("faces" in ANOMALY_CLASSES[name].model_fields)
    order = sorted(registry.names(), key=lambda n: registry.get(n).mask_rank)
    assert order == ["missing", "extra", "chip", "dent", "bump", "scratch", "swapped", "water_stain"]
    assert {registry.get(n).family for n in registry.names()} == set(registry.FAMILIES)
