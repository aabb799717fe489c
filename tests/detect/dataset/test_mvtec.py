"""MVTec AD export (read back by an independent reader) and MVTec AD import (issue 4)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from polar_detect.dataset.torch_dataset import PolarDataset
from polar_detect.dataset.__main__ import main as cli
from polar_detect.dataset.build import build_from_renders
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.manifest import read_manifest, verify
from polar_detect.dataset.mvtec import export_mvtec, import_mvtec

from tests.detect.dataset.real_render import render_dir
from tests.detect.dataset.source_folders import _write


def read_mvtec_category(root: Path) -> list[dict]:
    """Independent reader of the published MVTec AD layout (PIL only, as anomalib's Folder/MVTec
    datamodules): train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png."""
    items = []
    for img in sorted((root / "train" / "good").glob("*.png")):
        items.append({"split": "train", "defect": "good", "stem": img.stem, "label": 0,
                      "image": np.asarray(Image.open(img).convert("RGB")), "mask": None})
    for d in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        for img in sorted(d.glob("*.png")):
            im = np.asarray(Image.open(img).convert("RGB"))
            mask = None
            if d.name != "good":
                mp = root / "ground_truth" / d.name / f"{img.stem}_mask.png"
                assert mp.is_file(), mp
                mask = np.asarray(Image.open(mp).convert("L"))
                assert mask.shape == im.shape[:2] and set(np.unique(mask)) <= {0, 255}
            items.append({"split": "test", "defect": d.name, "stem": img.stem, "label": int(d.name != "good"),
                          "image": im, "mask": mask})
    return items


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("mv") / "usb_brick"
    build_from_renders([render_dir(tmp_path_factory)], out, "intensity,dolp,aolp,normals,stokes", progress=False)
    return out


def test_export_read_back_by_independent_reader(data, tmp_path, capsys):
    m = read_manifest(data)
    out = tmp_path / "mvtec"
    assert cli(["export-mvtec", "--data", str(data), "--out", str(out), "--modalities", "stokes"]) == 2
    assert "stokes" in capsys.readouterr().err and not out.exists()
    assert cli(["export-mvtec", "--data", str(data), "--out", str(out), "--modalities", "intensity,dolp,aolp,normals",
                "--no-progress"]) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["modalities"]["intensity"]["scale"] == m["modalities"]["intensity"]["scale"]
    by_id = {s["id"]: s for s in m["samples"]}
    for mod in ("intensity", "dolp", "aolp", "normals"):
        items = read_mvtec_category(out / mod / "usb_brick")
        got = {(it["split"], it["stem"], it["label"]) for it in items}
        want = {(s["split"], s["id"], s["label"]) for s in m["samples"] if s["split"] != "val"}
        assert got == want, mod
        for it in items:
            s = by_id[it["stem"]]
            if it["label"]:
                want_defect = s["classes"][0] if len(s["classes"]) == 1 else "combined"
                assert it["defect"] == want_defect
                gt = cv2.imread(str(data / s["mask"]), cv2.IMREAD_UNCHANGED)
                assert np.array_equal(it["mask"] > 0, gt > 0)
            x = tifffile.imread(data / s["files"][mod])
            if mod == "dolp":
                assert np.array_equal(it["image"], np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8))
            if mod == "aolp":
                phi = 0.5 * np.arctan2(x[..., 3:], x[..., :3])
                assert np.abs(it["image"] / 255.0 * np.pi - np.pi / 2 - phi).max() <= np.pi / 255
    assert {it["defect"] for it in read_mvtec_category(out / "dolp" / "usb_brick")} >= {"good", "combined"}


def test_export_then_import_mvtec(data, tmp_path):
    export_mvtec(data, tmp_path / "mv", ["dolp"], progress=False)
    m0 = read_manifest(data)
    m, line = import_mvtec(tmp_path / "mv" / "dolp" / "usb_brick", tmp_path / "back", progress=False)
    assert verify(tmp_path / "back") == []
    assert sorted((s["split"], s["label"]) for s in m["samples"]) == \
        sorted((s["split"], s["label"]) for s in m0["samples"] if s["split"] != "val")
    assert m["modalities"]["intensity"]["scale"] == 255.0


def fake_mvtec(root: Path) -> Path:
    rng = np.random.default_rng(0)
    cat = root / "bottle"
    for k in range(3):
        _write(cat / "train/good" / f"{k:03d}.png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    _write(cat / "test/good/000.png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    for k in range(2):
        _write(cat / "test/crack" / f"{k:03d}.png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
        mask = np.zeros((32, 40), np.uint8)
        mask[2:6, 2:8] = 255
        if k == 1:
            mask[20:30, 30:38] = 255  # a second region
        _write(cat / "ground_truth/crack" / f"{k:03d}_mask.png", mask)
    return cat


def test_import_mvtec(tmp_path, capsys):
    cat = fake_mvtec(tmp_path / "src")
    assert cli(["import-mvtec", "--src", str(cat), "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    assert "6 images" in capsys.readouterr().out
    m = read_manifest(tmp_path / "d")
    assert m["classes"] == {"crack": "defect"}
    crack1 = next(s for s in m["samples"] if s["id"] == "test_crack_001")
    assert crack1["label"] == 1 and len(crack1["instances"]) == 2 and crack1["classes"] == ["crack"]
    ds = PolarDataset(tmp_path / "d", "all", ["intensity"], normalise=False)
    i = [s["id"] for s in ds.samples].index("test_crack_001")
    item = ds[i]
    bgr = cv2.imread(str(cat / "test/crack/001.png"))
    assert torch.equal(item["image"], torch.from_numpy(bgr[..., ::-1].transpose(2, 0, 1).astype(np.float32).copy()))
    assert item["mask"].sum() == 4 * 6 + 10 * 8 and item["instance_mask"].max() == 2
    # bad input: a missing mask, a mask of the wrong size
    (cat / "ground_truth/crack/000_mask.png").unlink()
    assert cli(["import-mvtec", "--src", str(cat), "--out", str(tmp_path / "e")]) == 2
    assert "ground_truth/crack/000_mask.png: missing" in capsys.readouterr().err
    _write(cat / "ground_truth/crack/000_mask.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match=r"mask is \(10, 10\)"):
        import_mvtec(cat, tmp_path / "e", progress=False)
    assert not (tmp_path / "e").exists()


