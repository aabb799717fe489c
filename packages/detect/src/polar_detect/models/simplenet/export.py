"""ONNX export of a trained SimpleNet / feature ensemble (the whole detector in one graph).

The graph is :class:`~.model.FeatureDetector` itself: input ``image`` (B, C, H, W) of stored
dataset values at a fixed (H, W), outputs ``map`` (B, H, W) and ``score`` (B,), exactly what
``predict`` writes. The batch axis is dynamic, except with a PatchCore source (its chunked
nearest-neighbour search is traced for one batch size: the export's, 1). Uses the
TorchScript-based exporter (``dynamo=False``, needs only ``onnx``); :func:`verify` checks
the file with ``onnx.checker`` and compares onnxruntime's outputs with torch's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from polar_detect.onnx_export import compare, write_onnx


def dynamic_batch(model) -> bool:
    return not any(getattr(s, "kind", "") == "patchcore" for s in model.sources)


def export_onnx(model, path, channels: int, size: tuple[int, int], opset: int = 17) -> Path:
    """Write ``model`` to ``path`` for inputs (B, ``channels``, *size*)."""
    axes = {"image": {0: "batch"}, "map": {0: "batch"}, "score": {0: "batch"}} if dynamic_batch(model) else None
    return write_onnx(model, path, torch.rand(1, channels, *size), ["image"], ["map", "score"], axes, opset)


def verify(path, model, x: torch.Tensor) -> dict:
    """``onnx.checker`` + max |onnxruntime - torch| over the map and the score for input ``x``
    (plus ``map_range``, the scale a caller's tolerance should follow)."""
    out, (tmap, _) = compare(path, model, x, "image", ["map", "score"])
    out["map_range"] = float(tmap.max() - tmap.min())
    return out
