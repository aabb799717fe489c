"""Pixel-exact instance masks (``anomaly_mask``: uint16 instance ids, 0 = none) and their table.

Mask rule: pixels where the image of the anomalous sample differs from its clean twin
*because of* that instance; each class says which (``AnomalyClass.mask``: ``geometric.py``,
``parts.py``, ``stain.py``). Shadows and reflections that move are not included. Pixels
claimed by several instances keep the class of lower ``mask_rank`` (missing, extra, chip,
dent, bump, scratch, swapped, water_stain). Masks are computed from ``mask_supersampling`` x
``mask_supersampling`` exact rays per pixel (default 3) and pooled (:func:`pool_mask`): a
pixel is in the mask when the anomaly is seen by any of its rays, so the mask covers every
pixel whose anti-aliased render it changes.
"""
from __future__ import annotations

import numpy as np

from polar_render.anomalies import builtin  # noqa: F401  (registers the shipped classes)
from polar_render.anomalies.aov import AovView, MaskViews
from polar_render.anomalies.registry import Anomaly, get


def instance_masks(anomalies: list[Anomaly], slots, anom: AovView, clean: AovView | None,
                   poses: dict, supersampling: int = 1) -> tuple[np.ndarray, list[dict]]:
    """``anomaly_mask`` (uint16) and the table of visible instances (see module docstring).

    The views may be rendered at ``supersampling`` x the image resolution (s x s exact
    rays per pixel); the mask is then pooled with :func:`pool_mask`.
    """
    views = MaskViews(slots, anom, clean, poses)
    mask = np.zeros(views.shape, np.uint16)
    table: list[dict] = []
    for a in sorted(anomalies, key=lambda a: get(a.cls).mask_rank):
        cls = get(a.cls)
        for pix, extra in cls.mask(a, views):
            pix = pix & (mask == 0)
            if not pix.any():
                continue
            k = len(table) + 1
            mask[pix] = k
            table.append({"id": k, "class": a.cls, "kind": a.kind, "instance": a.instance,
                          **cls.contrast(a, pix, views), **extra})
    return pool_mask(mask, table, supersampling)


def pool_mask(mask_ss: np.ndarray, table: list[dict], s: int) -> tuple[np.ndarray, list[dict]]:
    """Pool an s x s supersampled instance mask to pixels: a pixel belongs to the instance
    covering most of its subsamples whenever any subsample is covered (the mask then holds
    every pixel whose footprint the anomaly touches, like the anti-aliased render).
    Adds area_px/bbox, drops instances left without pixels and renumbers ids 1..K."""
    h, w = mask_ss.shape[0] // s, mask_ss.shape[1] // s
    blocks = mask_ss[: h * s, : w * s].reshape(h, s, w, s).transpose(0, 2, 1, 3).reshape(h, w, s * s)
    best = np.zeros((h, w), mask_ss.dtype)
    best_n = np.zeros((h, w), np.int64)
    for k in range(s * s):
        v = blocks[..., k]
        n = (blocks == v[..., None]).sum(-1)
        better = (v != 0) & (n > best_n)
        best = np.where(better, v, best)
        best_n = np.where(better, n, best_n)
    out = np.zeros((h, w), np.uint16)
    final = []
    for entry in table:
        pix = best == entry["id"]
        if not pix.any():
            continue
        k = len(final) + 1
        out[pix] = k
        ys, xs = np.nonzero(pix)
        final.append({**entry, "id": k, "area_px": int(pix.sum()),
                      "coverage_px": float((blocks == entry["id"]).sum() / (s * s)),
                      "bbox": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]})
    return out, final
