"""Detector inputs are data (issues 16, 20): paths in manifests, predictions.json, render
meta.json and import folders stay inside their root; image headers are bounded before
decoding; checksums are verified at load; NaN/inf images and wrong-size images are refused,
naming the file.

The tests of polar_detect.dataset.integrity (checksums hashed once, refused on change, NaN/inf
and size checks at load) together with the cross-cutting traversal / bomb corpus that drives
the same checks through every reader (loader, evaluate, average, build, imports, baseline);
the corpus stays whole here rather than split by module."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from polar_detect.dataset.errors import InputError
from polar_detect.dataset.sample_images import read_mask_png
from polar_detect.evaluation import evaluate as ev
from polar_detect.predictions import read_map
from polar_detect.evaluation.average import main as average_main
from polar_detect.dataset.torch_dataset import PolarDataset
from polar_detect.dataset import integrity
from polar_detect.dataset.__main__ import main as dataset_main
from polar_detect.dataset.build import build_from_renders
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.images import read_image
from polar_detect.dataset.manifest import read_manifest
from polar_detect.dataset.writer import DatasetWriter

from tests.detect import safety_data as sd


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    rendered = sd.render(root / "render")
    data = sd.dataset(root / "data", rendered)
    return {"render": rendered, "data": data, "pred": sd.predictions(root / "pred", data),
            "mvtec": sd.mvtec(root / "mvtec"), "loco": sd.loco(root / "loco"), "capture": sd.capture(root / "capture")}


def copy(base, tmp_path, *names):
    out = {}
    for n in names:
        out[n] = tmp_path / n
        shutil.copytree(base[n], out[n], symlinks=True)
    return out if len(names) > 1 else out[names[0]]


def attack(kind: str, root: Path, rel: str, tmp_path: Path) -> str:
    """Make the data-file entry ``rel`` (relative to ``root``) point out of ``root`` by
    ``kind``; returns the value to write into the data file."""
    if kind == "absolute":
        return str(sd.outside_copy(root / rel, tmp_path))
    if kind == "dotdot":
        return _dotdot(root, sd.outside_copy(root / rel, tmp_path))
    if kind == "symlink":
        sd.symlink_out(root / rel, tmp_path)
        return rel
    sd.symlink_loop(root / rel)
    return rel


def _dotdot(root: Path, target: Path) -> str:
    """``root/<this>`` == ``target`` through ``..`` components."""
    ups = len(root.relative_to(target.parent.parent).parts)
    return str(Path(*[".."] * ups) / target.parent.name / target.name)


ATTACKS = ["absolute", "dotdot", "symlink", "loop"]


def expect_refusal(text: str, kind: str):
    assert ("symlink loop" if kind == "loop" else "outside") in text, text


# ------------------------------------------------------------------ traversal: dataset manifest
@pytest.mark.parametrize("kind", ATTACKS)
def test_manifest_paths_stay_inside(base, tmp_path, kind):
    data = copy(base, tmp_path, "data")
    i, s = sd.sample(data, "train")
    value = attack(kind, data, s["files"]["intensity"], tmp_path)
    sd.edit_sample(data, "train", lambda e: e["files"].update(intensity=value))
    with pytest.raises(DatasetError) as err:
        PolarDataset(data, "train", ["intensity"])
    msg = str(err.value)
    assert f"manifest.json: samples[{i}].files.intensity" in msg
    expect_refusal(msg, kind)
    with pytest.raises(DatasetError, match=rf"samples\[{i}\]\.files\.intensity"):
        read_manifest(data)            # every reader of the manifest refuses it (baseline, export, ...)


@pytest.mark.parametrize("kind", ATTACKS)
def test_manifest_mask_paths_stay_inside_for_evaluate(base, tmp_path, capsys, kind):
    """evaluate reads the masks (and, for the report overlays, the modality files) named by
    the manifest: neither may reach a file outside the dataset."""
    w = copy(base, tmp_path, "data", "pred")
    i, s = sd.sample(w["data"], "test", 1)
    value = attack(kind, w["data"], s["mask"], tmp_path)
    sd.edit_sample(w["data"], "test", lambda e: e.update(mask=value), 1)
    rc = ev.main(["--pred", str(w["pred"]), "--data", str(w["data"]), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 2 and f"samples[{i}].mask" in err
    expect_refusal(err, kind)
    assert not (tmp_path / "eval").exists()


def test_report_overlays_cannot_embed_an_outside_file(base, tmp_path, capsys):
    w = copy(base, tmp_path, "data", "pred")
    i, s = sd.sample(w["data"], "test", 1)
    value = attack("absolute", w["data"], s["files"]["dolp"], tmp_path)
    sd.edit_sample(w["data"], "test", lambda e: e["files"].update(dolp=value), 1)
    rc = ev.main(["--pred", str(w["pred"]), "--data", str(w["data"]), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 2 and f"samples[{i}].files.dolp" in err and "outside" in err
    assert not (tmp_path / "eval").exists()


# ------------------------------------------------------------------ traversal: predictions.json
@pytest.mark.parametrize("kind", ATTACKS)
def test_prediction_maps_stay_inside_for_evaluate_and_average(base, tmp_path, capsys, kind):
    w = copy(base, tmp_path, "data", "pred")
    sid, rel = sd.first_map(w["pred"])
    value = attack(kind, w["pred"], rel, tmp_path)
    sd.edit_predictions(w["pred"], lambda p: p["maps"].update({sid: value}))
    rc = ev.main(["--pred", str(w["pred"]), "--data", str(w["data"]), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 2 and f"predictions.json: maps.{sid}" in err
    expect_refusal(err, kind)
    other = copy(base, tmp_path / "b", "pred")
    rc = average_main(["--pred", str(w["pred"]), "--pred", str(other), "--out", str(tmp_path / "avg"),
                       "--standardise", "none", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"maps.{sid}" in err
    expect_refusal(err, kind)
    assert not (tmp_path / "eval").exists() and not (tmp_path / "avg").exists()


# ------------------------------------------------------------------ traversal: render meta.json
@pytest.mark.parametrize("kind", ATTACKS)
def test_render_meta_paths_stay_inside(base, tmp_path, kind):
    rendered = copy(base, tmp_path, "render")
    d = rendered / "samples" / "000002"
    meta = json.loads((d / "meta.json").read_text())
    value = attack(kind, d, meta["files"]["dolp"]["path"], tmp_path)
    meta["files"]["dolp"]["path"] = value
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as err:
        build_from_renders([rendered], tmp_path / "out", "dolp", progress=False)
    assert "000002/meta.json: files.dolp.path" in str(err.value)
    expect_refusal(str(err.value), kind)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ traversal: import folders
@pytest.mark.parametrize("kind", ["symlink", "loop"])
@pytest.mark.parametrize("src, rel, cmd", [
    ("mvtec", "train/good/001.png", "import-mvtec"),
    ("mvtec", "ground_truth/crack/000_mask.png", "import-mvtec"),
    ("loco", "test/good/000.png", "import-loco"),
    ("loco", "ground_truth/structural_anomalies/000/000.png", "import-loco"),
    ("capture", "frames/f1_45.tiff", "import-polar"),
    ("capture", "masks/f1.png", "import-polar"),
], ids=["mvtec-image", "mvtec-mask", "loco-image", "loco-region", "capture-frame", "capture-mask"])
def test_imported_folders_refuse_links_out(base, tmp_path, capsys, kind, src, rel, cmd):
    """Folder imports name files by the folder layout: a symlinked file leading out of the
    imported folder is refused like a path in a data file, a loop is reported as a loop."""
    root = copy(base, tmp_path, src)
    attack(kind, root, rel, tmp_path)
    before = sd.snapshot(root)
    argv = [cmd, "--src", str(root / "frames" if src == "capture" else root), "--out", str(tmp_path / "out")]
    if src == "capture":
        argv += ["--masks", str(root / "masks")]
    assert dataset_main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert Path(rel).name in err
    expect_refusal(err, kind)
    assert not (tmp_path / "out").exists() and sd.snapshot(root) == before


def test_dangling_symlink_in_an_import_is_named(base, tmp_path):
    from polar_detect.dataset.mvtec import import_mvtec

    root = copy(base, tmp_path, "mvtec")
    (root / "train/good/001.png").unlink()
    (root / "train/good/001.png").symlink_to(root / "train/good/nowhere.png")
    with pytest.raises(DatasetError, match=r"001\.png: dangling symlink"):
        import_mvtec(root, tmp_path / "out", progress=False)


def test_symlink_inside_the_root_is_fine(base, tmp_path):
    """A link to another file of the same dataset is not an escape."""
    data = copy(base, tmp_path, "data")
    _, s = sd.sample(data, "train")
    rel = s["files"]["dolp"]
    (data / rel).rename(data / (rel + ".real"))
    (data / rel).symlink_to(Path(rel).name + ".real")
    assert len(PolarDataset(data, "train", ["dolp"])) == 3


# ------------------------------------------------------------------ decompression bombs
@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_bombs_refused_from_the_header(base, tmp_path, monkeypatch, fmt):
    """A ~100-byte file declaring 100000 x 100000 pixels is refused by every reader before
    any decoder sees it (the decoders are booby-trapped here)."""
    def no_decode(*a, **k):
        raise AssertionError("decoder called on a decompression bomb")

    bomb = (sd.bomb_png if fmt == "png" else sd.bomb_tiff)(tmp_path / f"bomb.{fmt}")
    assert bomb.stat().st_size < 200
    import cv2

    monkeypatch.setattr(tifffile, "imread", no_decode)
    monkeypatch.setattr(cv2, "imread", no_decode)
    with pytest.raises(DatasetError, match="POLAR_MAX_IMAGE_PIXELS"):
        read_image(bomb)
    with pytest.raises(InputError, match="POLAR_MAX_IMAGE_PIXELS"):
        read_map(bomb) if fmt == "tiff" else read_mask_png(bomb)
    monkeypatch.undo()
    # through the loader: a modality file (TIFF) or a mask (PNG) of a training sample
    data = copy(base, tmp_path, "data")
    _, s = sd.sample(data, "test", 1)
    rel = s["files"]["intensity"] if fmt == "tiff" else s["mask"]
    shutil.copy(bomb, data / rel)
    with pytest.raises(DatasetError, match=rf"{Path(rel).name}: image is 100000x100000.*POLAR_MAX_IMAGE_PIXELS"):
        PolarDataset(data, "test", ["intensity"])


def test_image_limit_follows_the_environment(base, tmp_path, monkeypatch):
    data = copy(base, tmp_path, "data")
    monkeypatch.setenv("POLAR_MAX_IMAGE_PIXELS", str(sd.H * sd.W - 1))
    with pytest.raises(DatasetError, match="POLAR_MAX_IMAGE_PIXELS"):
        PolarDataset(data, "train", ["dolp"])
    monkeypatch.setenv("POLAR_MAX_IMAGE_PIXELS", str(sd.H * sd.W))
    integrity.forget()
    assert len(PolarDataset(data, "train", ["dolp"])) == 3


# ------------------------------------------------------------------ checksums
def test_checksum_mismatch_names_the_file_and_says_rebuild(base, tmp_path, monkeypatch):
    data = copy(base, tmp_path, "data")
    i, s = sd.sample(data, "train")
    rel = s["files"]["dolp"]
    a = tifffile.imread(data / rel)
    a[0, 0] = 0.123  # still finite, same size: only the checksum can tell
    sd.float_tiff(data / rel, a)
    with pytest.raises(DatasetError) as err:
        PolarDataset(data, "train", ["dolp"])
    msg = str(err.value)
    assert rel in msg and f"samples[{i}].files.dolp" in msg
    assert "changed since the dataset was built" in msg and "rebuild" in msg
    # the other modality is untouched: loading it works; restoring the file makes the set load again
    assert len(PolarDataset(data, "train", ["intensity"])) == 3
    shutil.copy(base["data"] / rel, data / rel)
    assert len(PolarDataset(data, "train", ["dolp"])) == 3


def test_checksums_hashed_once_per_process(base, tmp_path, monkeypatch):
    """Re-loading (another split, the native-size twin, calibration) re-hashes nothing; a file
    whose size/mtime changed is hashed again."""
    data = copy(base, tmp_path, "data")
    calls = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: calls.append(Path(p).name) or real(p))
    PolarDataset(data, "all", ["intensity"])
    n = len(calls)
    assert n == 6 + 2 * 2  # 6 intensity files; mask + instance mask of the 2 anomalous samples
    PolarDataset(data, "test", ["intensity"], size=32)
    assert len(calls) == n
    _, s = sd.sample(data, "train")
    shutil.copy(base["data"] / s["files"]["intensity"], data / s["files"]["intensity"])  # new mtime
    PolarDataset(data, "train", ["intensity"])
    assert len(calls) == n + 1


def test_checksum_mismatch_of_a_mask_in_evaluate(base, tmp_path, capsys):
    w = copy(base, tmp_path, "data", "pred")
    i, s = sd.sample(w["data"], "test", 1)
    mask = read_mask_png(w["data"] / s["mask"])
    mask[0, 0] = 255
    import cv2

    cv2.imwrite(str(w["data"] / s["mask"]), mask)
    rc = ev.main(["--pred", str(w["pred"]), "--data", str(w["data"]), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 2 and s["mask"] in err and f"samples[{i}].mask" in err and "changed since" in err
    assert not (tmp_path / "eval").exists()


# ------------------------------------------------------------------ NaN / inf
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_training_image_refused_before_work(base, tmp_path, value):
    """An older (or hand-written) manifest without ``integrity.finite``: the loader decodes
    float images up front and refuses a non-finite one, naming the file and the pixel count."""
    data = copy(base, tmp_path, "data")
    _, s = sd.sample(data, "train")
    rel = s["files"]["intensity"]
    sd.poison(data / rel, value, n=3)
    sd.rechecksum(data, rel)
    sd.drop_integrity(data)
    with pytest.raises(DatasetError, match=rf"{rel}: 3 of {sd.H * sd.W} pixels hold NaN or infinite"):
        PolarDataset(data, "train", ["intensity"])


def test_non_finite_image_changed_since_build(base, tmp_path):
    data = copy(base, tmp_path, "data")
    _, s = sd.sample(data, "test")
    rel = s["files"]["dolp"]
    sd.poison(data / rel, np.nan, n=5)
    with pytest.raises(DatasetError) as err:
        PolarDataset(data, "test", ["dolp"])
    msg = str(err.value)
    assert f"{rel}: 5 of {sd.H * sd.W} pixels hold NaN" in msg and "changed since the dataset was built" in msg


def test_non_finite_image_behind_a_consistent_manifest_refused_on_read(base, tmp_path):
    """Even with the checksum recomputed and integrity.finite claimed, the item read refuses it."""
    data = copy(base, tmp_path, "data")
    _, s = sd.sample(data, "test")
    rel = s["files"]["dolp"]
    sd.poison(data / rel, np.inf, n=2)
    sd.rechecksum(data, rel)
    ds = PolarDataset(data, "test", ["dolp"])
    k = next(k for k, x in enumerate(ds.samples) if x["id"] == s["id"])
    with pytest.raises(DatasetError, match=rf"{rel}: 2 of {sd.H * sd.W} pixels hold NaN or infinite"):
        ds[k]


def test_non_finite_sources_never_enter_a_dataset(base, tmp_path):
    # a render image
    rendered = copy(base, tmp_path, "render")
    sd.poison(rendered / "samples/000001/dolp.tiff", np.nan, n=4)
    with pytest.raises(DatasetError, match=rf"000001/dolp.tiff: 4 of {sd.H * sd.W} pixels hold NaN"):
        build_from_renders([rendered], tmp_path / "out", "dolp", progress=False)
    assert not (tmp_path / "out").exists()
    # a float capture
    cap = copy(base, tmp_path, "capture")
    sd.poison(cap / "frames/f0_90.tiff", -np.inf, n=1)
    with pytest.raises(DatasetError, match=r"f0_90.tiff: 1 of \d+ pixels hold NaN or infinite"):
        from polar_detect.dataset.polar_capture import import_polar
        import_polar(cap / "frames", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    # the writer itself (every builder goes through it; the manifest promises finite images)
    with pytest.raises(DatasetError, match="dolp has 1 pixels with NaN"):
        with DatasetWriter(tmp_path / "w", "w") as w:
            a = np.zeros((4, 4), np.float32)
            a[1, 1] = np.nan
            w.add("x", "train", 0, "src", {"dolp": a})
    assert read_manifest(base["data"])["integrity"]["finite"] is True


def test_non_finite_map_refused_with_count(base, tmp_path, capsys):
    w = copy(base, tmp_path, "data", "pred")
    sid, rel = sd.first_map(w["pred"])
    sd.poison(w["pred"] / rel, np.nan, n=7)
    rc = ev.main(["--pred", str(w["pred"]), "--data", str(w["data"]), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 2 and rel in err and f"NaN or infinite values (7 of {sd.H * sd.W} pixels)" in err


# ------------------------------------------------------------------ wrong-size images
def test_wrong_size_test_image_is_named_not_its_mask(base, tmp_path):
    data = copy(base, tmp_path, "data")
    i, s = sd.sample(data, "test", 1)
    rel = s["files"]["intensity"]
    sd.float_tiff(data / rel, np.ones((sd.H // 2, sd.W // 2, 3)))
    sd.rechecksum(data, rel)
    with pytest.raises(DatasetError) as err:
        PolarDataset(data, "test", ["intensity"])
    msg = str(err.value)
    assert msg.startswith(str((data / rel).resolve())) and f"samples[{i}].files.intensity" in msg
    assert "24x32" in msg and "48x64" in msg and "mask" not in msg.split(":")[0]


def test_wrong_size_without_manifest_size_uses_the_first_image(base, tmp_path):
    data = copy(base, tmp_path, "data")
    _, s = sd.sample(data, "train")
    rel = s["files"]["dolp"]
    sd.float_tiff(data / rel, np.ones((sd.H, sd.W - 8, 3)))
    m = sd.manifest(data)
    for x in m["samples"]:
        x.pop("size", None)
        x["sha256"] = {}
    sd.write_manifest(data, m)
    with pytest.raises(DatasetError, match=rf"{rel}: image is 48x56 \(HxW\)"):
        PolarDataset(data, "train", ["intensity", "dolp"])


def test_wrong_size_map_is_named_not_the_mask(base, tmp_path, capsys):
    w = copy(base, tmp_path, "data", "pred")
    sid, rel = sd.first_map(w["pred"])
    tifffile.imwrite(w["pred"] / rel, np.zeros((sd.H, sd.W + 1), np.float32))
    rc = ev.main(["--pred", str(w["pred"]), "--data", str(w["data"]), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{rel}: anomaly map is 48x65 (HxW) but sample '{sid}' is 48x64" in err


# ------------------------------------------------------------------ the intact set still works
def test_intact_dataset_loads_trains_and_evaluates(base, tmp_path, capsys):
    w = copy(base, tmp_path, "data", "pred")
    ds = PolarDataset(w["data"], "all", ["intensity", "dolp"])
    assert len(ds) == 6 and all(np.isfinite(ds[k]["image"].numpy()).all() for k in range(len(ds)))
    assert ev.main(["--pred", str(w["pred"]), "--data", str(w["data"]), "--out", str(tmp_path / "eval"),
                    "--no-report", "--bootstrap", "0"]) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_baseline_refuses_a_bomb_object_mask(base, tmp_path, capsys, monkeypatch):
    """The blurred-mask baseline reads object masks through the dataset's bounded reader:
    a mask whose header declares 100000x100000 pixels is refused before decoding."""
    import cv2

    from polar_detect.models.baseline.__main__ import main as baseline_main

    data = copy(base, tmp_path, "data")
    m = read_manifest(data)
    target = next(s for s in m["samples"] if s["split"] == "test" and s.get("object_mask"))
    sd.bomb_png(data / target["object_mask"])
    monkeypatch.setattr(cv2, "imread", lambda *a, **k: pytest.fail("decoded a bomb"))
    out = tmp_path / "pred"
    assert baseline_main(["predict", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert target["object_mask"] in err and "POLAR_MAX_IMAGE_PIXELS" in err, err
    assert not out.exists()
