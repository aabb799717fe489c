"""LOCO layout (polar_detect.models.ensemble.loco_layout): loco-layout -> dataset import-loco -> evaluate reports AU-sPRO."""
import json

import numpy as np
import pytest
import tifffile

from polar_detect.dataset.__main__ import main as dataset_main
from polar_detect.evaluation.evaluate import main as evaluate_main
from polar_detect.models.ensemble.__main__ import main

from tests.detect.fake_render import anomaly, make_render



def test_loco_layout_import_and_spro(tmp_path, capsys):
    specs = [[]] * 7 + [[anomaly(1, "dent", (6, 6, 12, 12))],
                        [anomaly(1, "missing", (14, 8, 26, 16)), anomaly(2, "water_stain", (5, 14, 9, 18))],
                        [anomaly(1, "scratch", (8, 5, 20, 8))], [anomaly(1, "missing", (10, 10, 20, 18))], [], []]
    make_render(tmp_path / "render", specs, seed=3)
    assert dataset_main(["build", "--render", str(tmp_path / "render"), "--out", str(tmp_path / "data"),
                         "--train-ratio", "0.6", "--val-fraction", "0.3", "--seed", "0", "--no-progress"]) == 0
    loco = tmp_path / "loco"
    assert main(["loco-layout", "--data", str(tmp_path / "data"), "--out", str(loco), "--modality", "dolp",
                 "--quiet"]) == 0
    files = sorted(str(p.relative_to(loco)) for p in loco.rglob("*.png"))
    assert "test/logical_anomalies/000008.png" in files and "test/structural_anomalies/000009.png" in files
    assert "ground_truth/logical_anomalies/000008/001.png" in files          # missing + water stain: 2 regions
    assert not any("000007" in f for f in files)                              # the val anomaly is left out
    assert "validation/good/000012.png" in files
    cfg = {e["defect_name"]: e for e in json.loads((loco / "defects_config.json").read_text())}
    assert cfg["missing"]["saturation_threshold"] == 0.5 and cfg["scratch"]["saturation_threshold"] == 1.0
    assert dataset_main(["import-loco", "--src", str(loco), "--out", str(tmp_path / "ld"), "--no-progress"]) == 0
    man = json.loads((tmp_path / "ld" / "manifest.json").read_text())
    s8 = next(s for s in man["samples"] if s["id"].endswith("000008"))
    assert sorted(i["class"] for i in s8["instances"]) == ["missing", "water_stain"]
    assert all(i["region_mask"] and i["saturation_px"] > 0 for i in s8["instances"])
    # a perfect detector (map = mask) through evaluate: AU-sPRO is reported, and is 1
    pred = tmp_path / "pred"
    (pred / "maps").mkdir(parents=True)
    scores, maps = {}, {}
    from PIL import Image
    for s in man["samples"]:
        if s["split"] != "test":
            continue
        m = np.zeros(tuple(s["size"]), np.float32) if not s["mask"] else \
            (np.asarray(Image.open(tmp_path / "ld" / s["mask"])) > 0).astype(np.float32)
        tifffile.imwrite(pred / "maps" / f"{s['id']}.tiff", m)
        scores[s["id"]], maps[s["id"]] = float(m.max()), f"maps/{s['id']}.tiff"
    (pred / "predictions.json").write_text(json.dumps({"model": "oracle", "dataset": str(tmp_path / "ld" / "manifest.json"),
                                                       "split": "test", "threshold": None, "scores": scores, "maps": maps}))
    assert evaluate_main(["--pred", str(pred), "--data", str(tmp_path / "ld"), "--out", str(tmp_path / "ev"),
                          "--no-report", "--bootstrap", "10"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["spro"]["value"] == pytest.approx(1.0)
    assert metrics["image"]["auroc"] == pytest.approx(1.0)
