"""Fixtures shared by the feature-ensemble tests."""
import json

import pytest

from tests.detect.draem_tiny import dataset, train_model
from tests.detect.simplenet_tiny import one_thread


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny dataset (two test normals moved to val, for the output-level average), a DRÆM and
    a Sequential PatchCore trained on it."""
    from polar_detect.models.patchcore.__main__ import main as patchcore_main
    root = tmp_path_factory.mktemp("ensemble")
    data = dataset(root / "data", n_train=6, n_test=4)
    m = json.loads((data / "manifest.json").read_text())
    for i in (6, 7):
        m["samples"][i]["split"] = "val"
    (data / "manifest.json").write_text(json.dumps(m))

    def build():
        train_model(data, root / "draem")
        assert patchcore_main(["train", "--data", str(data), "--out", str(root / "pc.safetensors"),
                               "--coreset-size", "40", "--quiet"]) == 0
    one_thread(build)
    return data, root / "draem", root / "pc.safetensors"
