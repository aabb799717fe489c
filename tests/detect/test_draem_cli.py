"""``python -m polar_detect.draem train|predict`` on a tiny hand-written dataset."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("polar_detect.data")
tifffile = pytest.importorskip("tifffile")
from PIL import Image  # noqa: E402

from polar_detect.draem.__main__ import main  # noqa: E402


def _dataset(root, n_train=4, n_test=4, h=40, w=56):
    """Minimal contract-section-2 dataset: intensity (3 ch) + aolp (2 ch), 40x56."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n_train + n_test):
        sid = f"{i:06d}"
        d = root / "samples" / sid
        d.mkdir(parents=True)
        inten = rng.uniform(0.3, 0.6, (h, w, 3)).astype(np.float32)
        phi = rng.uniform(-1.5, 1.5, (h, w)).astype(np.float32)
        aolp = np.stack([np.cos(2 * phi), np.sin(2 * phi)], -1).astype(np.float32)
        label = int(i >= n_train + n_test // 2)
        mask_rel = None
        if label:
            inten[10:20, 10:20] = 1.0
            mk = np.zeros((h, w), np.uint8)
            mk[10:20, 10:20] = 255
            Image.fromarray(mk).save(d / "mask.png")
            mask_rel = f"samples/{sid}/mask.png"
        tifffile.imwrite(d / "intensity.tiff", inten, photometric="rgb")
        tifffile.imwrite(d / "aolp.tiff", aolp, photometric="minisblack", planarconfig="contig")
        samples.append({"id": sid, "split": "train" if i < n_train else "test", "label": label,
                        "classes": ["dent"] if label else [], "source": "test",
                        "files": {"intensity": f"samples/{sid}/intensity.tiff",
                                  "aolp": f"samples/{sid}/aolp.tiff"},
                        "mask": mask_rel, "instance_mask": None, "instances": [], "sha256": {}})
    mods = {"intensity": {"channels": 3, "encoding": "float32 tiff", "normalisation": "x",
                          "scale": 1.0, "offset": 0.0},
            "aolp": {"channels": 2, "encoding": "cos/sin 2phi", "normalisation": "x",
                     "scale": 1.0, "offset": 0.0}}
    (root / "manifest.json").write_text(json.dumps(
        {"format": "polar_detect.dataset/1", "name": "tiny", "seed": 0, "modalities": mods,
         "classes": {"dent": "defect"}, "samples": samples}))
    return root


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_train_then_predict(tmp_path):
    data = _dataset(tmp_path / "data")
    model = tmp_path / "model"
    rc = main(["train", "--data", str(data), "--inputs", "R+phi", "--out", str(model),
               "--preset", "small", "--epochs", "1", "--size", "32", "--batch-size", "2"])
    assert rc == 0
    cfg = json.loads((model / "draem.json").read_text())
    assert cfg["inputs"] == ["intensity", "aolp"] and cfg["size"] == [32, 32]
    tc = json.loads((model / "aolp" / "train_config.json").read_text())
    assert tc["ssim_max_val"] == 2.0 and tc["simulator"]["texture_range"] == [-1.0, 1.0]
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(model), "--data", str(data), "--split", "test",
                 "--out", str(pred)]) == 0
    p = json.loads((pred / "predictions.json").read_text())
    assert set(p) >= {"model", "dataset", "manifest_sha256", "split", "threshold", "scores",
                      "maps"}
    assert p["split"] == "test" and len(p["scores"]) == 4 and len(p["manifest_sha256"]) == 64
    for sid, rel in p["maps"].items():
        m = tifffile.imread(pred / rel)
        assert m.dtype == np.float32 and m.shape == (40, 56)      # dataset resolution
        assert (pred / "overlays" / f"{sid}.png").exists()
    # a subset of the trained inputs (Table II rows from one training run)
    assert main(["predict", "--model", str(model), "--data", str(data), "--inputs", "R",
                 "--out", str(tmp_path / "pred_r"), "--no-overlay"]) == 0
    pr = json.loads((tmp_path / "pred_r" / "predictions.json").read_text())
    assert pr["model"] == "draem:intensity" and pr["scores"] != p["scores"]
    assert main(["predict", "--model", str(model), "--data", str(data), "--inputs", "n",
                 "--out", str(tmp_path / "pred_n")]) == 2


def test_bad_input_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "m")])
    assert rc == 2 and "manifest.json" in capsys.readouterr().err
    rc = main(["predict", "--model", str(tmp_path / "nomodel"), "--data", str(tmp_path),
               "--out", str(tmp_path / "p")])
    assert rc == 2 and "nomodel" in capsys.readouterr().err
