"""Model files: round trip, the unchanged format id, files written before issue 17 still load
and predict the same, bad files refused with the path."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from polar_detect.backbones import FeatureExtractor
from polar_detect.models.patchcore import SequentialPatchCore, load_model, save_model
from polar_detect.models.patchcore.store import FORMAT, read_model_file
from polar_detect.models.patchcore.synth import SyntheticPlates

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(pool="seq")


def test_save_load_roundtrip(extractor, tmp_path):
    train = SyntheticPlates(4, 64, 0.0, seed=1, split="train")
    seq = SequentialPatchCore(coreset_size=40, extractor=extractor, encoding="intensity", k=2).fit(train)
    val = SyntheticPlates(4, 64, 0.5, seed=1, split="val")
    thr = seq.calibrate(val)
    path = save_model(seq, tmp_path / "sub" / "m.safetensors")
    assert path.is_file() and not list(path.parent.glob("*tmp*"))      # atomic: no leftovers
    cfg, mem = read_model_file(path)
    assert cfg["format"] == FORMAT == "polar_detect.patchcore/1" and cfg["memory_size"] == 40
    assert cfg["coreset_size"] == 40 and cfg["k"] == 2 and cfg["encoding"]["scale"] == seq.encoding.scale
    m2 = load_model(path, extractor=extractor)
    assert type(m2) is SequentialPatchCore and m2.threshold == thr and m2.feature_cfg == seq.feature_cfg
    assert torch.equal(m2.memory, seq.memory) and m2.k == 2 and m2.encoding == seq.encoding
    assert m2.history == json.loads(json.dumps(seq.history))
    x = val[0]["image"][None]
    assert torch.equal(seq.predict(x)[1], m2.predict(x)[1])
    with pytest.raises(RuntimeError, match="not trained"):
        save_model(SequentialPatchCore(coreset_size=4, extractor=extractor), tmp_path / "empty.safetensors")


@pytest.mark.parametrize("name", ["seq", "original"])
def test_models_saved_before_the_restructure_load_and_predict_identically(name):
    """Files written by the pre-issue-17 code (``data/*_v1.safetensors``) and that code's
    predictions (batch of 4, one thread: the new code reproduces them bit for bit there; here a
    batch of 2 one-channel images, so the backbone's float summation order may differ by ulps)."""
    ref = np.load(DATA / "v1_predictions.npz")
    model = load_model(DATA / f"{name}_v1.safetensors", download=False)
    assert model.method == {"seq": "sequential", "original": "original"}[name]
    scores, maps = model.predict(torch.from_numpy(ref["images"]))
    np.testing.assert_allclose(maps.numpy(), ref[f"{name}_maps"], rtol=2e-5, atol=0)
    np.testing.assert_allclose(scores.numpy(), ref[f"{name}_scores"], rtol=2e-5, atol=0)
    assert model.threshold is not None and (model.encoding is None) == (name == "original")


def test_bad_files_are_refused_naming_the_path(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.safetensors"):
        load_model(bad)
    with pytest.raises(ValueError, match="missing.safetensors: missing"):
        load_model(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file
    other = tmp_path / "other.safetensors"
    save_file({"memory": torch.zeros(2, 3)}, str(other),
              metadata={"polar_detect": json.dumps({"format": "polar_detect.patchcore/0"})})
    with pytest.raises(ValueError, match="format 'polar_detect.patchcore/0', expected"):
        load_model(other)
    save_file({"weights": torch.zeros(2, 3)}, str(other),
              metadata={"polar_detect": json.dumps({"format": "polar_detect.patchcore/1"})})
    with pytest.raises(ValueError, match="no tensor 'memory'"):
        load_model(other)
