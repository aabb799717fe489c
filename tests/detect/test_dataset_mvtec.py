"""MVTec AD export (read back by an independent reader), MVTec AD and LOCO AD import (issue 4)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from polar_detect.data import PolarDataset
from polar_detect.dataset.__main__ import main as cli
from polar_detect.dataset.build import build_from_renders
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.manifest import read_manifest, verify
from polar_detect.dataset.mvtec import export_mvtec, import_mvtec

from .test_dataset import render_dir


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


def _write(path: Path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)


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


def fake_loco(root: Path) -> Path:
    cat = root / "breakfast_box"
    img = lambda: np.full((24, 32, 3), 128, np.uint8)  # noqa: E731
    for k in range(2):
        _write(cat / "train/good" / f"{k:03d}.png", img())
    _write(cat / "validation/good/000.png", img())
    _write(cat / "test/good/000.png", img())
    _write(cat / "test/logical_anomalies/000.png", img())
    _write(cat / "test/structural_anomalies/000.png", img())
    r0 = np.zeros((24, 32), np.uint8)
    r0[0:10, 0:10] = 255
    r1 = np.zeros((24, 32), np.uint8)
    r1[5:15, 5:20] = 254  # overlaps region 0
    r2 = np.zeros((24, 32), np.uint8)
    r2[20:24, 0:32] = 253
    _write(cat / "ground_truth/logical_anomalies/000/000.png", r0)
    _write(cat / "ground_truth/logical_anomalies/000/001.png", r1)
    _write(cat / "ground_truth/structural_anomalies/000/000.png", r2)
    config = [{"defect_name": "missing_almonds", "pixel_value": 255, "saturation_threshold": 0.5, "relative_saturation": True},
              {"defect_name": "extra_banana", "pixel_value": 254, "saturation_threshold": 60, "relative_saturation": False},
              {"defect_name": "scratch", "pixel_value": 253, "saturation_threshold": 1000, "relative_saturation": False}]
    (cat / "defects_config.json").write_text(json.dumps(config))
    return cat


def test_import_loco_keeps_regions_and_thresholds(tmp_path, capsys):
    cat = fake_loco(tmp_path / "src")
    assert cli(["import-loco", "--src", str(cat), "--out", str(tmp_path / "d"), "--no-progress"]) == 0
    m = read_manifest(tmp_path / "d")
    assert verify(tmp_path / "d") == []
    assert {s["split"] for s in m["samples"]} == {"train", "val", "test"}
    assert m["classes"] == {"extra_banana": "defect", "missing_almonds": "defect", "scratch": "defect"}
    logical = next(s for s in m["samples"] if s["id"] == "test_logical_anomalies_000")
    inst = {i["class"]: i for i in logical["instances"]}
    assert inst["missing_almonds"]["saturation_px"] == 0.5 * 100 and inst["missing_almonds"]["relative_saturation"]
    assert inst["extra_banana"]["saturation_px"] == 60 and inst["extra_banana"]["area_px"] == 150
    assert all(i["group"] == "logical_anomalies" for i in inst.values())
    # each region mask is kept exactly, overlap included
    r0 = cv2.imread(str(tmp_path / "d" / inst["missing_almonds"]["region_mask"]), cv2.IMREAD_UNCHANGED)
    r1 = cv2.imread(str(tmp_path / "d" / inst["extra_banana"]["region_mask"]), cv2.IMREAD_UNCHANGED)
    assert (r0 > 0).sum() == 100 and (r1 > 0).sum() == 150 and ((r0 > 0) & (r1 > 0)).sum() == 25
    # merged mask = union of the regions (for pixel metrics)
    merged = cv2.imread(str(tmp_path / "d" / logical["mask"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(merged > 0, (r0 > 0) | (r1 > 0))
    structural = next(s for s in m["samples"] if s["id"] == "test_structural_anomalies_000")
    assert structural["instances"][0]["saturation_px"] == 4 * 32  # absolute threshold capped at the area
    # a region value unknown to defects_config.json is refused, naming the file
    bad = np.zeros((24, 32), np.uint8)
    bad[0, 0] = 7
    _write(cat / "ground_truth/structural_anomalies/000/001.png", bad)
    assert cli(["import-loco", "--src", str(cat), "--out", str(tmp_path / "e")]) == 2
    assert "structural_anomalies/000/001.png: pixel values [7]" in capsys.readouterr().err
