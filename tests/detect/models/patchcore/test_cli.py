"""``python -m polar_detect.models.patchcore`` on a real on-disk dataset (the synthetic plates
written by the dataset writer, read by the real PolarDataset): the predictions contract, and
predictions that find the obvious anomalies."""
import json
import sys

import numpy as np
import pytest
import tifffile

from polar_detect.dataset.build import build_from_renders
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.torch_dataset import PolarDataset
from polar_detect.metrics import binary_auroc
from polar_detect.models.patchcore.__main__ import main
from polar_detect.models.patchcore.synth import write_dataset

from tests.detect.fake_render import MIXED, NORMAL8, make_render


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("plates") / "data"
    write_dataset(root, n_train=6, n_val=4, n_test=8, size=64, seed=0)
    return root


def test_train_predict_contract_and_detection(data, tmp_path):
    model = tmp_path / "seq.safetensors"
    assert main(["train", "--data", str(data), "--out", str(model), "--coreset-size", "40",
                 "--epochs", "2", "--augment", "--quiet"]) == 0
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--data", str(data), "--out", str(pred), "--quiet"]) == 0
    p = json.loads((pred / "predictions.json").read_text())
    assert p["model"] == "seq_patchcore" and p["split"] == "test" and len(p["scores"]) == 8
    assert p["modality"] == "intensity" and np.isfinite(p["threshold"])
    assert set(p) >= {"dataset", "manifest_sha256", "threshold", "maps"}
    test = PolarDataset(data, "test", ["intensity"], normalise=False)
    labels, scores, maps, masks = [], [], [], []
    for i in range(len(test)):
        it = test[i]
        m = tifffile.imread(pred / p["maps"][it["id"]])
        assert m.dtype == np.float32 and m.shape == (64, 64)
        labels.append(it["label"])
        scores.append(p["scores"][it["id"]])
        maps.append(m.ravel())
        masks.append(it["mask"].numpy().ravel() > 0.5)
    assert 0 < sum(labels) < len(labels)
    assert binary_auroc(scores, labels) >= 0.9                      # obvious anomalies: well above chance
    assert binary_auroc(np.concatenate(maps), np.concatenate(masks)) >= 0.8
    both = tmp_path / "pred_both"                                   # val entries beside test: evaluate's threshold
    assert main(["predict", "--model", str(model), "--data", str(data), "--out", str(both),
                 "--split", "test,val", "--quiet"]) == 0
    q = json.loads((both / "predictions.json").read_text())
    assert q["split"] == "test" and len(q["scores"]) == 12 and "val_00003" in q["maps"]
    assert {k: q["scores"][k] for k in p["scores"]} == p["scores"]
    assert "torchvision" not in sys.modules


def test_finetune_meld_and_original(data, tmp_path, capsys):
    seq, orig = tmp_path / "seq.safetensors", tmp_path / "orig.safetensors"
    assert main(["train", "--data", str(data), "--out", str(seq), "--coreset-size", "30", "--quiet"]) == 0
    assert main(["train", "--data", str(data), "--out", str(orig), "--method", "original", "--ratio", "0.05",
                 "--encoding", "none", "--quiet"]) == 0
    assert "patchcore (efficientnet_lite0) on 6 images" in capsys.readouterr().out
    ft = tmp_path / "ft.safetensors"
    assert main(["finetune", "--model", str(seq), "--data", str(data), "--out", str(ft), "--quiet"]) == 0
    assert main(["finetune", "--model", str(orig), "--data", str(data), "--out", str(ft), "--quiet"]) == 2
    assert "needs a Sequential PatchCore" in capsys.readouterr().err
    melded = tmp_path / "meld.safetensors"
    assert main(["meld", "--models", str(seq), str(ft), "--coreset-size", "40", "--out", str(melded),
                 "--quiet"]) == 0
    assert "into 40" in capsys.readouterr().out
    assert main(["meld", "--models", str(seq), str(orig), "--out", str(melded), "--quiet"]) == 2


def test_bad_inputs_exit_2(data, tmp_path):
    model = tmp_path / "m.safetensors"
    assert main(["predict", "--model", str(tmp_path / "missing.safetensors"), "--data", str(data),
                 "--out", str(tmp_path / "p"), "--quiet"]) == 2
    assert main(["train", "--data", str(tmp_path / "nodata"), "--out", str(model), "--quiet"]) == 2
    assert main(["train", "--out", str(model), "--quiet"]) == 2


def test_patchcore_predict_normalisation_check(tmp_path, capsys):
    """patchcore predict's check (models fed manifest-normalised values: --encoding none)."""
    from types import SimpleNamespace
    from polar_detect.models.patchcore.__main__ import _norm_check
    train = make_render(tmp_path / "train", NORMAL8[:4], seed=1, intensity_gain=3.0)
    ev = make_render(tmp_path / "eval", MIXED, seed=2)
    tm, _ = build_from_renders([f"{train}:train"], tmp_path / "tr", "intensity", progress=False)
    build_from_renders([ev], tmp_path / "other", "intensity", progress=False)
    from polar_detect.dataset.manifest import normalisation_of
    model = SimpleNamespace(encoding=None, info={"normalisation": normalisation_of(tm, ["intensity"]),
                                                 "dataset": str(tmp_path / "tr" / "manifest.json")})
    args = SimpleNamespace(data=str(tmp_path / "other"), norm_mismatch="warn")
    assert _norm_check(model, args, "intensity")["status"] == "mismatch"
    assert "normalisation differs" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="normalisation differs"):
        _norm_check(model, SimpleNamespace(data=str(tmp_path / "other"), norm_mismatch="error"), "intensity")
    args.data = str(tmp_path / "tr")
    assert _norm_check(model, args, "intensity")["status"] == "match"
    encoded = SimpleNamespace(encoding=object(), info={})
    assert _norm_check(encoded, args, "intensity")["status"] == "not applicable"
