"""ONNX export and its check (polar_detect.onnx_export): a tiny module traced with a dynamic
batch axis runs in onnxruntime at another batch size, ``compare`` reports the largest absolute
difference per output, and a tampered graph fails ``onnx.checker``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from polar_detect.onnx_export import compare, run_onnx, write_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class _Two(nn.Module):
    """Two outputs: a per-pixel map and a per-image score."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        m = torch.sigmoid(self.conv(x))
        return m, m.amax(dim=(1, 2, 3))


def test_export_dynamic_batch_and_compare(tmp_path):
    mod = _Two()
    path = write_onnx(mod, tmp_path / "sub" / "m.onnx", torch.rand(1, 2, 8, 8), ["image"], ["map", "score"],
                      dynamic_axes={"image": {0: "batch"}, "map": {0: "batch"}, "score": {0: "batch"}})
    assert path == tmp_path / "sub" / "m.onnx" and not list(path.parent.glob(".*"))   # atomic: no temporary left
    x = torch.rand(3, 2, 8, 8)                                  # another batch size than traced
    got = run_onnx(path, x, "image", ["map", "score"])
    assert got[0].shape == (3, 1, 8, 8) and got[1].shape == (3,)
    rec, ref = compare(path, mod, x, "image", ["map", "score"])
    assert rec["checked"] is True and set(rec) == {"checked", "max_abs_diff_map", "max_abs_diff_score"}
    assert rec["max_abs_diff_map"] == pytest.approx(float(np.abs(got[0] - ref[0].numpy()).max()), abs=1e-12)
    assert rec["max_abs_diff_map"] < 1e-5 and rec["max_abs_diff_score"] < 1e-5
    # a module that differs from the exported graph shows up in the differences
    other = _Two()
    with torch.no_grad():
        other.conv.bias += 1.0
    rec2, _ = compare(path, other, x, "image", ["map", "score"])
    assert rec2["max_abs_diff_map"] > 1e-2


def test_tampered_graph_fails_the_checker(tmp_path):
    path = write_onnx(_Two(), tmp_path / "m.onnx", torch.rand(1, 2, 8, 8), ["image"], ["map", "score"])
    model = onnx.load(str(path))
    model.graph.node[0].input[0] = "no_such_tensor"
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(onnx.checker.ValidationError):
        compare(tmp_path / "bad.onnx", _Two(), torch.rand(1, 2, 8, 8), "image", ["map", "score"])
