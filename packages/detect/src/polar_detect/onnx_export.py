"""ONNX export and its check, shared by every detector that exports (DRAEM, PatchCore,
SimpleNet / feature ensemble, SfP).

:func:`write_onnx` traces a module with the TorchScript-based exporter (``dynamo=False``: it
needs only the ``onnx`` package) into ``path`` atomically; :func:`compare` runs
``onnx.checker`` on the file and the graph with onnxruntime (CPU) next to the torch module on
the same input, and returns the largest absolute difference per output. Each model's
``export.py`` keeps what is its own: the wrapped module, the example input, the dynamic axes
and the tolerance that fits its outputs' scale.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from polar_render.io import atomic_path


def write_onnx(module: nn.Module, path: str | Path, example: torch.Tensor, inputs: list[str],
               outputs: list[str], dynamic_axes: dict | None = None, opset: int = 17) -> Path:
    """Trace ``module`` (eval mode, CPU) on ``example`` into ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval().cpu()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # tracer warnings about Python control flow
        torch.onnx.export(module, (example,), str(tmp), input_names=inputs, output_names=outputs,
                          opset_version=opset, dynamic_axes=dynamic_axes, dynamo=False)
    return path


def run_onnx(path: str | Path, x: torch.Tensor, input_name: str, outputs: list[str]) -> list[np.ndarray]:
    """The exported graph's outputs on ``x`` with onnxruntime (CPU)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(outputs, {input_name: x.detach().cpu().numpy().astype(np.float32)})


def compare(path: str | Path, module: nn.Module, x: torch.Tensor, input_name: str,
            outputs: list[str]) -> tuple[dict, tuple[torch.Tensor, ...]]:
    """``onnx.checker`` + onnxruntime vs torch on ``x``.

    Returns ``({"checked": True, "max_abs_diff_<output>": float, ...}, torch outputs)``; the
    caller decides the tolerance (it knows the outputs' scale).
    """
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))
    got = run_onnx(path, x, input_name, outputs)
    with torch.no_grad():
        ref = module.eval().cpu()(x)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    diffs = {f"max_abs_diff_{name}": float(np.abs(g - r.numpy()).max()) for name, g, r in zip(outputs, got, ref)}
    return {"checked": True, **diffs}, tuple(ref)
