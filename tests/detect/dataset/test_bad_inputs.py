"""Bad-input corpus for the detectors' data readers (issues 16, 20): datasets, render
samples, import folders, predictions.json and anomaly maps, driven through the real CLIs
(``python -m polar_detect.dataset``, ``polar_detect.models.patchcore train/predict``,
``polar_detect.evaluation.evaluate``, ``polar_detect.evaluation.average``, in process).

Every case asserts: exit code 2; the message names the file or the key and the problem;
nothing was written (no output, no staging leftovers); the inputs are unchanged.

Cross-cutting by design (one corpus over every reader and CLI), so it stays whole here, with
the dataset CLI (``dataset/__main__.py``) it mostly drives, rather than split by module.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from polar_detect.evaluation import evaluate as ev
from polar_detect.evaluation.average import main as average_main
from polar_detect.dataset.__main__ import main as dataset_main
from polar_detect.models.patchcore.__main__ import main as patchcore_main

from tests.detect import safety_data as sd

N = sd.H * sd.W
CLIS = {"dataset": dataset_main, "patchcore": patchcore_main, "evaluate": ev.main, "average": average_main}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Intact inputs, made once: render, dataset, predictions (twice), import sources, and a
    PatchCore model trained on the dataset (for the predict cases)."""
    import torch

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("corpus")
    rendered = sd.render(root / "render")
    data = sd.dataset(root / "data", rendered)
    model = root / "model.safetensors"
    assert patchcore_main(["train", "--data", str(data), "--out", str(model), "--coreset-size", "20",
                           "--quiet"]) == 0
    pred = sd.predictions(root / "pred", data)
    return {"render": rendered, "data": data, "pred": pred, "pred2": sd.predictions(root / "pred2", data, seed=1),
            "mvtec": sd.mvtec(root / "mvtec"), "loco": sd.loco(root / "loco"), "capture": sd.capture(root / "capture"),
            "model": model}


# ------------------------------------------------------------------ command lines
def TRAIN(w, out):
    return "patchcore", ["train", "--data", str(w["data"]), "--out", str(out), "--coreset-size", "20", "--quiet"]


def PREDICT(w, out):
    return "patchcore", ["predict", "--model", str(w["model"]), "--data", str(w["data"]), "--out", str(out),
                         "--split", "test,val", "--quiet"]


def EVAL(w, out):
    return "evaluate", ["--pred", str(w["pred"]), "--data", str(w["data"]), "--out", str(out), "--bootstrap", "0"]


def AVERAGE(w, out):
    return "average", ["--pred", str(w["pred"]), "--pred", str(w["pred2"]), "--out", str(out),
                       "--standardise", "none", "--quiet"]


def BUILD(w, out):
    return "dataset", ["build", "--render", str(w["render"]), "--out", str(out), "--modalities", "intensity,dolp",
                       "--no-progress"]


def IMPORT_MVTEC(w, out):
    return "dataset", ["import-mvtec", "--src", str(w["mvtec"]), "--out", str(out), "--no-progress"]


def IMPORT_LOCO(w, out):
    return "dataset", ["import-loco", "--src", str(w["loco"]), "--out", str(out), "--no-progress"]


def IMPORT_POLAR(w, out):
    return "dataset", ["import-polar", "--src", str(w["capture"] / "frames"), "--out", str(out),
                       "--masks", str(w["capture"] / "masks"), "--no-progress"]


def EXPORT(w, out):
    return "dataset", ["export-mvtec", "--data", str(w["data"]), "--out", str(out), "--modalities", "intensity,dolp",
                       "--no-progress"]


def VERIFY(w, out):
    return "dataset", ["verify", str(w["data"])]


NEEDS = {TRAIN: ("data",), PREDICT: ("data",), EVAL: ("data", "pred"), AVERAGE: ("pred", "pred2"),
         BUILD: ("render",), IMPORT_MVTEC: ("mvtec",), IMPORT_LOCO: ("loco",), IMPORT_POLAR: ("capture",),
         EXPORT: ("data",), VERIFY: ("data",)}


# ------------------------------------------------------------------ corruptions (each returns the expected substrings)
def _dataset_file(w, split, key="intensity", label=None):
    i, s = sd.sample(w["data"], split, label)
    rel = s["files"][key] if key in s["files"] else s[key]
    return i, s, rel


