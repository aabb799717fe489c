"""MVTec LOCO AD import (polar_detect.dataset.loco): regions kept one mask each with their
saturation settings, merged mask = union, bad region values refused; ``saturation_px`` and
``read_defects_config``."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from polar_detect.dataset.__main__ import main as cli
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.loco import read_defects_config, saturation_px
from polar_detect.dataset.manifest import read_manifest, verify

from tests.detect.dataset.source_folders import _write


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


def test_saturation_px_relative_absolute_and_capped():
    assert saturation_px({"saturation_threshold": 0.25, "relative_saturation": True}, 200) == 50.0
    assert saturation_px({"saturation_threshold": 60, "relative_saturation": False}, 200) == 60.0
    assert saturation_px({"saturation_threshold": 500, "relative_saturation": False}, 200) == 200.0
    assert saturation_px({"saturation_threshold": 1.5, "relative_saturation": True}, 200) == 200.0


def test_read_defects_config_list_or_object_and_refusals(tmp_path):
    entry = {"defect_name": "x", "pixel_value": "7", "saturation_threshold": "0.5", "relative_saturation": 1}
    p = tmp_path / "defects_config.json"
    p.write_text(json.dumps([entry]))
    want = {7: {"defect_name": "x", "saturation_threshold": 0.5, "relative_saturation": True}}
    assert read_defects_config(p) == want
    p.write_text(json.dumps({"defects": [entry]}))
    assert read_defects_config(p) == want
    p.write_text(json.dumps([{"defect_name": "x", "pixel_value": 7}]))
    with pytest.raises(DatasetError, match="defects_config.json: entry .* lacks"):
        read_defects_config(p)
    with pytest.raises(DatasetError, match="missing"):
        read_defects_config(tmp_path / "none.json")
