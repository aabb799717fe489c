"""The pixel threshold of an evaluation and the sweep settings it is chosen with.

Order of precedence (:func:`choose_threshold`): ``--threshold`` > the F1-maximising threshold
on the validation entries (ignore pixels left out) > the ``threshold`` stored in
predictions.json > none (then ``pixels.PixelPass.threshold_on_test`` chooses it on the
evaluated split, flagged optimistic).  Convention: a pixel is positive iff score >= threshold.
A threshold that flags most normal pixels or images is marked degenerate
(:func:`flag_degenerate`).
"""
from __future__ import annotations

import numpy as np
from polar_render.progress import progress

from polar_detect.metrics import F1OptimalThreshold, threshold_degeneracy
from polar_detect.predictions import map_pixels, read_map


def sweep_settings(test_px, val_px, bins, max_exact_pixels):
    """Exact sweeps or fixed-bin histograms over the global score range -> (kwargs, n pixels)."""
    total_px = sum(map_pixels(e[2]) for e in test_px)
    total_val = sum(map_pixels(e[2]) for e in val_px)
    use_hist = max(total_px, total_val) > max_exact_pixels
    value_range = None
    if use_hist:
        lo, hi = np.inf, -np.inf
        for e in progress(test_px + val_px, desc="score range"):
            a = read_map(e[2])
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        value_range = (lo, hi)
    return dict(mode="hist" if use_hist else "exact", bins=bins, value_range=value_range), total_px


def f1_pass(entries, what, feed) -> None:
    """One streaming pass of (map, mask, ignore) over ``entries`` into ``feed``."""
    for s, _, mp in progress(entries, desc=what):
        a = read_map(mp)
        m = s.mask(a.shape)
        if m is not None:
            feed(a, m, s.ignore(a.shape))


def f1_optimum(f1m: F1OptimalThreshold, entries, what: str) -> dict:
    """Feed ``entries`` to ``f1m`` (in histogram mode, a second pass rescans the candidate
    bins exactly) and return its result."""
    f1_pass(entries, what, f1m.update)
    return refine(f1m, entries, what)


def refine(f1m: F1OptimalThreshold, entries, what: str) -> dict:
    """Histogram mode: rescan the candidate bins exactly; then ``f1m.compute()``."""
    if f1m.needs_refinement:
        f1m.start_refinement()
        f1_pass(entries, f"{what} (exact threshold)", f1m.refine)
    return f1m.compute()


def choose_threshold(val_px, kw, threshold, preds, warn) -> dict:
    """Command line > F1-max on val (ignore pixels left out) > predictions.json; {} = choose on test."""
    if threshold is not None:
        return {"value": float(threshold), "source": "command line"}
    if val_px:
        r = f1_optimum(F1OptimalThreshold(**kw), val_px, "validation")
        if r["threshold"] is not None:
            return {"value": r["threshold"], "source": "val (F1-max)", "n_val_images": len(val_px),
                    "val_f1": r["f1"], "val_precision": r["precision"], "val_recall": r["recall"],
                    "mode": r.get("mode"), "exact": r.get("exact")}
        warn("validation predictions have no anomalous pixel; threshold falls back")
    if preds.get("threshold") is not None:
        return {"value": float(preds["threshold"]), "source": "predictions.json"}
    return {}


def flag_degenerate(thr_info: dict, results: dict, px, warn) -> None:
    """Mark a threshold that flags most normal pixels or images (``metrics.threshold_degeneracy``)
    in ``threshold`` and in every section that depends on it; warn once."""
    tm = results.get("thresholded")
    if not thr_info or tm is None:
        return
    d = threshold_degeneracy(tm["fp"], tm["fp"] + tm["tn"], px.n_normal_images_flagged, px.n_normal_images)
    thr_info["degenerate"], thr_info["degeneracy"] = d["degenerate"], d
    for key in ("thresholded", "defect_wise_recall"):
        if results.get(key) is not None:
            results[key]["threshold_degenerate"] = d["degenerate"]
    if d["degenerate"]:
        warn(f"degenerate threshold {thr_info['value']:.6g} ({thr_info.get('source')}): {d['reason']}")
