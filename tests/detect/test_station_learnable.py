"""Issue 13: on a toy station dataset (rendered here, a minute on 2 cores), Sequential
PatchCore beats the no-learning floor (the blurred object mask) inside the part."""
from __future__ import annotations

import json

import pytest

from polar_render.config.scenes import load_scene, write_scene_variant
from polar_render.run.request import RenderRequest
from polar_render.run.runner import run

RES = (240, 180)
STRUCTURAL = ("dent", "bump", "scratch", "chip")


def _scene(tmp_path, name, **dotted):
    return write_scene_variant(tmp_path / f"{name}.yaml", "usb_brick_station", dotted=dotted)


@pytest.mark.slow
def test_seq_patchcore_beats_blurred_mask_inside_the_part(tmp_path):
    from polar_detect.models.baseline.__main__ import main as baseline
    from polar_detect.dataset.__main__ import main as dataset
    from polar_detect.evaluation.evaluate import evaluate
    from polar_detect.models.patchcore.__main__ import main as patchcore

    classes = load_scene("usb_brick_station").anomalies["classes"]
    train_scene = _scene(tmp_path, "train", **{"anomalies.probability": 0})
    test_scene = _scene(tmp_path, "test", **{"anomalies.probability": 0.7, "anomalies.min_visible_px": 20,
                                               "anomalies.classes": {c: classes[c] for c in STRUCTURAL}})
    for scene, out, n, seed in ((train_scene, "r_train", 24, 0), (test_scene, "r_test", 20, 1000)):
        s = run(RenderRequest(scene=scene, out=tmp_path / out, n=n, res=RES, spp=16, seed=seed, progress=False))
        assert not s.failed, s.failed
    d = str(tmp_path)
    common = ["--modalities", "dolp", "--overwrite", "--no-progress"]
    assert dataset(["build", "--render", f"{d}/r_train:train", "--out", f"{d}/train", *common]) == 0
    assert dataset(["build", "--render", f"{d}/r_test:eval", "--val-fraction", "0.3", "--norm-from",
                    f"{d}/train", "--out", f"{d}/test", *common]) == 0
    assert patchcore(["train", "--data", f"{d}/train", "--modality", "dolp", "--method", "sequential",
                      "--coreset-size", "800", "--epochs", "2", "--quiet", "--out", f"{d}/m.safetensors"]) in (0, None)
    assert patchcore(["predict", "--model", f"{d}/m.safetensors", "--data", f"{d}/test", "--split", "test,val",
                      "--quiet", "--out", f"{d}/p_seq"]) in (0, None)
    assert baseline(["predict", "--data", f"{d}/test", "--split", "test,val", "--out", f"{d}/p_base"]) == 0
    seq = evaluate(f"{d}/p_seq", f"{d}/test", f"{d}/e_seq", report=False, quiet=True, n_bootstrap=0)
    base = evaluate(f"{d}/p_base", f"{d}/test", f"{d}/e_base", report=False, quiet=True, n_bootstrap=0)
    inside_seq, inside_base = seq["pixel_part"]["auroc"], base["pixel_part"]["auroc"]
    print(json.dumps({"seq_pixel_auroc_part": inside_seq, "baseline_pixel_auroc_part": inside_base}))
    assert seq["pixel_part"]["n_pos"] > 500                  # enough defect pixels to mean something
    assert inside_seq > inside_base + 0.1, (inside_seq, inside_base)   # measured: 0.68 vs 0.50
