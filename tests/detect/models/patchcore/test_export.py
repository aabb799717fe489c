"""ONNX export of PatchCoreModel: the graph, run by onnxruntime, matches torch."""
import numpy as np
import onnx
import pytest
import torch

from polar_detect.backbones import FeatureExtractor
from polar_detect.models.patchcore import PatchCore, SequentialPatchCore
from polar_detect.models.patchcore.export import export_onnx, run_onnx, verify
from polar_detect.models.patchcore.synth import SyntheticPlates

SIZE = 64


def _batch(n, seed):
    plates = SyntheticPlates(n, SIZE, 0.5, seed=seed, split="test")
    return torch.stack([plates[i]["image"] for i in range(n)])


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(2)
    train = SyntheticPlates(4, SIZE, 0.0, seed=1, split="train")
    seq = SequentialPatchCore(coreset_size=60, extractor=FeatureExtractor(pool="seq"), encoding="intensity").fit(train)
    orig = PatchCore(ratio=0.05, k=3, extractor=FeatureExtractor(pool="local", projection_dim=32)).fit(train)
    return {"seq": seq, "orig": orig}


@pytest.mark.parametrize("name", ["seq", "orig"])
def test_onnx_graph_matches_torch(models, name, tmp_path):
    model = models[name].model
    path = export_onnx(model, tmp_path / f"{name}.onnx", (SIZE, SIZE), channels=3)
    onnx.checker.check_model(onnx.load(str(path)))
    x = _batch(3, seed=7)                                   # batch 3: the batch axis is dynamic
    omap, oscore = run_onnx(path, x)
    tmap, tscore = model(x)
    assert omap.shape == (3, SIZE, SIZE) and oscore.shape == (3,)
    np.testing.assert_allclose(omap, tmap.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(oscore, tscore.numpy(), atol=1e-4, rtol=0)
    assert float(tmap.max() - tmap.min()) > 1.0                # the comparison is not of constants
    assert verify(path, model, x[:1])["checked"]


def test_export_refuses_an_untrained_model(tmp_path):
    untrained = SequentialPatchCore(coreset_size=4, extractor=FeatureExtractor(pool="seq"))
    with pytest.raises(ValueError, match="untrained"):
        export_onnx(untrained.model, tmp_path / "m.onnx", (SIZE, SIZE))
    assert not (tmp_path / "m.onnx").exists()


def test_cli_export(models, tmp_path, capsys):
    from polar_detect.models.patchcore import save_model
    from polar_detect.models.patchcore.__main__ import main
    model = save_model(models["seq"], tmp_path / "seq.safetensors")
    out = tmp_path / "seq.onnx"
    assert main(["export", "--model", str(model), "--out", str(out), "--size", "48x32", "--channels", "1"]) == 0
    msg = capsys.readouterr().out
    assert "onnxruntime vs torch" in msg and "Bx1x32x48" in msg
    x = torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(0))
    omap, _ = run_onnx(out, x)
    np.testing.assert_allclose(omap, models["seq"].model(x)[0].numpy(), atol=1e-4, rtol=0)
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "x.onnx")]) == 2   # no size known
    assert "--size" in capsys.readouterr().err
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "x.txt"), "--size", "32"]) == 2
