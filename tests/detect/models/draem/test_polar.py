"""Polarimetric DRÆM (polar_detect.models.draem.polar): input parsing, mean of per-input predictions, save/load."""
import shutil

import pytest
import torch

from polar_detect.models.draem.__main__ import main
from polar_detect.models.draem.infer import predict
from polar_detect.models.draem.model import DRAEM
from polar_detect.models.draem.polar import PolarDRAEM, parse_inputs, train_polar
from polar_detect.models.draem.synthetic import SyntheticDataset
from polar_detect.models.draem.train import FINAL, preset

from tests.detect.draem_tiny import copy_model, train_model


pytestmark = pytest.mark.usefixtures("one_thread")


def test_polar_prediction_is_mean_of_inputs():
    torch.manual_seed(0)
    models = {"intensity": DRAEM(3, 4, 4).eval(), "aolp": DRAEM(2, 4, 4).eval(),
              "normals": DRAEM(3, 4, 4).eval()}
    for m in models.values():                       # make BN statistics non-trivial
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
    pol = PolarDRAEM(models, (32, 32))
    x = {"intensity": torch.rand(2, 3, 32, 32), "aolp": torch.rand(2, 2, 32, 32) * 2 - 1,
         "normals": torch.rand(2, 3, 32, 32)}
    maps, scores = pol.predict(x)
    each = [predict(m, x[k], (32, 32)) for k, m in models.items()]
    assert torch.allclose(maps, sum(e[0] for e in each) / 3, atol=1e-7)
    assert torch.allclose(scores, sum(e[1] for e in each) / 3, atol=1e-7)
    assert not torch.allclose(each[0][1], each[1][1])   # inputs really differ


def test_parse_inputs():
    # Polar-Ano's n is the learned normal (issue 18); ground truth is the explicit oracle
    assert parse_inputs("R+phi+rho+n") == ["intensity", "aolp", "dolp", "normals_learned"]
    assert parse_inputs("R+phi+rho+n_oracle") == ["intensity", "aolp", "dolp", "normals"]
    assert parse_inputs("intensity,aolp") == ["intensity", "aolp"]
    with pytest.raises(ValueError):
        parse_inputs("R+intensity")


def test_train_polar_roundtrip(tmp_path):
    sets = {"intensity": SyntheticDataset(4, 32, 3, seed=1),
            "dolp": SyntheticDataset(4, 32, 1, seed=2)}
    cfg = preset("small", recon_width=4, disc_width=4, epochs=1, batch_size=2)
    pol = train_polar(lambda k: sets[k], "R+rho", tmp_path, cfg, progress=False)
    loaded = PolarDRAEM.load(tmp_path)
    assert loaded.inputs == ["intensity", "dolp"] and loaded.size == (32, 32)
    x = {k: torch.stack([sets[k][i]["image"] for i in range(2)]) for k in sets}
    a, b = pol.predict(x), loaded.predict(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_inconsistent_model_directory_is_refused(trained, tmp_path, capsys):
    """A per-input model from another run (e.g. a --restart interrupted before draem.json
    was rewritten) does not silently join the ensemble."""
    data, model = trained
    mdir = copy_model(model, tmp_path / "m")
    other = train_model(data, tmp_path / "o", "--seed", "7")
    shutil.copy(other / "intensity" / FINAL, mdir / "intensity" / FINAL)
    rc = main(["predict", "--model", str(mdir), "--data", str(data), "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and "is not the model" in err and not (tmp_path / "p").exists()
