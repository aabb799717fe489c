"""SfP ONNX export (polar_detect.models.sfp.export) equals torch at other sizes."""
import pytest

from polar_detect.models.sfp.train import load_model, train

from tests.detect.models.sfp.tiny import tiny_preset


pytestmark = pytest.mark.usefixtures("one_thread")


def test_onnx_export_matches_torch_at_other_sizes(small_data, tmp_path):
    pytest.importorskip("onnxruntime")
    from polar_detect.models.sfp.export import example_input, export_onnx, verify

    train(small_data, tmp_path / "m", tiny_preset(epochs=1), progress=False)
    net, _ = load_model(tmp_path / "m")
    path = export_onnx(net, tmp_path / "sfp.onnx", (16, 24))
    for size in [(16, 24), (30, 42)]:
        check = verify(path, net, example_input(net, size, seed=1))
        assert check["max_abs_diff"] < 1e-4 and check["shape"] == [1, 3, *size]
