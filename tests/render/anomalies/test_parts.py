"""Logical anomalies (polar_render.anomalies.parts): missing parts are hidden, spare copies are
hidden unless an extra anomaly shows them, swapped parts exchange their materials, and each
needs its parts seen before it is placed."""
from __future__ import annotations

import numpy as np
import pytest

from polar_render.anomalies.context import MAX_TRIES, Dropped, SampleContext
from polar_render.anomalies.parts import EXTRA, MISSING, SWAPPED, extra_offset_mm, extra_parts, swap_materials
from polar_render.anomalies.registry import Anomaly
from polar_render.anomalies.visibility import SlotView, VisibleSurface

from tests.render.anomalies.conftest import Slot


def test_extra_spec_defaults():
    assert extra_parts({}) == [] and extra_parts({"classes": {"extra": {"parts": ["plug"]}}}) == ["plug"]
    assert extra_offset_mm({}).tolist() == [0.0, 0.0, 0.0]
    assert extra_offset_mm({"classes": {"extra": {"offset_mm": [1, 2, 3]}}}).tolist() == [1.0, 2.0, 3.0]


def test_swap_materials_exchanges_only_the_pair_of_that_instance():
    parts = [{"instance": i, "obj_id": 1, "part": p, "type": t, "alpha": a}
             for i in (1, 2) for p, t, a in (("body", "pplastic", 0.1), ("pins", "roughconductor", 0.3))]
    app = {"parts": parts, "lights": {"x": 1}}
    out = swap_materials(app, [Anomaly("swapped", 2, {"parts": ["body", "pins"]})])
    assert out["parts"][:2] == parts[:2]                                   # instance 1 untouched
    assert out["parts"][2] == {"instance": 2, "obj_id": 1, "part": "body", "type": "roughconductor", "alpha": 0.3}
    assert out["parts"][3] == {"instance": 2, "obj_id": 1, "part": "pins", "type": "pplastic", "alpha": 0.1}
    assert app["parts"][2]["type"] == "pplastic" and out["lights"] == {"x": 1}   # the input is not changed
    assert swap_materials(app, [Anomaly("dent", 1, {})]) is app


def test_missing_hides_and_extra_shows_their_slot():
    a = Anomaly("missing", 1, {"part": "pins"})
    assert MISSING.hides(a, Slot("i1_pins", 1, "pins")) and not MISSING.hides(a, Slot("i2_pins", 2, "pins"))
    e = Anomaly("extra", 1, {"part": "pins"})
    assert EXTRA.shows_extra(e, Slot("x1_pins", 1, "pins")) and not EXTRA.shows_extra(e, Slot("x1_body", 1, "body"))


def _ctx(pixels: dict, min_px=5, seed=0):
    slots = [Slot("i1_body", 1, "body"), Slot("i1_pins", 1, "pins"), Slot("i2_body", 2, "body"), Slot("i2_pins", 2, "pins")]
    vis = VisibleSurface({k: SlotView(np.zeros((n, 2), int), np.zeros((n, 3)), np.zeros((n, 3)), np.ones(n), np.ones(n))
                          for k, n in pixels.items()}, (10, 10))
    return SampleContext(np.random.default_rng(seed), slots, {}, vis, min_px, MAX_TRIES)


def test_missing_and_swapped_need_their_parts_seen():
    ctx = _ctx({"i1_pins": 3, "i2_pins": 9, "i1_body": 9, "i2_body": 9})
    picks = {MISSING.sample(ctx, {"parts": ["pins"]}, "c").instance for _ in range(10)}
    assert picks == {2}                                                    # instance 1 shows 3 px < 5
    assert {SWAPPED.sample(ctx, {"pairs": [["body", "pins"]]}, "c").instance for _ in range(10)} == {2}
    hidden = _ctx({"i1_pins": 3, "i2_pins": 0, "i1_body": 9, "i2_body": 9})
    with pytest.raises(Dropped, match=r"none of \['pins'\] shows >= 5 px"):
        MISSING.sample(hidden, {"parts": ["pins"]}, "c")
    with pytest.raises(Dropped, match=r"parts \['body', 'pins'\] are not both seen with >= 5 px"):
        SWAPPED.sample(hidden, {"pairs": [["body", "pins"]]}, "c")
    assert MISSING.sample(hidden, {"parts": ["lid"]}, "c") is None        # no such part: nothing to draw
