"""ONNX export of the SfP network.

Graph input ``polarization`` (B, 4C, H, W) (the channels of ``model.py``: I_un / scale,
rho, cos 2phi, sin 2phi), output ``normals`` (B, 3, H, W) unit vectors; batch, height and
width are dynamic axes (the network has no fixed size; ``size`` is only the example
input used for tracing and checking). TorchScript-based exporter (``dynamo=False``,
:mod:`polar_detect.onnx_export`); :func:`verify` runs ``onnx.checker`` and compares
onnxruntime's output with torch's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from polar_detect.models.sfp.model import SfPNet
from polar_detect.onnx_export import compare, write_onnx


def export_onnx(net: SfPNet, path: str | Path, size: tuple[int, int] = (240, 320), opset: int = 17) -> Path:
    """Write ``net`` to ``path`` atomically; returns the path."""
    axes = {0: "batch", 2: "height", 3: "width"}
    return write_onnx(net, path, torch.zeros(1, net.config.in_channels, *size), ["polarization"], ["normals"],
                      {"polarization": axes, "normals": axes}, opset)


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
    out, (ref,) = compare(path, net, x, "polarization", ["normals"])
    out = {"checked": True, "max_abs_diff": out["max_abs_diff_normals"], "shape": list(ref.shape)}
    if not out["max_abs_diff"] <= atol:
        raise AssertionError(f"{path}: ONNX output differs from torch by {out['max_abs_diff']:.3g} > {atol}")
    return out