def manifest_path_attack(kind, split="train", key="intensity", label=None):
    def mutate(w, tmp):
        data = w["data"]
        i, s, rel = _dataset_file(w, split, key, label)
        field = f"files.{key}" if key in s["files"] else key
        if kind in ("symlink", "loop"):
            (sd.symlink_out(data / rel, tmp) if kind == "symlink" else sd.symlink_loop(data / rel))
        else:
            target = sd.outside_copy(data / rel, tmp)
            value = str(target) if kind == "absolute" else f"../{target.parent.name}/{target.name}"
            sd.edit_sample(data, split, lambda e: (e["files"] if key in e["files"] else e).update({key: value}), label)
        return [f"manifest.json: samples[{i}].{field}", "symlink loop" if kind == "loop" else "outside"]
    return mutate


def changed_file(split="train", key="intensity", label=None):
    def mutate(w, tmp):
        i, s, rel = _dataset_file(w, split, key, label)
        a = tifffile.imread(w["data"] / rel)
        a.flat[0] += 0.5
        sd.float_tiff(w["data"] / rel, a)
        return [rel, f"samples[{i}].files.{key}", "changed since the dataset was built", "rebuild"]
    return mutate


def non_finite(split="train", key="intensity", value=np.nan, consistent=True, n=3):
    """consistent: checksum recomputed and the manifest's integrity marker dropped (an older
    build); otherwise the file just changed."""
    def mutate(w, tmp):
        _, _, rel = _dataset_file(w, split, key)
        sd.poison(w["data"] / rel, value, n=n)
        if consistent:
            sd.rechecksum(w["data"], rel)
            sd.drop_integrity(w["data"])
            return [rel, f"{n} of {N} pixels hold NaN or infinite values"]
        return [rel, f"{n} of {N} pixels hold NaN or infinite values", "changed since the dataset was built"]
    return mutate


def bomb(split="train", key="intensity", label=None):
    def mutate(w, tmp):
        _, _, rel = _dataset_file(w, split, key, label)
        (sd.bomb_tiff if rel.endswith(".tiff") else sd.bomb_png)(w["data"] / rel)
        return [Path(rel).name, "100000x100000", "POLAR_MAX_IMAGE_PIXELS"]
    return mutate


