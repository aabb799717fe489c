"""Issue 13 dataset side: splits pinned by render, ignore regions, normalisation reuse, object
mask; on tiny synthetic renders (tests/detect/fake_render.py), no Mitsuba."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from polar_detect.dataset.__main__ import main as cli
from polar_detect.dataset.build import assign_splits, build_from_renders
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.manifest import sha256_file, verify
from polar_detect.dataset.selection import IgnoreRules, parse_min_contrast, parse_render

from tests.detect.fake_render import MIXED, NORMAL8, PART, anomaly, make_render

def _read_png(path):
    import cv2
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _no_output(tmp_path, name):
    assert not (tmp_path / name).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".tmp-{name}")]


# ------------------------------------------------------------------ render roles
def test_parse_render():
    assert parse_render("a/b") == (parse_render("a/b")[0], "pooled")
    p, role = parse_render("a/b:train")
    assert str(p) == "a/b" and role == "train"
    assert parse_render("x:eval")[1] == "eval"
    with pytest.raises(DatasetError, match="unknown role 'test'"):
        parse_render("a/b:test")


def test_pinned_train_and_eval(tmp_path):
    train = make_render(tmp_path / "train", NORMAL8, seed=1)
    ev = make_render(tmp_path / "eval", MIXED, seed=2)
    m, line = build_from_renders([f"{train}:train", f"{ev}:eval"], tmp_path / "d", "intensity,dolp",
                                 val_fraction=0.25, progress=False)
    by = {s["id"]: s for s in m["samples"]}
    r0 = [s for s in m["samples"] if s["id"].startswith("r0_")]
    r1 = [s for s in m["samples"] if s["id"].startswith("r1_")]
    assert len(r0) == 8 and {s["split"] for s in r0} == {"train"} and {s["pinned"] for s in r0} == {"train"}
    assert len(r1) == 9 and "train" not in {s["split"] for s in r1} and {s["pinned"] for s in r1} == {"eval"}
    # val_fraction of each group: round(0.25 * 6 normal) = 2 (rounded half to even: 1.5 -> 2), 0.25 * 3 -> 1
    val = [s for s in r1 if s["split"] == "val"]
    assert sum(s["label"] for s in val) == 1 and sum(1 - s["label"] for s in val) == 2
    assert [r["role"] for r in m["render_roles"]] == ["train", "eval"]
    assert [r["n_samples"] for r in m["render_roles"]] == [8, 9]
    assert m["render_roles"][0]["id_prefix"] == "r0_"
    assert "train 8 (0 anomalous)" in line
    # the intensity scale comes from the pinned train render only
    import tifffile
    s0 = np.concatenate([tifffile.imread(tmp_path / "d" / s["files"]["intensity"]).ravel() for s in r0])
    assert m["modalities"]["intensity"]["scale"] == pytest.approx(np.percentile(s0, 99.5), rel=1e-3)
    # deterministic; another seed moves val/test but never the pinning
    m2, _ = build_from_renders([f"{train}:train", f"{ev}:eval"], tmp_path / "d2", "dolp", val_fraction=0.25,
                               progress=False)
    assert [(s["id"], s["split"]) for s in m2["samples"]] == [(s["id"], s["split"]) for s in m["samples"]]
    m3, _ = build_from_renders([f"{train}:train", f"{ev}:eval"], tmp_path / "d3", "dolp", val_fraction=0.25,
                               seed=5, progress=False)
    assert {s["id"] for s in m3["samples"] if s["split"] == "train"} == {s["id"] for s in r0}
    assert by["r1_000004"]["label"] == 1


def test_pinned_train_with_anomalies_is_refused(tmp_path, capsys):
    ev = make_render(tmp_path / "eval", MIXED, seed=2)
    other = make_render(tmp_path / "other", NORMAL8, seed=3)
    with pytest.raises(DatasetError, match=r"eval:train.*3 of its 9 samples.*r1_000004, r1_000006, r1_000007"):
        build_from_renders([f"{other}", f"{ev}:train"], tmp_path / "d", "dolp", progress=False)
    _no_output(tmp_path, "d")
    assert cli(["build", "--render", f"{ev}:train", "--out", str(tmp_path / "d"), "--modalities", "dolp",
                "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "error: --render" in err and "000004, 000006, 000007" in err
    _no_output(tmp_path, "d")
    assert cli(["build", "--render", f"{ev}:training", "--out", str(tmp_path / "d")]) == 2
    assert "unknown role 'training'" in capsys.readouterr().err


def test_mixed_pooled_and_pinned(tmp_path):
    pooled = make_render(tmp_path / "pooled", MIXED, seed=4)
    ev = make_render(tmp_path / "eval", MIXED, seed=5)
    m, _ = build_from_renders([pooled, f"{ev}:eval"], tmp_path / "d", "dolp", progress=False)
    r0 = [s for s in m["samples"] if s["id"].startswith("r0_")]
    r1 = [s for s in m["samples"] if s["id"].startswith("r1_")]
    assert sum(s["split"] == "train" for s in r0) == round(0.8 * 6)
    assert all(s["split"] != "train" for s in r1) and all("pinned" not in s for s in r0)
    # without pinning the result is today's: same as assign_splits on the pooled ids
    plain, _ = build_from_renders([pooled], tmp_path / "p", "dolp", progress=False)
    ids = [s["id"] for s in plain["samples"]]
    expect = assign_splits([i for i, s in zip(ids, plain["samples"]) if not s["label"]],
                           [i for i, s in zip(ids, plain["samples"]) if s["label"]], 0)
    assert {s["id"]: s["split"] for s in plain["samples"]} == expect
    assert [r["role"] for r in plain["render_roles"]] == ["pooled"]


def test_eval_only_build_needs_norm_from_for_intensity(tmp_path, capsys):
    ev = make_render(tmp_path / "eval", MIXED, seed=2)
    with pytest.raises(DatasetError, match="--norm-from"):
        build_from_renders([f"{ev}:eval"], tmp_path / "d", "intensity", progress=False)
    _no_output(tmp_path, "d")
    m, _ = build_from_renders([f"{ev}:eval"], tmp_path / "d", "dolp,aolp", progress=False)  # no scale needed
    assert "train" not in {s["split"] for s in m["samples"]}


# ------------------------------------------------------------------ normalisation reuse
def test_norm_from_copies_the_training_normalisation(tmp_path, capsys):
    train = make_render(tmp_path / "train", NORMAL8, seed=1, intensity_gain=3.0)
    ev = make_render(tmp_path / "eval", MIXED, seed=2)
    tm, _ = build_from_renders([f"{train}:train"], tmp_path / "train_data", "intensity,dolp", progress=False)
    em, _ = build_from_renders([f"{ev}:eval"], tmp_path / "test_data", "intensity,dolp",
                               norm_from=tmp_path / "train_data", progress=False)
    own, _ = build_from_renders([ev], tmp_path / "own", "intensity,dolp", progress=False)
    scale = tm["modalities"]["intensity"]["scale"]
    assert scale > 2.0 and own["modalities"]["intensity"]["scale"] < 1.0 + 1e-6   # really another scale
    assert em["modalities"]["intensity"]["scale"] == scale
    assert em["modalities"]["intensity"]["offset"] == tm["modalities"]["intensity"]["offset"]
    src = em["normalisation_from"]
    assert src["manifest_sha256"] == sha256_file(tmp_path / "train_data" / "manifest.json")
    assert src["manifest"].endswith("train_data/manifest.json") and src["modalities"] == ["intensity", "dolp"]
    assert em["modalities"]["intensity"]["normalisation_from"] == src["manifest"]
    assert "copied from" in em["modalities"]["intensity"]["normalisation"]
    assert verify(tmp_path / "test_data") == []
    # the loader applies it
    from polar_detect.dataset.torch_dataset import PolarDataset
    import tifffile
    ds = PolarDataset(tmp_path / "test_data", ("val", "test"), ["intensity"])
    raw = tifffile.imread(tmp_path / "test_data" / ds.samples[0]["files"]["intensity"])
    assert np.allclose(ds[0]["image"].numpy(), raw.transpose(2, 0, 1) / scale, atol=1e-6)
    # bad sources, refused before writing
    with pytest.raises(DatasetError, match=r"--norm-from .*has no modality 'aolp'"):
        build_from_renders([f"{ev}:eval"], tmp_path / "x", "intensity,aolp", norm_from=tmp_path / "train_data",
                           progress=False)
    _no_output(tmp_path, "x")
    assert cli(["build", "--render", f"{ev}:eval", "--out", str(tmp_path / "x"), "--modalities", "intensity",
                "--norm-from", str(tmp_path / "nowhere")]) == 2
    assert "nowhere/manifest.json: no dataset manifest here" in capsys.readouterr().err
    _no_output(tmp_path, "x")


# ------------------------------------------------------------------ ignore regions
def test_parse_min_contrast():
    assert parse_min_contrast("2") == {"*": 2.0}
    assert parse_min_contrast("dent=2.0,water_stain=0.05") == {"dent": 2.0, "water_stain": 0.05}
    assert parse_min_contrast("0.5, dent=2") == {"*": 0.5, "dent": 2.0}
    assert parse_min_contrast(None) == {}
    for bad, msg in (("dent=x", "not a number"), ("dent=-1", ">= 0"), ("=2", "empty class"),
                     ("dent=1,dent=2", "given twice"), ("inf", "finite")):
        with pytest.raises(DatasetError, match=msg):
            parse_min_contrast(bad)
    with pytest.raises(DatasetError, match="--min-visible-px"):
        IgnoreRules(-1)


IGN = [[], [], [], [],
       # 4: visible dent + faint dent (ignored by contrast) -> anomalous, with an ignore region
       [anomaly(1, "dent", (5, 5, 12, 12), contrast=8.0), anomaly(2, "dent", (20, 4, 26, 10), contrast=0.5)],
       # 5: only a tiny scratch (2x2 = 4 px) -> ignore-only image
       [anomaly(1, "scratch", (20, 14, 22, 16), contrast=9.0)],
       # 6: flagged below_min_visible by the renderer -> ignore-only image
       [anomaly(1, "dent", (8, 8, 16, 16), contrast=9.0, below=True)],
       # 7: faint water stain (own per-class threshold) + visible scratch
       [anomaly(1, "water_stain", (4, 4, 10, 10), contrast=0.01), anomaly(2, "scratch", (12, 12, 24, 14), contrast=3.0)],
       [anomaly(1, "dent", (6, 6, 16, 16), contrast=4.0)], [], [], []]


def test_ignore_regions(tmp_path):
    r = make_render(tmp_path / "r", IGN, seed=7)
    m, line = build_from_renders([r], tmp_path / "d", "dolp", min_visible_px=10,
                                 min_contrast="1.0,water_stain=0.05", val_fraction=0.5, progress=False)
    by = {s["id"]: s for s in m["samples"]}
    s4, s5, s6, s7 = (by[f"00000{i}"] for i in (4, 5, 6, 7))
    assert s4["label"] == 1 and not s4["ignore_image"]
    assert [i["id"] for i in s4["instances"]] == [1]
    assert s4["ignored_instances"][0]["id"] == 2 and "contrast 0.5 < 1" in s4["ignored_instances"][0]["reason"]
    mask, ign = _read_png(tmp_path / "d" / s4["mask"]) > 0, _read_png(tmp_path / "d" / s4["ignore"]) > 0
    exp_m = np.zeros(mask.shape, bool)
    exp_m[5:12, 5:12] = True
    exp_i = np.zeros(mask.shape, bool)
    exp_i[4:10, 20:26] = True
    assert (mask == exp_m).all() and (ign == exp_i).all()
    inst = _read_png(tmp_path / "d" / s4["instance_mask"])
    assert set(np.unique(inst)) == {0, 1, 2}               # the instance mask keeps every instance
    assert s5["label"] == 0 and s5["ignore_image"] and s5["mask"] is None and s5["instances"] == []
    assert s5["ignored_instances"][0]["reason"] == "visible_px 4 < 10" and s5["classes"] == []
    assert s6["ignore_image"] and s6["ignored_instances"][0]["reason"] == "below_min_visible"
    assert s7["label"] == 1 and [i["class"] for i in s7["instances"]] == ["scratch"]
    assert s7["ignored_instances"][0]["class"] == "water_stain"
    for s in (s5, s6):
        assert s["split"] in ("val", "test")                 # never trained on
    assert {s["split"] for s in m["samples"] if s["ignore_image"]} == {"val", "test"}   # 2 -> 1 val, 1 test
    assert by["000000"]["ignore_image"] is False and by["000000"].get("ignore") is None
    rules = m["ignore_rules"]
    assert rules["min_visible_px"] == 10 and rules["min_contrast"] == {"*": 1.0, "water_stain": 0.05}
    assert rules["n_ignored_instances"] == 4 and rules["n_ignore_images"] == 2
    assert "4 instances ignored" in line
    assert verify(tmp_path / "d") == []                      # ignore.png and object_mask.png are checksummed
    assert s4["ignore"] in s4["sha256"] and s4["object_mask"] in s4["sha256"]
    # without thresholds only the renderer's below_min_visible flag ignores
    m0, _ = build_from_renders([r], tmp_path / "d0", "dolp", progress=False)
    assert m0["ignore_rules"]["n_ignored_instances"] == 1
    assert {s["id"] for s in m0["samples"] if s["ignore_image"]} == {"000006"}
    # with --impurities normal the stain is normal variation: never an ignore region
    mn, _ = build_from_renders([r], tmp_path / "dn", "dolp", min_contrast="1.0,water_stain=0.05",
                               impurities="normal", progress=False)
    s7n = next(s for s in mn["samples"] if s["id"] == "000007")
    assert s7n["ignored_instances"] == [] and {i["class"] for i in s7n["instances"]} == {"scratch", "water_stain"}


def test_ignore_image_in_pinned_train_is_refused(tmp_path):
    r = make_render(tmp_path / "r", [[], [], [anomaly(1, "dent", (8, 8, 16, 16), below=True)], []], seed=8)
    with pytest.raises(DatasetError, match=r"1 of its 4 samples .*\(ignored\).*000002"):
        build_from_renders([f"{r}:train"], tmp_path / "d", "dolp", progress=False)


def test_old_render_without_visibility_fields(tmp_path):
    """Missing visible_px -> area_px; missing contrast -> +inf (never ignored by contrast)."""
    r = make_render(tmp_path / "r", IGN, seed=7, visibility=False)
    m, _ = build_from_renders([r], tmp_path / "d", "dolp", min_visible_px=10, min_contrast="1.0", progress=False)
    ign = {s["id"]: [i["reason"] for i in s["ignored_instances"]] for s in m["samples"] if s["ignored_instances"]}
    assert ign == {"000005": ["visible_px 4 < 10"]}
    assert next(s for s in m["samples"] if s["id"] == "000004")["label"] == 1
    # and no area_px either: the pixels are counted in anomaly_mask.png
    for d in (r / "samples").iterdir():
        meta = json.loads((d / "meta.json").read_text())
        for a in meta["anomalies"]:
            del a["area_px"]
        (d / "meta.json").write_text(json.dumps(meta))
    m2, _ = build_from_renders([r], tmp_path / "d2", "dolp", min_visible_px=10, progress=False)
    ign2 = {s["id"]: s["ignored_instances"] for s in m2["samples"] if s["ignored_instances"]}
    assert list(ign2) == ["000005"] and ign2["000005"][0]["visible_px"] == 4


def test_ignore_option_errors(tmp_path, capsys):
    r = make_render(tmp_path / "r", IGN, seed=7)
    assert cli(["build", "--render", str(r), "--out", str(tmp_path / "d"), "--min-contrast", "dnet=2"]) == 2
    err = capsys.readouterr().err
    assert "--min-contrast" in err and "'dnet'" in err and "dent" in err
    assert cli(["build", "--render", str(r), "--out", str(tmp_path / "d"), "--min-contrast", "dent=abc"]) == 2
    assert "not a number" in capsys.readouterr().err
    assert cli(["build", "--render", str(r), "--out", str(tmp_path / "d"), "--min-visible-px", "-3"]) == 2
    assert "--min-visible-px" in capsys.readouterr().err
    _no_output(tmp_path, "d")
    meta = json.loads((r / "samples/000004/meta.json").read_text())
    meta["anomalies"][0]["contrast"] = "high"
    (r / "samples/000004/meta.json").write_text(json.dumps(meta))
    assert cli(["build", "--render", str(r), "--out", str(tmp_path / "d"), "--min-contrast", "1"]) == 2
    assert "000004/meta.json: anomaly 1 has contrast 'high'" in capsys.readouterr().err
    _no_output(tmp_path, "d")


def test_object_mask_and_mvtec_export(tmp_path):
    r = make_render(tmp_path / "r", IGN, seed=7)
    m, _ = build_from_renders([r], tmp_path / "d", "intensity", min_visible_px=10, progress=False)
    s = m["samples"][0]
    om = _read_png(tmp_path / "d" / s["object_mask"])
    x0, y0, x1, y1 = PART
    exp = np.zeros(om.shape, np.uint8)
    exp[y0:y1, x0:x1] = 255
    assert om.dtype == np.uint8 and (om == exp).all()
    from polar_detect.dataset.mvtec import export_mvtec
    line = export_mvtec(tmp_path / "d", tmp_path / "mv", progress=False)
    n_ignore = sum(1 for s in m["samples"] if s["ignore_image"] and s["split"] != "val")
    assert f"ignore-only (not exported) {n_ignore}" in line
    exported = {p.stem for p in (tmp_path / "mv" / "intensity").rglob("*.png") if "ground_truth" not in p.parts}
    assert not exported & {s["id"] for s in m["samples"] if s["ignore_image"]}
    assert math.isfinite(m["modalities"]["intensity"]["scale"])
