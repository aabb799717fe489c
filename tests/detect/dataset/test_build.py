"""Building a dataset from render runs (polar_detect.dataset.build): splits, manifest, checksums,
bad input (issue 4)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from polar_detect.dataset.__main__ import main as cli
from polar_detect.dataset.build import assign_splits, build_from_renders
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.manifest import read_manifest

from tests.detect.dataset.real_render import ANOMALOUS, add_anomalies, clear_anomalies, copy_render


def test_splits_and_manifest(built):
    out, m, line = built
    assert m == read_manifest(out)
    assert m["format"] == "polar_detect.dataset/1"
    by_split = {s: [x for x in m["samples"] if x["split"] == s] for s in ("train", "val", "test")}
    assert [x["label"] for x in by_split["train"]] == [0, 0]          # round(0.8 * 3) normals
    assert {x["label"] for x in by_split["test"]} == {0, 1}
    assert [x["label"] for x in by_split["val"]] == [1]               # at least one anomalous for thresholds
    assert {x["id"] for x in m["samples"] if x["label"]} == {f"{i:06d}" for i in ANOMALOUS}
    assert m["classes"] == {"dent": "defect", "scratch": "defect", "water_stain": "impurity"}
    s3 = next(x for x in m["samples"] if x["id"] == "000003")
    assert s3["classes"] == ["dent", "water_stain"]
    assert [(i["id"], i["class"], i["kind"]) for i in s3["instances"]] == [(1, "water_stain", "impurity"), (2, "dent", "defect")]
    assert s3["mask"] and s3["instance_mask"] and s3["source"].endswith("detect_render_usb_brick")
    normal = next(x for x in m["samples"] if not x["label"])
    assert normal["mask"] is None and normal["instances"] == []
    mods = m["modalities"]
    assert mods["aolp"]["channels"] == 6 and mods["stokes"]["channels"] == 9 and mods["normals"]["channels"] == 3
    assert mods["intensity"]["scale"] == mods["pol0"]["scale"] == mods["stokes"]["scale"] > 0
    assert mods["dolp"]["scale"] == 1.0 and "wrap" in mods["aolp"]["encoding"]
    assert "train 2 (0 anomalous)" in line
    for s in m["samples"]:
        assert set(s["sha256"]) >= set(s["files"].values())


def test_build_is_deterministic(render, built, tmp_path):
    out, m, _ = built
    m2, _ = build_from_renders([render], tmp_path / "again", "intensity,aolp,dolp,normals,pol0,pol90,stokes",
                               seed=0, progress=False)
    strip = lambda man: [(s["id"], s["split"], s["sha256"]) for s in man["samples"]]  # noqa: E731
    assert strip(m2) == strip(m)


def test_assign_splits_ratios_seed():
    normal = [f"n{i:03d}" for i in range(100)]
    anom = [f"a{i:03d}" for i in range(20)]
    a = assign_splits(normal, anom, seed=3)
    assert a == assign_splits(list(reversed(normal)), anom[::-1], seed=3)  # input order is irrelevant
    assert a == assign_splits(normal, anom, seed=3)
    assert a != assign_splits(normal, anom, seed=4)
    train = [i for i, s in a.items() if s == "train"]
    assert len(train) == 80 and all(i.startswith("n") for i in train)
    val = [i for i, s in a.items() if s == "val"]
    assert sum(i.startswith("a") for i in val) == 4 and sum(i.startswith("n") for i in val) == 4
    test = [i for i, s in a.items() if s == "test"]
    assert sum(i.startswith("a") for i in test) == 16 and sum(i.startswith("n") for i in test) == 16
    b = assign_splits(normal, anom, seed=3, train_ratio=0.5, val_fraction=0.0)
    assert sum(s == "train" for s in b.values()) == 50 and "val" not in b.values()


def test_normal_only_render(render, tmp_path):
    src = tmp_path / "normal_only"
    (src / "samples").mkdir(parents=True)
    for d in sorted((render / "samples").iterdir()):
        if int(d.name) not in ANOMALOUS:
            shutil.copytree(d, src / "samples" / d.name)
    with pytest.raises(DatasetError, match="test split needs anomalies"):
        build_from_renders([src], tmp_path / "d", "intensity", progress=False)
    assert not (tmp_path / "d").exists()
    m, _ = build_from_renders([src], tmp_path / "d", "intensity", train_ratio=1.0, progress=False)
    assert {s["split"] for s in m["samples"]} == {"train"}


def test_several_renders(render, tmp_path):
    m, _ = build_from_renders([render, render], tmp_path / "two", "dolp", progress=False)
    ids = [s["id"] for s in m["samples"]]
    assert len(ids) == 12 and "r0_000000" in ids and "r1_000005" in ids


def test_cli_build(render, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli(["build", "--render", str(render), "--out", str(out), "--modalities", "intensity,aolp",
                "--seed", "0", "--train-ratio", "0.8", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and str(out) in line[0]
    assert cli(["build", "--render", str(render), "--out", str(out), "--modalities", "intensity"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli(["build", "--render", str(render), "--out", str(out), "--modalities", "intensity", "--overwrite",
                "--no-progress"]) == 0
    assert list(read_manifest(out)["modalities"]) == ["intensity"]


def _no_leftovers(parent: Path, name: str):
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".tmp-{name}")]


def test_bad_input(render, tmp_path, capsys):
    # unknown modality
    assert cli(["build", "--render", str(render), "--out", str(tmp_path / "x"), "--modalities", "intensity,colour"]) == 2
    assert "unknown modality 'colour'" in capsys.readouterr().err
    # not a render
    assert cli(["build", "--render", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "no samples/ directory" in capsys.readouterr().err

    src = copy_render(render, tmp_path / "broken")
    # missing image
    (src / "samples/000002/dolp.tiff").unlink()
    with pytest.raises(DatasetError, match=r"000002/dolp.tiff: missing"):
        build_from_renders([src], tmp_path / "out", "intensity,dolp", progress=False)
    _no_leftovers(tmp_path, "out")
    # unreadable image
    (src / "samples/000002/dolp.tiff").write_bytes(b"not a tiff")
    with pytest.raises(DatasetError, match=r"000002/dolp.tiff: not a readable TIFF"):
        build_from_renders([src], tmp_path / "out", "intensity,dolp", progress=False)
    _no_leftovers(tmp_path, "out")
    shutil.copy(render / "samples/000002/dolp.tiff", src / "samples/000002/dolp.tiff")
    # mask / image size mismatch
    from polar_render.io import write_png16

    write_png16(src / "samples/000004/anomaly_mask.png", np.ones((10, 10), np.uint16))
    assert cli(["build", "--render", str(src), "--out", str(tmp_path / "out"), "--modalities", "dolp"]) == 2
    err = capsys.readouterr().err
    assert "000004/anomaly_mask.png" in err and "(10, 10)" in err
    _no_leftovers(tmp_path, "out")
    # instance id absent from the table
    write_png16(src / "samples/000004/anomaly_mask.png", np.full((48, 64), 7, np.uint16))
    with pytest.raises(DatasetError, match=r"ids \[7\] are not in meta.json"):
        build_from_renders([src], tmp_path / "out", "dolp", progress=False)
    # empty train split
    with pytest.raises(DatasetError, match="empty train split"):
        build_from_renders([render], tmp_path / "out", "dolp", train_ratio=0.1, progress=False)
    _no_leftovers(tmp_path, "out")


def test_impurities_as_normal_variation(render, tmp_path):
    """--impurities normal (Sequential PatchCore): label 1 iff a defect; mask = defect pixels only;
    a stain-only sample is normal, keeps its instance mask and may be used for training."""
    src = copy_render(render, tmp_path / "stained")
    add_anomalies(src / "samples" / "000005", [(1, "water_stain", "impurity", (5, 5, 20, 15))])
    default, _ = build_from_renders([src], tmp_path / "a", "intensity", progress=False)
    assert next(s for s in default["samples"] if s["id"] == "000005")["label"] == 1
    m, _ = build_from_renders([src], tmp_path / "n", "intensity", train_ratio=1.0, progress=False,
                              impurities="normal")
    by_id = {s["id"]: s for s in m["samples"]}
    s5 = by_id["000005"]
    assert s5["label"] == 0 and s5["split"] == "train" and s5["mask"] is None
    assert s5["instance_mask"] and s5["classes"] == ["water_stain"]
    assert {i for i, s in by_id.items() if s["label"]} == {"000001", "000003", "000004"}
    assert m["labels"] == {"impurities": "normal"} and m["classes"]["water_stain"] == "impurity"
    from polar_render.io import read_png

    mask = read_png(tmp_path / "n" / by_id["000003"]["mask"]) > 0     # stain (0..12 x 0..10) + dent
    expected = np.zeros((48, 64), bool)
    expected[30:46, 40:60] = True
    assert (mask == expected).all()
    assert cli(["build", "--render", str(src), "--out", str(tmp_path / "c"), "--modalities", "dolp",
                "--impurities", "normal", "--no-progress"]) == 0
    with pytest.raises(SystemExit):       # argparse choices
        cli(["build", "--render", str(src), "--out", str(tmp_path / "d"), "--impurities", "maybe"])
    with pytest.raises(DatasetError, match="impurities must be one of"):
        build_from_renders([src], tmp_path / "e", "intensity", impurities="maybe", progress=False)


def test_from_mosaic_matches_exact_images(tmp_path):
    """--from-mosaic reads the renderer's DoFP raw mosaic back: with a noise-free, unclipped
    sensor the demosaiced modalities agree with the exact ones up to interpolation error."""
    from polar_render.config.scenes import load_scene, write_scene_variant
    from polar_render.run.request import RenderRequest
    from polar_render.run.runner import run

    sensor = dict(load_scene("usb_brick").raw.get("sensor") or {})
    sensor["dofp"] = {"enabled": True, "shot_noise": False, "read_noise_e": 0.0, "bit_depth": 16,
                      "full_well_e": 1e7, "exposure_e_per_radiance": 1e5}
    scene = write_scene_variant(tmp_path / "dofp.yaml", "usb_brick", sensor=sensor)
    render = tmp_path / "render"
    summary = run(RenderRequest(scene=str(scene), out=render, n=2, res=(64, 48), spp=2, progress=False))
    assert not summary.failed, summary.failed
    mods = "intensity,pol0,dolp,aolp"
    exact, _ = build_from_renders([render], tmp_path / "exact", mods, train_ratio=1.0, progress=False)
    mosaic, _ = build_from_renders([render], tmp_path / "mosaic", mods, train_ratio=1.0, progress=False,
                                   from_mosaic=True)
    assert mosaic["images"].startswith("DoFP") and exact["images"] == "exact Stokes"
    assert mosaic["modalities"]["aolp"]["channels"] == exact["modalities"]["aolp"]["channels"]
    import tifffile

    for s in exact["samples"]:
        for mod in ("intensity", "pol0"):
            a = tifffile.imread(tmp_path / "exact" / s["files"][mod])
            b = tifffile.imread(tmp_path / "mosaic" / s["files"][mod])
            assert a.shape == b.shape
            assert abs(b.mean() / a.mean() - 1) < 0.05, (mod, a.mean(), b.mean())   # radiance units kept
    scale_ratio = mosaic["modalities"]["intensity"]["scale"] / exact["modalities"]["intensity"]["scale"]
    assert 0.5 < scale_ratio < 1.5
    with pytest.raises(DatasetError, match="'normals' cannot be computed from a DoFP mosaic"):
        build_from_renders([render], tmp_path / "n", "intensity,normals", from_mosaic=True, progress=False)
    plain = copy_render(render, tmp_path / "plain")
    for d in (plain / "samples").iterdir():
        clear_anomalies(d)
        meta = json.loads((d / "meta.json").read_text())
        del meta["files"]["raw_mosaic"]
        (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"000000/meta.json: the sample has no raw_mosaic"):
        build_from_renders([plain], tmp_path / "p", "intensity", train_ratio=1.0, from_mosaic=True,
                           progress=False)
