"""Feature-level ensemble end to end at toy size.

* One source equals the single model: ``ensemble train --source lite0:s8+s16`` and
  ``simplenet train`` (same options, same seed; PCA keeping all channels, the default, and
  a reduced PCA) give bitwise identical maps and scores -- the ensemble's source handling,
  resizing, balancing (one source: one global factor), PCA and training glue reduce exactly
  to SimpleNet's. A different seed gives different maps (the equality is not vacuous).
* Heterogeneous sources (Lite0/1 backbones, a trained DRÆM's encoder, a PatchCore's
  distance map) train, predict and export to ONNX (equal to torch).
* The output-level baseline (``ensemble average``) and ``merge`` on real predictions.
* ``loco-layout`` -> ``dataset import-loco`` -> ``evaluate`` reports AU-sPRO.
"""
import json
import shutil
import sys

import numpy as np
import pytest
import tifffile
import torch

from polar_detect.dataset.__main__ import main as dataset_main
from polar_detect.ensemble.__main__ import main
from polar_detect.evaluate import main as evaluate_main
from polar_detect.simplenet.__main__ import main as simplenet_main

from .draem_tiny import dataset, train_model
from .fake_render import anomaly, make_render
from .simplenet_tiny import FAST, one_thread


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny dataset (two test normals moved to val, for the output-level average), a DRÆM and
    a Sequential PatchCore trained on it."""
    from polar_detect.patchcore.__main__ import main as patchcore_main
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


def _maps(pred):
    p = json.loads((pred / "predictions.json").read_text())
    return p["scores"], {k: tifffile.imread(pred / v) for k, v in p["maps"].items()}


@pytest.mark.parametrize("pca", ["all", "24"])
def test_one_source_ensemble_equals_simplenet(tiny, tmp_path, pca):
    data, _, _ = tiny
    opts = [*FAST, "--pca-dim", pca]

    def run():
        assert simplenet_main(["train", "--data", str(data), "--out", str(tmp_path / "sn"), *opts]) == 0
        assert main(["train", "--data", str(data), "--out", str(tmp_path / "ens"), "--source", "lite0:s8+s16",
                     *opts]) == 0
        assert main(["train", "--data", str(data), "--out", str(tmp_path / "ens_seed"), "--source", "lite0",
                     *opts, "--seed", "1"]) == 0
        for name in ("sn", "ens", "ens_seed"):
            assert main(["predict", "--model", str(tmp_path / name), "--data", str(data), "--split", "test,val",
                         "--out", str(tmp_path / f"{name}_pred"), "--quiet"]) == 0
    one_thread(run)
    s1, m1 = _maps(tmp_path / "sn_pred")
    s2, m2 = _maps(tmp_path / "ens_pred")
    s3, m3 = _maps(tmp_path / "ens_seed_pred")
    assert s1 == s2
    assert all(np.array_equal(m1[k], m2[k]) for k in m1)
    assert any(not np.allclose(m1[k], m3[k]) for k in m1)


def test_heterogeneous_sources_train_predict_export(tiny, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from polar_detect.simplenet import store
    from polar_detect.simplenet.export import verify
    data, draem, pc = tiny
    srcs = ["--source", "lite0:s8", "--source", "lite1:s8+s16", "--source", f"draem:{draem}@s4",
            "--source", f"patchcore:{pc}"]
    assert one_thread(lambda: main(["train", "--data", str(data), "--out", str(tmp_path / "ens"), *srcs, *FAST,
                                    "--pca-dim", "16"])) == 0
    assert "4 source(s), 257 -> 16 channels" in capsys.readouterr().out     # 40 + 152 + 64 (DRÆM s4: 4 x 16) + 1
    net, meta = store.load_model(tmp_path / "ens")
    assert [s["kind"] for s in meta["detector"]["sources"]] == ["backbone", "backbone", "draem", "patchcore"]
    assert meta["detector"]["transform"]["source_channels"] == [40, 152, 64, 1]
    assert main(["predict", "--model", str(tmp_path / "ens"), "--data", str(data), "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    assert main(["export", "--model", str(tmp_path / "ens"), "--out", str(tmp_path / "e.onnx"),
                 "--size", "56x40"]) == 0
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    r = verify(tmp_path / "e.onnx", net, x)
    tol = 2e-5 * max(1.0, r["map_range"])          # float32 rounding at the maps' magnitude
    assert r["max_abs_diff_map"] <= tol and r["max_abs_diff_score"] <= tol, r


def test_patchcore_source_is_the_patchcore_distance(tiny):
    """The PatchCore channel equals PatchCore's own nearest-neighbour distances (``center="none"``),
    minus each image's median distance by default."""
    from polar_detect.ensemble.sources import PatchCoreSource
    from polar_detect.patchcore import load_model
    data, _, pc = tiny
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    model = load_model(pc)
    f = model.patch_features(model.encode(x))
    want = model.nn_distance(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])).reshape(2, 1, *f.shape[-2:])
    with torch.no_grad():
        assert torch.allclose(PatchCoreSource.from_model_file(pc, center="none")(x), want, atol=1e-4)
        med = want.flatten(1).median(1).values.view(2, 1, 1, 1)
        assert torch.allclose(PatchCoreSource.from_model_file(pc)(x), want - med, atol=1e-4)


