"""ONNX export of a trained DRÆM (inference head included).

The graph is :class:`~polar_detect.models.draem.model.DRAEMScorer`: input ``image`` (B,C,H,W) at
the network size, outputs ``map`` (B,H,W) (anomaly probability) and ``score`` (B,) (max of
the 21x21 mean-filtered map). Batch is dynamic. Uses the TorchScript-based exporter
(``dynamo=False``, :mod:`polar_detect.onnx_export`); :func:`verify` checks the file with
``onnx.checker`` and compares onnxruntime's outputs with torch's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from polar_detect.models.draem.model import DRAEM, DRAEMScorer
from polar_detect.onnx_export import compare, write_onnx


def export_onnx(model: DRAEM, path: str | Path, size: tuple[int, int] = (256, 256),
                kernel: int = 21, opset: int = 17) -> Path:
    """Write ``model`` (+ scoring head) to ``path``; returns the path."""
    head = DRAEMScorer(model.eval().cpu(), kernel)
    return write_onnx(head, path, torch.zeros(1, model.channels, *size), ["image"], ["map", "score"],
                      {"image": {0: "batch"}, "map": {0: "batch"}, "score": {0: "batch"}}, opset)


def verify(path: str | Path, model: DRAEM, x: torch.Tensor, atol: float = 1e-4) -> dict:
    """``onnx.checker`` + max |onnxruntime - torch| of map and score on ``x``
    (``{"checked": True, "max_abs_diff_map": ..., "max_abs_diff_score": ...}``);
    AssertionError beyond ``atol``."""
    out, _ = compare(path, DRAEMScorer(model.eval().cpu()), x, "image", ["map", "score"])
    assert out["max_abs_diff_map"] <= atol and out["max_abs_diff_score"] <= atol, out
    return out
