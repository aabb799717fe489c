"""SimpleNet ONNX export (polar_detect.models.simplenet.export) equals torch."""
import pytest
import torch

from polar_detect.models.simplenet import store
from polar_detect.models.simplenet.__main__ import main



def test_onnx_export_matches_torch(tiny, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from polar_detect.models.simplenet.export import verify
    data, model = tiny
    out = tmp_path / "sn.onnx"
    assert main(["export", "--model", str(model), "--out", str(out), "--size", "56x40"]) == 0
    net, _ = store.load_model(model)
    x = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(5))   # batch axis is dynamic
    r = verify(out, net, x)
    tol = 2e-5 * max(1.0, r["map_range"])          # float32 rounding at the maps' magnitude
    assert r["max_abs_diff_map"] <= tol and r["max_abs_diff_score"] <= tol, r
