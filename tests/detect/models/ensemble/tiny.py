"""The tiny ensemble inputs shared by the ensemble tests: a DRÆM-tiny dataset with its first
two test normals moved to val (the output-level average standardises on val normals), and a
DRÆM and a Sequential PatchCore trained on it."""
import json
from pathlib import Path

from polar_detect.models.patchcore.__main__ import main as patchcore_main

from tests.detect.draem_tiny import dataset, train_model
from tests.detect.simplenet_tiny import one_thread


def draem_and_patchcore(root: Path, n_train: int, n_test: int, coreset_size: int) -> Path:
    """``root/data`` (samples ``n_train`` and ``n_train + 1`` in val), ``root/draem`` and
    ``root/pc.safetensors``, trained with one torch thread; returns the dataset directory."""
    data = dataset(root / "data", n_train=n_train, n_test=n_test)
    m = json.loads((data / "manifest.json").read_text())
    for i in (n_train, n_train + 1):
        m["samples"][i]["split"] = "val"
    (data / "manifest.json").write_text(json.dumps(m))

    def build():
        train_model(data, root / "draem")
        assert patchcore_main(["train", "--data", str(data), "--out", str(root / "pc.safetensors"),
                               "--coreset-size", str(coreset_size), "--quiet"]) == 0
    one_thread(build)
    return data
