"""Exact per-pixel geometry and the views masks are computed from (polar_render.anomalies.aov):
a pixel differs from the clean twin when its slot, its depth (> 1 um) or its normal (> 0.1 deg)
changes, and never by less."""
from __future__ import annotations

import numpy as np

from polar_render.anomalies.aov import DEPTH_EPS_M, AovView, MaskViews

from tests.render.anomalies.conftest import Slot


def _view(slot, depth=None, nrm=None):
    slot = np.asarray(slot)
    depth = np.ones(slot.shape) if depth is None else np.asarray(depth, float)
    nrm = np.tile([0.0, 0.0, -1.0], (*slot.shape, 1)) if nrm is None else nrm
    pos = np.zeros((*slot.shape, 3))
    pos[..., 2] = depth
    return AovView(slot, pos, nrm, depth)


def test_differs_marks_slot_depth_and_normal_changes_only():
    clean = _view([[0, 0, 0, 0, 0, -1]])
    depth = np.ones((1, 6))
    depth[0, 1] += 2 * DEPTH_EPS_M          # changed
    depth[0, 2] += 0.5 * DEPTH_EPS_M        # below the tolerance
    nrm = np.tile([0.0, 0.0, -1.0], (1, 6, 1))
    for k, deg in ((3, 0.2), (4, 0.05)):    # above / below 0.1 deg
        a = np.radians(deg)
        nrm[0, k] = [np.sin(a), 0.0, -np.cos(a)]
    anom = _view([[1, 0, 0, 0, 0, -1]], depth, nrm)
    views = MaskViews([Slot("i1_a", 1, "a"), Slot("i1_b", 1, "b")], anom, clean, {1: np.eye(4)})
    assert views.differs.tolist() == [[True, True, False, True, False, False]]
    assert MaskViews([], anom, None, {}).differs.tolist() == [[False] * 6]     # nothing geometric changed


def test_slot_ids_and_model_points():
    slots = [Slot("i1_a", 1, "a"), Slot("x1_a", 1, "a"), Slot("i2_a", 2, "a")]
    T = np.eye(4)
    T[:3, 3] = [0.01, -0.02, 0.5]                       # model -> world, metres
    view = _view([[0, 2]])
    view.pos[0, 1] = [0.011, -0.02, 0.503]
    views = MaskViews(slots, view, None, {2: T})
    assert views.slot_ids(lambda s: s.part == "a" and not s.is_extra) == [0, 2]
    p = views.model_points(view, view.slot == 2, 2)
    assert np.allclose(p, [[1.0, 0.0, 3.0]])            # millimetres in the model frame
