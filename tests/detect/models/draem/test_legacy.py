"""Legacy pickled DRÆM models (polar_detect.models.draem.legacy): convert-legacy refuses traps, converts faithfully."""
import json

import pytest
import torch

from polar_detect.models.draem.__main__ import main
from polar_detect.models.draem.train import FINAL, read_model

from tests.detect.draem_tiny import TRAIN_FAST, write_trap


pytestmark = pytest.mark.usefixtures("one_thread")


def test_convert_legacy_refuses_trap_even_when_trusted(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    old = tmp_path / "old"
    write_trap(old / "intensity" / "model.pt", marker)
    (old / "draem.json").write_text(json.dumps({"model": "draem", "inputs": ["intensity"], "size": [32, 32]}))
    for extra in ([], ["--trust-pickle"]):
        rc = main(["convert-legacy", str(old), str(tmp_path / "new"), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and not marker.exists() and not (tmp_path / "new").exists(), err
        assert ("--trust-pickle" in err) if not extra else ("model.pt" in err and "Unsupported global" in err)


def test_convert_legacy_round_trip(trained, tmp_path, capsys):
    """A directory in the old pickled layout converts to one that predicts identically."""
    data, model = trained
    old = tmp_path / "old"
    (old / "intensity").mkdir(parents=True)
    net, meta = read_model(model / "intensity" / FINAL)
    torch.save({"model_config": net.config(), "state_dict": net.state_dict(), "meta": meta["meta"]},
               old / "intensity" / "model.pt")
    cfg = json.loads((model / "draem.json").read_text())
    cfg.pop("models")
    (old / "draem.json").write_text(json.dumps(cfg))
    assert main(["predict", "--model", str(old), "--data", str(data), "--out", str(tmp_path / "p0")]) == 2
    assert "convert-legacy" in capsys.readouterr().err
    assert main(["convert-legacy", str(old), str(tmp_path / "new"), "--trust-pickle"]) == 0
    for m, p in ((model, "p1"), (tmp_path / "new", "p2")):
        assert main(["predict", "--model", str(m), "--data", str(data), "--no-overlay",
                     "--out", str(tmp_path / p)]) == 0
    a, b = (json.loads((tmp_path / p / "predictions.json").read_text()) for p in ("p1", "p2"))
    assert a["scores"] == b["scores"]
    # a converted model records no run: training into it is refused, not "up to date"
    rc = main(["train", "--data", str(data), "--inputs", "R", "--out", str(tmp_path / "new"), *TRAIN_FAST])
    assert rc == 2 and "not recorded" in capsys.readouterr().err
