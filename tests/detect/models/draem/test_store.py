"""DRÆM model files (polar_detect.models.draem.store) are data (issue 20).

* A booby-trapped pickle in any model slot is refused (exit 2) without being unpickled.
* Saving and loading reproduces predictions bit for bit; NaN weights are refused.
* torch.load appears only in the opt-in legacy converter and the shipped-weights reader.

Stale training state, batches of one and non-finite losses: test_train.py; legacy conversion:
test_legacy.py. (test_backbone_weights_from_a_user_path_must_be_safetensors tests
polar_detect.backbones and belongs in tests/detect/test_backbones.py, outside this tree.)
"""
import pytest
import torch

from polar_detect.models.draem import store
from polar_detect.models.draem.__main__ import main
from polar_detect.models.draem.polar import PolarDRAEM, train_polar
from polar_detect.models.draem.synthetic import SyntheticDataset
from polar_detect.models.draem.train import FINAL, preset

from tests.detect.draem_tiny import TINY, TRAIN_FAST, copy_model, snapshot, write_trap


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ pickles are refused
SLOTS = [
    pytest.param("predict", "intensity/model.pt", ["model.pt", "convert-legacy", "--trust-pickle"],
                 id="predict-legacy-model.pt"),
    pytest.param("predict", "intensity/model.safetensors", ["model.safetensors", "not a polar_detect DRÆM safetensors"],
                 id="predict-pickle-renamed-safetensors"),
    pytest.param("train", "intensity/checkpoint.pt", ["checkpoint.pt", "convert-legacy"],
                 id="train-legacy-checkpoint.pt"),
    pytest.param("train", "intensity/model.pt", ["model.pt", "convert-legacy"],
                 id="train-legacy-model.pt"),
    pytest.param("train", "intensity/checkpoint.safetensors", ["checkpoint.safetensors", "not a polar_detect"],
                 id="train-pickle-renamed-checkpoint"),
    pytest.param("train", "intensity/model.safetensors", ["model.safetensors", "not a polar_detect"],
                 id="train-pickle-renamed-model"),
]


@pytest.mark.parametrize("cmd, slot, expect", SLOTS)
def test_pickle_in_a_model_slot_is_refused_unexecuted(trained, tmp_path, capsys, cmd, slot, expect):
    data, model = trained
    marker = tmp_path / "PWNED"
    mdir = copy_model(model, tmp_path / "m")
    for p in (mdir / "intensity").iterdir():       # leave only the trap in the slots
        if p.suffix in (".safetensors", ".pt"):
            p.unlink()
    write_trap(mdir / slot, marker)
    before = snapshot(tmp_path)
    if cmd == "predict":
        rc = main(["predict", "--model", str(mdir), "--data", str(data), "--out", str(tmp_path / "pred")])
    else:
        rc = main(["train", "--data", str(data), "--inputs", "R", "--out", str(mdir), *TRAIN_FAST])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not marker.exists(), "the pickle was executed"
    for s in expect:
        assert s in err, (s, err)
    assert snapshot(tmp_path) == before                      # nothing written, nothing lost


# ------------------------------------------------------------------ stale state


# ------------------------------------------------------------------ round trip
def test_save_load_round_trip_is_bit_identical(tmp_path):
    sets = {"intensity": SyntheticDataset(4, 32, 3, seed=1), "aolp": SyntheticDataset(4, 32, 2, seed=2)}
    pol = train_polar(lambda k: sets[k], "R+phi", tmp_path, preset("small", epochs=1, **TINY), progress=False)
    loaded = PolarDRAEM.load(tmp_path)
    x = {k: torch.stack([sets[k][i]["image"] for i in range(4)]) for k in sets}
    for k in sets:
        a, b = pol.models[k].state_dict(), loaded.models[k].state_dict()
        assert all(torch.equal(a[n], b[n]) and a[n].dtype == b[n].dtype for n in a)
    (ma, sa), (mb, sb) = pol.predict(x), loaded.predict(x)
    assert torch.equal(ma, mb) and torch.equal(sa, sb)
    assert not any(p.suffix == ".pt" for p in tmp_path.rglob("*"))


# ------------------------------------------------------------------ batch of one


# ------------------------------------------------------------------ non-finite


def test_nan_weights_are_refused(trained, tmp_path, capsys):
    data, model = trained
    mdir = copy_model(model, tmp_path / "m")
    path = mdir / "intensity" / FINAL
    tensors, meta = store.read(path, store.MODEL_FORMAT)
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key].view(-1)[0] = float("nan")
    store.write(path, tensors, meta)
    rc = main(["predict", "--model", str(mdir), "--data", str(data), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and key in err and "non-finite" in err and not (tmp_path / "p").exists()


def test_torch_load_only_behind_explicit_trust():
    """Loading never unpickles model files: torch.load is left only in the opt-in legacy
    converter and in features.py's reader of the shipped ImageNet weights (installed
    package / torch.hub cache); grep the whole package."""
    import pathlib
    import re

    import polar_detect
    root = pathlib.Path(polar_detect.__file__).parent
    hits = {str(p.relative_to(root)): len(re.findall(r"torch\.load\(|pickle\.loads?\(|import pickle", p.read_text()))
            for p in root.rglob("*.py")}
    assert {k: v for k, v in hits.items() if v} == {"models/draem/legacy.py": 1, "backbones.py": 1}
