"""ONNX export of a trained DRÆM (inference head included).

The graph is :class:`~polar_detect.draem.model.DRAEMScorer`: input ``image`` (B,C,H,W) at
the network size, outputs ``map`` (B,H,W) (anomaly probability) and ``score`` (B,) (max of
the 21x21 mean-filtered map). Batch is dynamic. Uses the TorchScript-based exporter
(``dynamo=False``), which needs only the ``onnx`` package; :func:`verify` checks the file
with ``onnx.checker`` and compares against torch with onnxruntime when it is installed.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .model import DRAEM, DRAEMScorer


def export_onnx(model: DRAEM, path: str | Path, size: tuple[int, int] = (256, 256),
                kernel: int = 21, opset: int = 17) -> Path:
    """Write ``model`` (+ scoring head) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = DRAEMScorer(model.eval().cpu(), kernel).eval()
    dummy = torch.zeros(1, model.channels, *size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(head, (dummy,), str(path), input_names=["image"],
                          output_names=["map", "score"], opset_version=opset,
                          dynamic_axes={"image": {0: "batch"}, "map": {0: "batch"},
                                        "score": {0: "batch"}}, dynamo=False)
    return path


def verify(path: str | Path, model: DRAEM | None = None, x: torch.Tensor | None = None,
           atol: float = 1e-4) -> dict:
    """``onnx.checker`` the file; if onnxruntime, ``model`` and ``x`` are given, compare.

    Returns ``{"checked": True, "max_abs_diff_map": ..., "max_abs_diff_score": ...}``
    (diffs absent without onnxruntime) and raises ``AssertionError`` beyond ``atol``.
    """
    import onnx
    onnx.checker.check_model(onnx.load(str(path)))
    out = {"checked": True}
    if model is None or x is None:
        return out
    try:
        import onnxruntime as ort
    except ImportError:
        return out
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    omap, oscore = sess.run(["map", "score"], {"image": x.numpy().astype(np.float32)})
    with torch.no_grad():
        tmap, tscore = DRAEMScorer(model.eval().cpu())(x)
    out["max_abs_diff_map"] = float(np.abs(omap - tmap.numpy()).max())
    out["max_abs_diff_score"] = float(np.abs(oscore - tscore.numpy()).max())
    assert out["max_abs_diff_map"] <= atol and out["max_abs_diff_score"] <= atol, out
    return out
