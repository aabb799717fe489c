"""DRÆM ONNX export (polar_detect.models.draem.export) equals torch."""
import pytest
import torch

from polar_detect.models.draem.model import DRAEM, DRAEMScorer


pytestmark = pytest.mark.usefixtures("one_thread")


def test_onnx_export_matches_torch(tmp_path):
    from polar_detect.models.draem.export import export_onnx, verify
    torch.manual_seed(0)
    model = DRAEM(3, 4, 4).eval()
    path = export_onnx(model, tmp_path / "draem.onnx", (64, 64))
    x = torch.rand(3, 3, 64, 64)                                   # dynamic batch
    res = verify(path, model, x, atol=1e-4)
    assert res["checked"]
    with torch.no_grad():
        m, s = DRAEMScorer(model)(x)
    assert res["max_abs_diff_map"] < 1e-4 and res["max_abs_diff_score"] < 1e-4
