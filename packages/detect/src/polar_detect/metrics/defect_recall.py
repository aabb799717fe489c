"""Defect-wise recall (Sequential PatchCore's R_DW) and per-class pixel coverage.

An annotated instance with area A is *detected at coverage c* when the predicted-positive
pixels (``score >= threshold``) inside it number ``C >= 1`` and ``C >= c * A``; the default
``c = 0`` means "at least one pixel".  Coverage counts every predicted-positive pixel inside
the instance, wherever the prediction blob comes from: **a prediction blob counts for every
instance it overlaps** (a blob that leaks from one defect into a neighbouring one detects
both).  R_DW of a class = detected / annotated instances; mR_DW = mean of R_DW over the
classes of kind ``defect`` (impurity classes are averaged separately as mR_DW_impurity).
Per-class pixel coverage = covered pixels / annotated pixels (pixel recall of that class).
Instances with no pixel in the (possibly resized) instance mask are skipped and counted.
"""
from __future__ import annotations

import math

import numpy as np

from polar_detect.metrics._curve import to_numpy

COVERAGE_THRESHOLDS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.10, 0.15, 0.20, 0.25, 0.50, 0.75, 1.0)


def instance_coverage(pred_positive, instance_mask, instances) -> list[dict]:
    """Per instance: {"id", "class", "kind", "area", "covered", "coverage"}.

    ``pred_positive``: (H, W) bool; ``instance_mask``: (H, W) int ids (0 = none);
    ``instances``: [{"id", "class", "kind"}].
    """
    pred = to_numpy(pred_positive).astype(bool)
    inst = to_numpy(instance_mask).astype(np.int64)
    if pred.shape != inst.shape:
        raise ValueError(f"prediction {pred.shape} and instance mask {inst.shape} differ in shape")
    n = int(inst.max()) + 1 if inst.size else 1
    area = np.bincount(inst.ravel(), minlength=n)
    covered = np.bincount(inst[pred].ravel(), minlength=n)
    out = []
    for it in instances:
        i = int(it["id"])
        a = int(area[i]) if 0 < i < n else 0
        c = int(covered[i]) if 0 < i < n else 0
        out.append({"id": i, "class": str(it.get("class", "unknown")),
                    "kind": str(it.get("kind", "defect")), "area": a, "covered": c,
                    "coverage": c / a if a else 0.0})
    return out


def is_detected(covered: int, area: int, min_coverage: float = 0.0) -> bool:
    """Detection rule (see module docstring)."""
    return area > 0 and covered >= 1 and covered >= math.ceil(min_coverage * area - 1e-9)


class DefectWiseRecall:
    """Stateful defect-wise recall.  ``update(pred_positive, instance_mask, instances)`` per
    image; ``compute()`` -> per-class table, mR_DW, coverage curve."""

    def __init__(self, min_coverage: float = 0.0, coverages=COVERAGE_THRESHOLDS, class_kinds=None):
        self.min_coverage = float(min_coverage)
        self.coverages = tuple(float(c) for c in coverages)
        self.class_kinds = dict(class_kinds or {})
        self.reset()

    def reset(self):
        self.records: list[dict] = []
        self.n_empty = 0

    def update(self, pred_positive, instance_mask, instances, sample_id=None) -> None:
        for r in instance_coverage(pred_positive, instance_mask, instances):
            if r["area"] == 0:
                self.n_empty += 1
                continue
            r["sample"] = sample_id
            self.records.append(r)

    def _kind(self, cls: str, seen: str) -> str:
        return self.class_kinds.get(cls, seen)

    def compute(self) -> dict:
        classes: dict[str, dict] = {}
        for r in self.records:
            c = classes.setdefault(r["class"], {"kind": self._kind(r["class"], r["kind"]),
                                                 "n_instances": 0, "detected": 0, "area": 0,
                                                 "covered": 0, "_cov": [], "_det": [0] * len(self.coverages)})
            c["n_instances"] += 1
            c["area"] += r["area"]
            c["covered"] += r["covered"]
            c["_cov"].append(r["coverage"])
            c["detected"] += is_detected(r["covered"], r["area"], self.min_coverage)
            for j, cv in enumerate(self.coverages):
                c["_det"][j] += is_detected(r["covered"], r["area"], cv)
        per_class, curve = {}, {}
        for name in sorted(classes):
            c = classes[name]
            per_class[name] = {"kind": c["kind"], "n_instances": c["n_instances"],
                               "detected": c["detected"], "recall": c["detected"] / c["n_instances"],
                               "pixel_coverage": c["covered"] / c["area"],
                               "mean_instance_coverage": float(np.mean(c["_cov"])),
                               "annotated_pixels": c["area"], "covered_pixels": c["covered"]}
            curve[name] = [d / c["n_instances"] for d in c["_det"]]

        def mean_over(kind, values):
            """Mean over the classes of one kind (a number, or a list for curves); None if none."""
            v = [values[n] for n in per_class if per_class[n]["kind"] == kind]
            if not v:
                return None
            m = np.mean(np.asarray(v, np.float64), axis=0)
            return float(m) if m.ndim == 0 else [float(x) for x in m]

        recalls = {n: per_class[n]["recall"] for n in per_class}
        return {"min_coverage": self.min_coverage, "per_class": per_class,
                "mR_DW": mean_over("defect", recalls),
                "mR_DW_impurity": mean_over("impurity", recalls),
                "n_instances": len(self.records), "n_empty_instances": self.n_empty,
                "coverage_curve": {"coverage_thresholds": list(self.coverages), "per_class": curve,
                                   "mean_defect": mean_over("defect", curve),
                                   "mean_impurity": mean_over("impurity", curve)}}


def defect_wise_recall(pred_positive, instance_masks, instances, min_coverage: float = 0.0,
                       class_kinds=None) -> dict:
    """Functional form over a list of images (masks and instance lists aligned)."""
    m = DefectWiseRecall(min_coverage, class_kinds=class_kinds)
    for p, im, ins in zip(pred_positive, instance_masks, instances):
        m.update(p, im, ins)
    return m.compute()
