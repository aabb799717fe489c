"""Building a dataset from render runs: splits, manifest, checksums, bad input (issue 4)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from polar_detect.dataset.__main__ import main as cli
from polar_detect.dataset.build import assign_splits, build_from_renders
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.manifest import read_manifest, verify

ANOMALOUS = {1: [(1, "dent", "defect", (10, 8, 30, 20))],
             3: [(1, "water_stain", "impurity", (0, 0, 12, 10)), (2, "dent", "defect", (40, 30, 60, 46))],
             4: [(1, "scratch", "defect", (20, 20, 50, 24))]}


def add_anomalies(sample_dir: Path, table) -> None:
    """Simulate the issue-3 renderer output: anomaly_mask.png (uint16 ids) + meta['anomalies']."""
    from polar_render.io import write_json, write_png16

    meta = json.loads((sample_dir / "meta.json").read_text())
    h, w = meta["files"]["object_mask"]["shape"][:2]
    mask = np.zeros((h, w), np.uint16)
    rows = []
    for k, cls, kind, (x0, y0, x1, y1) in table:
        mask[y0:y1, x0:x1] = k
        rows.append({"id": k, "class": cls, "kind": kind, "area_px": int((mask == k).sum()), "bbox": [x0, y0, x1, y1]})
    write_png16(sample_dir / "anomaly_mask.png", mask)
    meta["files"]["anomaly_mask"] = {"path": "anomaly_mask.png", "dtype": "uint16", "shape": [h, w],
                                     "channels": ["anomaly"], "units": "anomaly instance id, 0 = none"}
    meta["anomalies"] = rows
    write_json(sample_dir / "meta.json", meta)


def clear_anomalies(sample_dir: Path) -> None:
    """Make a sample normal (drop any renderer-made anomaly, so the tests control the labels)."""
    from polar_render.io import write_json

    meta = json.loads((sample_dir / "meta.json").read_text())
    entry = meta.get("files", {}).pop("anomaly_mask", None)
    if entry:
        (sample_dir / entry["path"]).unlink(missing_ok=True)
    meta["anomalies"] = []
    write_json(sample_dir / "meta.json", meta)


def render_dir(tmp_path_factory) -> Path:
    """One tiny real render (6 samples, 64x48, 2 spp), shared by the dataset tests of a session;
    samples 1, 3, 4 get hand-made anomalies, the others are made normal whatever the renderer
    drew. Cached under pytest's session base temp dir."""
    from polar_render.pipeline import RenderRequest, run

    root = tmp_path_factory.getbasetemp() / "detect_render_usb_brick"
    done = root / ".anomalies-added"
    if not done.exists():
        summary = run(RenderRequest(scene="usb_brick", out=root, n=6, res=(64, 48), spp=2, progress=False))
        assert not summary.failed, summary.failed
        for i in range(6):
            clear_anomalies(root / "samples" / f"{i:06d}")
        for i, table in ANOMALOUS.items():
            add_anomalies(root / "samples" / f"{i:06d}", table)
        done.write_text("ok")
    return root


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    return render_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def built(render, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "usb_brick"
    manifest, line = build_from_renders([render], out, "intensity,aolp,dolp,normals,pol0,pol90,stokes",
                                        seed=0, progress=False)
    return out, manifest, line


def copy_render(render: Path, dest: Path) -> Path:
    shutil.copytree(render / "samples", dest / "samples")
    return dest


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


def test_verify_detects_corruption(built, tmp_path, capsys):
    out, m, _ = built
    data = tmp_path / "copy"
    shutil.copytree(out, data)
    assert verify(data) == []
    assert cli(["verify", str(data)]) == 0
    rel = m["samples"][0]["files"]["dolp"]
    (data / rel).write_bytes((data / rel).read_bytes()[:-1] + b"\0")
    problems = verify(data)
    assert len(problems) == 1 and rel in problems[0] and "sha256" in problems[0]
    assert cli(["verify", str(data)]) == 1


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
