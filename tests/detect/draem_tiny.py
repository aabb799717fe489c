"""Helpers shared by the DRÆM safety tests and the DRÆM bad-input corpus: a tiny contract
dataset, a trained tiny model, a booby-trapped pickle, and a tree snapshot."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import tifffile
import torch

from polar_detect.models.draem.__main__ import main

from tests.tree import snapshot

#: Fast training: 16/8-wide networks, 32x32, one epoch, batches of 2.
TRAIN_FAST = ["--preset", "small", "--epochs", "1", "--size", "32", "--batch-size", "2"]


def dataset(root: Path, n_train: int = 4, n_test: int = 2, h: int = 40, w: int = 56,
            seed: int = 0, aolp: bool = False, n_anomalous: int = 1) -> Path:
    """Contract dataset with an ``intensity`` modality (3-channel float32 TIFF) and, with
    ``aolp``, an ``aolp`` modality (cos/sin 2phi of a random angle field); the last
    ``n_anomalous`` test samples are anomalous (bright square + mask). No sha256 entries
    (hand-written)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_train + n_test):
        sid = f"{i:06d}"
        d = root / "samples" / sid
        d.mkdir(parents=True)
        img = rng.uniform(0.3, 0.6, (h, w, 3)).astype(np.float32)
        files = {"intensity": f"samples/{sid}/intensity.tiff"}
        if aolp:
            phi = rng.uniform(-1.5, 1.5, (h, w)).astype(np.float32)
            tifffile.imwrite(d / "aolp.tiff", np.stack([np.cos(2 * phi), np.sin(2 * phi)], -1).astype(np.float32),
                             photometric="minisblack", planarconfig="contig")
            files["aolp"] = f"samples/{sid}/aolp.tiff"
        label = int(i >= n_train + n_test - n_anomalous)
        mask_rel = None
        if label:
            img[10:20, 10:20] = 1.0
            mk = np.zeros((h, w), np.uint8)
            mk[10:20, 10:20] = 255
            Image.fromarray(mk).save(d / "mask.png")
            mask_rel = f"samples/{sid}/mask.png"
        tifffile.imwrite(d / "intensity.tiff", img, photometric="rgb")
        samples.append({"id": sid, "split": "train" if i < n_train else "test", "label": label,
                        "classes": ["dent"] if label else [], "source": "test", "files": files,
                        "mask": mask_rel, "instance_mask": None, "instances": [], "sha256": {}})
    mods = {"intensity": {"channels": 3, "encoding": "float32 tiff", "normalisation": "x",
                          "scale": 1.0, "offset": 0.0}}
    if aolp:
        mods["aolp"] = {"channels": 2, "encoding": "cos/sin 2phi", "normalisation": "x", "scale": 1.0, "offset": 0.0}
    (root / "manifest.json").write_text(json.dumps(
        {"format": "polar_detect.dataset/1", "name": "tiny", "seed": 0, "modalities": mods,
         "classes": {"dent": "defect"}, "samples": samples}))
    return root


def trained_tiny(root: Path) -> tuple[Path, Path]:
    """(dataset dir, trained intensity model dir) under ``root``, trained with one torch thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = dataset(root / "data")
        return data, train_model(data, root / "model")
    finally:
        torch.set_num_threads(n)


def train_model(data: Path, out: Path, *extra: str) -> Path:
    """``draem train`` (intensity, :data:`TRAIN_FAST`); asserts exit 0."""
    rc = main(["train", "--data", str(data), "--inputs", "R", "--out", str(out), *TRAIN_FAST, *extra])
    assert rc == 0
    return out


def rewrite_image(data: Path, sid: str, value: float) -> Path:
    """Overwrite sample ``sid``'s intensity image with a constant (same size)."""
    p = data / "samples" / sid / "intensity.tiff"
    img = tifffile.imread(p)
    tifffile.imwrite(p, np.full_like(img, value), photometric="rgb")
    return p


class Trap:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): proof that a loader ran
    code from a model file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_trap(path: Path, marker: Path) -> Path:
    """A ``torch.save`` file shaped like an old DRÆM model.pt, with a :class:`Trap` inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": {"channels": 3, "recon_width": 16, "disc_width": 8},
                "state_dict": {}, "meta": Trap(marker)}, path)
    return path


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


#: Tiny DRÆM networks for the Python-API training tests (``preset("small", **TINY)``).
TINY = dict(recon_width=4, disc_width=4, batch_size=2, lr=1e-3)


class CorpusCopy:
    """Fresh copies of a dataset and a trained model under ``tmp`` for one bad-input case
    (the case may damage them), and the file a planted pickle would create if it ran."""

    def __init__(self, tmp: Path, data: Path, model: Path):
        self.tmp = tmp
        self.data = Path(shutil.copytree(data, tmp / "data"))
        self.model = Path(shutil.copytree(model, tmp / "model"))
        self.marker = tmp / "PWNED"


def assert_refused(run, root: Path, capsys, expect, marker: Path) -> None:
    """``run()`` (a CLI call) exits 2 with one ``error:`` line holding every string of
    ``expect``, no traceback, nothing under ``root`` written or lost, and no pickle ran."""
    before = snapshot(root)
    capsys.readouterr()
    rc = run()
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for s in expect:
        assert s in lines[0], (s, lines[0])
    assert snapshot(root) == before
    assert not marker.exists()