def test_draem_source_is_the_draem_encoder(tiny):
    from polar_detect.draem.polar import PolarDRAEM
    from polar_detect.ensemble.sources import DraemSource
    data, draem, _ = tiny
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    src = DraemSource.from_model_dir(draem, "intensity", "s16")
    net = PolarDRAEM.load(draem, "cpu", ["intensity"]).models["intensity"].eval()
    xs = torch.nn.functional.interpolate(x, size=src.size, mode="bilinear", align_corners=False)  # scale 1, offset 0
    with torch.no_grad():
        assert torch.equal(src(x), net.reconstructive.encoder(xs))


def test_output_level_average_and_merge(tiny, tmp_path, capsys):
    from polar_detect.draem.__main__ import main as draem_main
    data, draem, _ = tiny

    def run():
        from .simplenet_tiny import train_simplenet
        train_simplenet(data, tmp_path / "sn")
    one_thread(run)
    assert simplenet_main(["predict", "--model", str(tmp_path / "sn"), "--data", str(data), "--split", "test,val",
                           "--out", str(tmp_path / "p_sn"), "--quiet"]) == 0
    for split in ("test", "val"):
        assert draem_main(["predict", "--model", str(draem), "--data", str(data), "--split", split,
                           "--out", str(tmp_path / f"p_d_{split}"), "--no-overlay"]) == 0
    assert main(["merge", "--pred", str(tmp_path / "p_d_test"), "--pred", str(tmp_path / "p_d_val"),
                 "--out", str(tmp_path / "p_d")]) == 0
    merged = json.loads((tmp_path / "p_d" / "predictions.json").read_text())
    assert merged["split"] == "test" and len(merged["scores"]) == 4
    assert main(["average", "--pred", str(tmp_path / "p_sn"), "--pred", str(tmp_path / "p_d"),
                 "--out", str(tmp_path / "avg"), "--score", "mean", "--quiet"]) == 0
    avg = json.loads((tmp_path / "avg" / "predictions.json").read_text())
    st = [i["stats"] for i in avg["average"]["inputs"]]
    _, sn_maps = _maps(tmp_path / "p_sn")
    _, d_maps = _maps(tmp_path / "p_d")
    _, a_maps = _maps(tmp_path / "avg")
    sid = "000009"   # the anomalous test sample: map = mean of the two z-scored maps
    want = ((sn_maps[sid] - st[0]["mean"]) / st[0]["std"] + (d_maps[sid] - st[1]["mean"]) / st[1]["std"]) / 2
    np.testing.assert_allclose(a_maps[sid], want, rtol=1e-5, atol=1e-5)


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


def test_timed_logs_seconds_and_throughput(tiny, tmp_path, capsys):
    data, _, _ = tiny
    log = tmp_path / "timing.json"
    pred = tmp_path / "p"
    model = tmp_path / "sn"
    one_thread(lambda: simplenet_main(["train", "--data", str(data), "--out", str(model), *FAST]))
    assert main(["timed", "--log", str(log), "--name", "sn_predict", "--pred", str(pred), "--",
                 "python", "-m", "polar_detect.simplenet", "predict", "--model", str(model), "--data", str(data),
                 "--out", str(pred), "--quiet"]) == 0
    rec = json.loads(log.read_text())["sn_predict"]
    assert rec["images"] == 2 and rec["seconds"] > 0 and rec["images_per_s"] == pytest.approx(2 / rec["seconds"], rel=1e-2)
    assert main(["timed", "--log", str(log), "--name", "fails", "--", sys.executable, "-c",
                 "import sys; sys.exit(3)"]) == 3
    assert "fails" not in json.loads(log.read_text())