def wrong_size(split="train", key="intensity", label=None):
    def mutate(w, tmp):
        i, s, rel = _dataset_file(w, split, key, label)
        p = w["data"] / rel
        if rel.endswith(".tiff"):
            sd.float_tiff(p, np.ones((sd.H // 2, sd.W // 2, 3)))
        else:
            import cv2
            cv2.imwrite(str(p), np.zeros((sd.H // 2, sd.W // 2), np.uint8))
        sd.rechecksum(w["data"], rel)
        return [f"{rel}: image is 24x32 (HxW)", "expects 48x64"]
    return mutate


def wrong_channels(w, tmp):
    _, _, rel = _dataset_file(w, "train")
    sd.float_tiff(w["data"] / rel, np.ones((sd.H, sd.W)))
    sd.rechecksum(w["data"], rel)
    return [f"{rel}: image has 1 channels", "declares 3 for intensity"]


def manifest_edit(fn, *expected):
    def mutate(w, tmp):
        m = sd.manifest(w["data"])
        fn(m)
        sd.write_manifest(w["data"], m)
        return ["manifest.json", *expected]
    return mutate


def missing_file(w, tmp):
    _, _, rel = _dataset_file(w, "train")
    (w["data"] / rel).unlink()
    return [f"{rel}: missing"]


def map_attack(kind):
    def mutate(w, tmp):
        sid, rel = sd.first_map(w["pred"])
        p = w["pred"] / rel
        if kind == "symlink":
            sd.symlink_out(p, tmp)
        elif kind == "loop":
            sd.symlink_loop(p)
        else:
            target = sd.outside_copy(p, tmp)
            value = str(target) if kind == "absolute" else f"../../{target.parent.name}/{target.name}"
            sd.edit_predictions(w["pred"], lambda x: x["maps"].update({sid: value}))
        return [f"predictions.json: maps.{sid}", "symlink loop" if kind == "loop" else "outside"]
    return mutate


def map_content(how):
    def mutate(w, tmp):
        sid, rel = sd.first_map(w["pred"])
        p = w["pred"] / rel
        if how == "bomb":
            sd.bomb_tiff(p)
            return [rel, "POLAR_MAX_IMAGE_PIXELS"]
        if how == "nan":
            sd.poison(p, np.nan, n=4)
            return [rel, f"NaN or infinite values (4 of {N} pixels)"]
        if how == "null":
            sd.edit_predictions(w["pred"], lambda x: x["maps"].update({sid: None}))
            return [f"maps.{sid} is null"]
        tifffile.imwrite(p, np.zeros((sd.H - 2, sd.W), np.float32))
        return [f"{rel}: anomaly map is 46x64 (HxW)", f"sample '{sid}' is 48x64"]
    return mutate


def score_not_number(w, tmp):
    sid, _ = sd.first_map(w["pred"])
    sd.edit_predictions(w["pred"], lambda x: x["scores"].update({sid: "high"}))
    return [f"predictions.json: scores.{sid}", "expected a number"]


def changed_mask(w, tmp):
    import cv2
    i, s = sd.sample(w["data"], "test", 1)
    mk = cv2.imread(str(w["data"] / s["mask"]), cv2.IMREAD_UNCHANGED)
    mk[0, 0] = 255 - mk[0, 0]
    cv2.imwrite(str(w["data"] / s["mask"]), mk)
    return [s["mask"], f"samples[{i}].mask", "changed since the dataset was built"]


def meta_attack(kind):
    def mutate(w, tmp):
        d = w["render"] / "samples" / "000003"
        meta = json.loads((d / "meta.json").read_text())
        rel = meta["files"]["dolp"]["path"]
        if kind in ("symlink", "loop"):
            (sd.symlink_out(d / rel, tmp) if kind == "symlink" else sd.symlink_loop(d / rel))
        else:
            target = sd.outside_copy(d / rel, tmp)
            meta["files"]["dolp"]["path"] = str(target) if kind == "absolute" else \
                f"../../../{target.parent.name}/{target.name}"
            (d / "meta.json").write_text(json.dumps(meta))
        return ["000003/meta.json: files.dolp.path", "symlink loop" if kind == "loop" else "outside"]
    return mutate


def render_file(how, name="dolp.tiff"):
    def mutate(w, tmp):
        p = w["render"] / "samples" / "000001" / name
        if how == "nan":
            sd.poison(p, np.nan, n=6)
            return [f"000001/{name}", f"6 of {N} pixels hold NaN or infinite values"]
        if how == "bomb":
            (sd.bomb_png if name.endswith(".png") else sd.bomb_tiff)(p)
            return [f"000001/{name}", "POLAR_MAX_IMAGE_PIXELS"]
        sd.float_tiff(p, np.ones((sd.H, sd.W - 4, 3)))
        return [f"000001/{name}: image is 48x60 (HxW)", "intensity is 48x64"]
    return mutate


def meta_files_list(w, tmp):
    d = w["render"] / "samples" / "000002"
    meta = json.loads((d / "meta.json").read_text())
    meta["files"] = list(meta["files"].values())
    (d / "meta.json").write_text(json.dumps(meta))
    return ["000002/meta.json: files: expected an object"]


def folder_link(src, rel, kind):
    def mutate(w, tmp):
        p = w[src] / rel
        (sd.symlink_out(p, tmp) if kind == "symlink" else sd.symlink_loop(p))
        return [Path(rel).name, "symlink loop" if kind == "loop" else "outside"]
    return mutate


def folder_content(src, rel, how):
    def mutate(w, tmp):
        p = w[src] / rel
        if how == "bomb":
            (sd.bomb_png if rel.endswith(".png") else sd.bomb_tiff)(p)
            return [Path(rel).name, "POLAR_MAX_IMAGE_PIXELS"]
        if how == "inf":
            sd.poison(p, np.inf, n=2)
            return [Path(rel).name, f"2 of {N} pixels hold NaN or infinite values"]
        shutil.rmtree(p)
        p.write_text("not a folder")
        return [str(p), "is not a directory"]
    return mutate


def _first(m, fn):
    fn(m["samples"][0])


CASES = [
    # -- dataset manifest, read by patchcore train (PolarDataset)
    pytest.param(TRAIN, manifest_path_attack("absolute"), id="train-manifest-absolute-path"),
    pytest.param(TRAIN, manifest_path_attack("dotdot"), id="train-manifest-dotdot-path"),
    pytest.param(TRAIN, manifest_path_attack("symlink"), id="train-manifest-symlink-out"),
    pytest.param(TRAIN, manifest_path_attack("loop"), id="train-manifest-symlink-loop"),
    pytest.param(TRAIN, changed_file(), id="train-checksum-mismatch"),
    # the calibration split is checked before training, not skipped (no silent "no threshold")
    pytest.param(TRAIN, changed_file("val"), id="train-val-split-checksum-mismatch"),
    pytest.param(TRAIN, non_finite(), id="train-nan-image-older-manifest"),
    pytest.param(TRAIN, non_finite(value=np.inf, consistent=False, n=2), id="train-inf-image-changed"),
    pytest.param(TRAIN, bomb(), id="train-bomb-tiff"),
    pytest.param(TRAIN, wrong_size(), id="train-wrong-size-image"),
    pytest.param(TRAIN, missing_file, id="train-missing-image"),
    pytest.param(TRAIN, wrong_channels, id="train-wrong-channel-count"),
    pytest.param(TRAIN, manifest_edit(lambda m: m["modalities"]["intensity"].update(scale=float("nan")),
                                      "modalities.intensity.scale", "finite number > 0"), id="train-scale-nan"),
    pytest.param(TRAIN, manifest_edit(lambda m: m["modalities"]["intensity"].update(channels=0),
                                      "modalities.intensity.channels"), id="train-channels-zero"),
    pytest.param(TRAIN, manifest_edit(lambda m: _first(m, lambda s: s.update(id="../../evil")),
                                      "samples[0].id", "not a valid sample id"), id="train-sample-id-traversal"),
    pytest.param(TRAIN, manifest_edit(lambda m: _first(m, lambda s: s.update(id=m["samples"][1]["id"])),
                                      "samples[1].id", "repeats samples[0]"), id="train-duplicate-sample-id"),
    pytest.param(TRAIN, manifest_edit(lambda m: _first(m, lambda s: s.update(label=2)),
                                      "samples[0].label", "expected 0 or 1"), id="train-label-2"),
    pytest.param(TRAIN, manifest_edit(lambda m: _first(m, lambda s: s.update(size=[48])),
                                      "samples[0].size", "[height, width]"), id="train-size-malformed"),
    pytest.param(TRAIN, manifest_edit(lambda m: _first(m, lambda s: s.update(files=["a.tiff"])),
                                      "samples[0].files", "expected an object"), id="train-files-not-object"),
    pytest.param(TRAIN, manifest_edit(lambda m: _first(m, lambda s: s.update(split="training")),
                                      "samples[0].split", "'training' is not one of"), id="train-unknown-split"),
    # -- patchcore predict: checks run before the predictions directory is created
    pytest.param(PREDICT, changed_file("test"), id="predict-checksum-mismatch"),
    pytest.param(PREDICT, non_finite("test", "intensity"), id="predict-nan-test-image"),
    pytest.param(PREDICT, wrong_size("test", label=1), id="predict-wrong-size-test-image"),
    pytest.param(PREDICT, bomb("test", "mask", label=1), id="predict-bomb-mask-png"),
    pytest.param(PREDICT, manifest_path_attack("symlink", "test", "mask", label=1), id="predict-mask-symlink-out"),
    pytest.param(PREDICT, wrong_size("test", "mask", label=1), id="predict-wrong-size-mask"),
    pytest.param(PREDICT, manifest_path_attack("dotdot", "val", "intensity"), id="predict-val-dotdot-path"),
    # -- evaluate: predictions.json maps and the dataset's ground truth
    pytest.param(EVAL, map_attack("absolute"), id="evaluate-map-absolute-path"),
    pytest.param(EVAL, map_attack("dotdot"), id="evaluate-map-dotdot-path"),
    pytest.param(EVAL, map_attack("symlink"), id="evaluate-map-symlink-out"),
    pytest.param(EVAL, map_attack("loop"), id="evaluate-map-symlink-loop"),
    pytest.param(EVAL, map_content("bomb"), id="evaluate-map-bomb-tiff"),
    pytest.param(EVAL, map_content("nan"), id="evaluate-map-nan"),
    pytest.param(EVAL, map_content("size"), id="evaluate-map-wrong-size"),
    pytest.param(EVAL, score_not_number, id="evaluate-score-not-a-number"),
    pytest.param(EVAL, manifest_path_attack("dotdot", "test", "mask", label=1), id="evaluate-mask-dotdot-path"),
    pytest.param(EVAL, manifest_path_attack("absolute", "test", "dolp", label=1), id="evaluate-report-image-absolute"),
    pytest.param(EVAL, changed_mask, id="evaluate-mask-checksum-mismatch"),
    # -- average: the same predictions.json reader
    pytest.param(AVERAGE, map_attack("dotdot"), id="average-map-dotdot-path"),
    pytest.param(AVERAGE, map_attack("symlink"), id="average-map-symlink-out"),
    pytest.param(AVERAGE, map_content("bomb"), id="average-map-bomb-tiff"),
    pytest.param(AVERAGE, map_content("null"), id="average-map-null"),
    # -- dataset build: render meta.json and images
    pytest.param(BUILD, meta_attack("absolute"), id="build-meta-absolute-path"),
    pytest.param(BUILD, meta_attack("dotdot"), id="build-meta-dotdot-path"),
    pytest.param(BUILD, meta_attack("symlink"), id="build-meta-symlink-out"),
    pytest.param(BUILD, meta_attack("loop"), id="build-meta-symlink-loop"),
    pytest.param(BUILD, render_file("nan"), id="build-render-nan"),
    pytest.param(BUILD, render_file("bomb", "object_mask.png"), id="build-render-bomb-png"),
    pytest.param(BUILD, render_file("size"), id="build-render-wrong-size"),
    pytest.param(BUILD, meta_files_list, id="build-meta-files-not-object"),
    # -- imports: files named by the folder layout
    pytest.param(IMPORT_MVTEC, folder_link("mvtec", "train/good/001.png", "symlink"), id="import-mvtec-symlink-out"),
    pytest.param(IMPORT_MVTEC, folder_link("mvtec", "test/good/000.png", "loop"), id="import-mvtec-symlink-loop"),
    pytest.param(IMPORT_MVTEC, folder_link("mvtec", "ground_truth/crack/000_mask.png", "symlink"),
                 id="import-mvtec-mask-symlink-out"),
    pytest.param(IMPORT_MVTEC, folder_content("mvtec", "test/crack/000.png", "bomb"), id="import-mvtec-bomb-png"),
    pytest.param(IMPORT_LOCO, folder_link("loco", "ground_truth/structural_anomalies/000/000.png", "symlink"),
                 id="import-loco-region-symlink-out"),
    pytest.param(IMPORT_POLAR, folder_content("capture", "frames/f1_135.tiff", "inf"), id="import-polar-inf-capture"),
    pytest.param(IMPORT_POLAR, folder_content("capture", "frames/f0_0.tiff", "bomb"), id="import-polar-bomb-tiff"),
    pytest.param(IMPORT_POLAR, folder_link("capture", "masks/f1.png", "symlink"), id="import-polar-mask-symlink-out"),
    pytest.param(IMPORT_POLAR, folder_content("capture", "masks", "not-dir"), id="import-polar-masks-not-a-dir"),
    # -- export and verify read the manifest too
    pytest.param(EXPORT, changed_file("test", "dolp"), id="export-mvtec-checksum-mismatch"),
    pytest.param(EXPORT, manifest_path_attack("absolute", "train", "dolp"), id="export-mvtec-absolute-path"),
    pytest.param(VERIFY, manifest_path_attack("dotdot", "test", "dolp"), id="verify-dotdot-path"),
]


@pytest.mark.parametrize("command, mutate", CASES)
def test_bad_input(base, tmp_path, capsys, command, mutate):
    w = {"model": base["model"]}
    for name in NEEDS[command]:
        w[name] = tmp_path / name
        shutil.copytree(base[name], w[name], symlinks=True)
    expected = mutate(w, tmp_path)
    inputs = {n: sd.snapshot(w[n]) for n in NEEDS[command]}
    out = tmp_path / "out"
    cli, argv = command(w, out)
    rc = CLIS[cli](argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and err.startswith("error: "), err  # nothing ran before the refusal
    for text in expected:
        assert text in err, (text, err)
    assert not out.exists() and not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))
    assert {n: sd.snapshot(w[n]) for n in NEEDS[command]} == inputs


def test_corpus_size():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
