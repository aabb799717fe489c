"""ONNX export of the SfP network.

Graph input ``polarization`` (B, 4C, H, W) (the channels of ``model.py``: I_un / scale,
rho, cos 2phi, sin 2phi), output ``normals`` (B, 3, H, W) unit vectors; batch, height and
width are dynamic axes (the network has no fixed size; ``size`` is only the example
input used for tracing and checking). TorchScript-based exporter (``dynamo=False``), which
needs only the ``onnx`` package; :func:`verify` runs ``onnx.checker`` and, when
onnxruntime is installed, compares against torch.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from .model import SfPNet


def export_onnx(net: SfPNet, path: str | Path, size: tuple[int, int] = (240, 320), opset: int = 17) -> Path:
    """Write ``net`` to ``path`` atomically; returns the path."""
    from polar_render.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = net.eval().cpu()
    dummy = torch.zeros(1, net.config.in_channels, *size)
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (dummy,), str(tmp), input_names=["polarization"], output_names=["normals"],
                          opset_version=opset, dynamic_axes={"polarization": axes, "normals": axes}, dynamo=False)
    return path


def example_input(net: SfPNet, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A plausible random input: intensity in [0, 1.2], DoLP in [0, 0.5], a unit (cos, sin) pair."""
    g = torch.Generator().manual_seed(seed)
    c = net.config.colour
    h, w = size
    phi = torch.rand(1, c, h, w, generator=g) * torch.pi
    return torch.cat([torch.rand(1, c, h, w, generator=g) * 1.2, torch.rand(1, c, h, w, generator=g) * 0.5,
                      torch.cos(2 * phi), torch.sin(2 * phi)], dim=1)


def verify(path: str | Path, net: SfPNet, x: torch.Tensor, atol: float = 1e-4) -> dict:
    """``onnx.checker`` + max |onnxruntime - torch| on ``x`` (AssertionError beyond ``atol``)."""
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))
    out = {"checked": True}
    try:
        import onnxruntime as ort
    except ImportError:
        return out
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = sess.run(["normals"], {"polarization": x.numpy().astype(np.float32)})
    with torch.no_grad():
        ref = net.eval().cpu()(x).numpy()
    out["max_abs_diff"] = float(np.abs(onnx_out - ref).max())
    out["shape"] = list(onnx_out.shape)
    if not out["max_abs_diff"] <= atol:
        raise AssertionError(f"{path}: ONNX output differs from torch by {out['max_abs_diff']:.3g} > {atol}")
    return out
