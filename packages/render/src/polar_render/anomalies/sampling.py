"""The anomalies of one sample: the per-sample loop over the registered classes.

Sampling draws from stream ``anomaly`` of ``(seed, i)`` (``polar_render.rng``), so a
sample's anomalies are a pure function of (scene file, seed, i): a sample is anomalous with
``probability``; it then gets ``count`` distinct classes of ``anomalies.classes`` drawn by
``weight``, and each chosen class (in name order) samples one anomaly
(``AnomalyClass.sample``). A regional class without its own ``faces`` takes
``anomalies.faces``. An anomaly that cannot be placed visibly is dropped and recorded with
its reason; one that leaves no pixel in the mask after rendering is recorded as dropped too
(:func:`unlabelled_events`), never labelled.
"""
from __future__ import annotations

import numpy as np

from polar_render.anomalies import builtin  # noqa: F401  (registers the shipped classes)
from polar_render.anomalies.context import Dropped, SampleContext, limits
from polar_render.anomalies.registry import Anomaly, get
from polar_render.config.scenes import check_range
from polar_render.rng import stream


def _chosen_classes(spec: dict, rng: np.random.Generator) -> list[str] | None:
    """Names of the classes sample draws (None: the sample stays normal)."""
    if rng.uniform() >= float(spec.get("probability", 0.5)):
        return None
    lo, hi = check_range(spec.get("count", 1), "anomalies.count")
    names = sorted(spec["classes"])
    weights = np.array([float(spec["classes"][n].get("weight", 1.0)) for n in names])
    n = min(int(rng.integers(int(lo), int(hi) + 1)), len(names))
    chosen = rng.choice(len(names), size=n, replace=False, p=weights / weights.sum())
    return [names[k] for k in sorted(chosen)]


def sample_anomalies(spec: dict, seed: int, index: int, slots, models_mm: dict, visible=None,
                     dropped: list | None = None) -> list[Anomaly]:
    """Anomalies of sample ``index``. ``slots``: scene.PartSlot list (extra slots included);
    ``models_mm``: slot key -> (vertices mm, faces) in the model frame (clean).

    ``visible`` (:class:`polar_render.anomalies.visibility.VisibleSurface` of the clean
    sample, or a callable building it: only anomalous samples pay for the AOV pass): centres
    are drawn on surface points the camera sees, and an anomaly whose estimated projected
    size stays below ``min_visible_px`` after ``context.MAX_TRIES`` draws is dropped; each
    drop is appended to ``dropped`` as ``{"class", "reason"}``. Without ``visible``
    (geometry-only callers) centres are drawn area-uniformly over the part, hidden faces
    included."""
    if not spec or not spec.get("classes"):
        return []
    rng = stream("anomaly", seed, index)
    chosen = _chosen_classes(spec, rng)
    if chosen is None:
        return []
    if callable(visible):
        visible = visible()
    base = [s for s in slots if not s.key.startswith("x")]   # spare (extra) slots excluded
    ctx = SampleContext(rng, base, models_mm, visible, *limits(spec))
    out = []
    for name in chosen:
        c = spec["classes"][name]
        cls = get(name)
        if cls.regional and c.get("faces") is None and spec.get("faces") is not None:
            c = {**c, "faces": spec["faces"]}   # anomalies.faces: the default region of regional classes
        try:
            a = cls.sample(ctx, c, f"anomalies.classes.{name}")
        except Dropped as why:
            if dropped is not None:
                dropped.append({"class": name, "reason": str(why)})
            continue
        if a is not None:
            out.append(a)
    return out


def unlabelled_events(events: list[Anomaly], table: list[dict] | None) -> list[dict]:
    """Sampled anomalies that left no pixel in the mask (hidden after all, or not applicable):
    recorded as dropped, never labelled."""
    seen = {(t["class"], t["instance"]) for t in table or []}
    return [{"class": a.cls, "instance": a.instance, "reason": "no visible pixel after rendering"}
            for a in events if (a.cls, a.instance) not in seen]
