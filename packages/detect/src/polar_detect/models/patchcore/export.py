"""ONNX export of a trained PatchCore (inference: anomaly map + image score).

The graph is :class:`~polar_detect.models.patchcore.model.PatchCoreModel` itself: input
``image`` (B, C, H, W) of *stored* dataset values (the model's input encoding, with its
train-split statistics, is part of the graph) at a fixed (H, W); outputs ``map`` (B, H, W)
(blurred nearest-memory distance, feature units) and ``score`` (B,) (the map's maximum),
exactly what ``predict`` computes. The memory bank is a constant of the graph. The batch
axis is dynamic: while exporting, the nearest-neighbour search runs as one chunk (B h w x
|M| distances; the torch path chunks it to bound memory). Uses the TorchScript-based
exporter (``dynamo=False``, needs only ``onnx``); :func:`verify` checks the file with
``onnx.checker`` and compares onnxruntime's outputs with torch's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polar_detect import onnx_export
from polar_detect.models.patchcore.model import PatchCoreModel
from polar_detect.onnx_export import compare, write_onnx


def default_channels(model: PatchCoreModel) -> int:
    """Input channels when none are given: 6 for AoLP (cos/sin pairs of RGB), else 3."""
    return 6 if model.encoding is not None and model.encoding.kind == "wheel" else 3


def export_onnx(model: PatchCoreModel, path: str | Path, size: tuple[int, int],
                channels: int | None = None, opset: int = 17) -> Path:
    """Write ``model`` to ``path`` for inputs (B, ``channels``, *size*); returns the path."""
    if not model.trained:
        raise ValueError("cannot export an untrained PatchCore model (empty memory bank)")
    dummy = torch.rand(1, channels or default_channels(model), *size, generator=torch.Generator().manual_seed(0))
    return write_onnx(model, path, dummy, ["image"], ["map", "score"], {"image": {0: "batch"}, "map": {0: "batch"}, "score": {0: "batch"}}, opset)


def run_onnx(path: str | Path, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(map, score) of the exported graph on ``x`` with onnxruntime (CPU)."""
    omap, oscore = onnx_export.run_onnx(path, x, "image", ["map", "score"])
    return omap, oscore


def verify(path: str | Path, model: PatchCoreModel, x: torch.Tensor, atol: float = 1e-4) -> dict:
    """``onnx.checker`` + max |onnxruntime - torch| of map and score on ``x``; raises
    ``AssertionError`` beyond ``atol`` relative to the map's scale (distances are not in [0, 1])."""
    out, (tmap, _) = compare(path, model, x, "image", ["map", "score"])
    out["map_scale"] = scale = max(1.0, float(tmap.abs().max()))
    assert max(out["max_abs_diff_map"], out["max_abs_diff_score"]) <= atol * scale, out
    return out
