"""ONNX export of a trained SimpleNet / feature ensemble (the whole detector in one graph).

The graph is :class:`~.model.FeatureDetector` itself: input ``image`` (B, C, H, W) of stored
dataset values at a fixed (H, W), outputs ``map`` (B, H, W) and ``score`` (B,), exactly what
``predict`` writes. The batch axis is dynamic, except with a PatchCore source (its chunked
nearest-neighbour search is traced for one batch size: the export's, 1). Uses the
TorchScript-based exporter (``dynamo=False``, needs only ``onnx``); :func:`verify` checks
the file with ``onnx.checker`` and compares onnxruntime's outputs with torch's.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch


def dynamic_batch(model) -> bool:
    return not any(getattr(s, "kind", "") == "patchcore" for s in model.sources)


def export_onnx(model, path, channels: int, size: tuple[int, int], opset: int = 17) -> Path:
    """Write ``model`` to ``path`` for inputs (B, ``channels``, *size*)."""
    from polar_render.io import atomic_path
    path = Path(path)
    model = model.eval().cpu()
    dummy = torch.rand(1, channels, *size)
    axes = {"image": {0: "batch"}, "map": {0: "batch"}, "score": {0: "batch"}} if dynamic_batch(model) else None
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(tmp), input_names=["image"], output_names=["map", "score"],
                          opset_version=opset, dynamic_axes=axes, dynamo=False)
    return path


def verify(path, model, x: torch.Tensor) -> dict:
    """``onnx.checker`` + max |onnxruntime - torch| over the map and the score for input ``x``."""
    import onnx
    import onnxruntime as ort
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    omap, oscore = sess.run(["map", "score"], {"image": x.numpy().astype(np.float32)})
    with torch.no_grad():
        tmap, tscore = model.eval()(x)
    return {"checked": True, "max_abs_diff_map": float(np.abs(omap - tmap.numpy()).max()),
            "max_abs_diff_score": float(np.abs(oscore - tscore.numpy()).max()),
            "map_range": float(tmap.max() - tmap.min())}
