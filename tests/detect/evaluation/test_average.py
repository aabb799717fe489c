"""Polar-Ano eq. 4 over per-input predictions (polar_detect.evaluation.average), checked
against a direct numpy computation: the averaged map is the mean over inputs of each input's
map z-scored with the mean/std of its normal val pixels (``standardise="none"``: the plain
mean); image score = max of that map, or the mean of z-scored input scores."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tifffile

from polar_detect.evaluation.average import AverageError, average_predictions
from polar_detect.predictions import PredictionsWriter


def _predict(run, out, scale, offset, seed):
    """A predictions directory over the test and val samples of the hand-made run; its maps are
    ``scale * noise + offset`` (inputs of different units)."""
    data, _, _, samples, _ = run
    rng = np.random.default_rng(seed)
    w = PredictionsWriter(out)
    maps = {}
    for s in samples:
        if s["split"] in ("val", "test"):
            maps[s["id"]] = (scale * rng.random((8, 10)) + offset).astype(np.float32)
            w.add(s["id"], float(maps[s["id"]].max() + rng.normal()), maps[s["id"]])
    sha = hashlib.sha256((data / "manifest.json").read_bytes()).hexdigest()
    w.finish(model=f"toy{seed}", dataset=str(data / "manifest.json"), manifest_sha256=sha, split="test",
             threshold=None, modality=f"m{seed}")
    return maps, json.loads((out / "predictions.json").read_text())["scores"]


@pytest.fixture
def inputs(run, tmp_path):
    _, _, _, samples, _ = run
    normal_val = [s["id"] for s in samples if s["split"] == "val" and s["label"] == 0]
    ins = [(tmp_path / f"p{k}",) + _predict(run, tmp_path / f"p{k}", scale, offset, k)
           for k, (scale, offset) in enumerate([(1.0, 0.0), (40.0, 7.0), (0.01, -3.0)])]
    return ins, normal_val


def test_equation_4_is_the_mean_of_z_scored_maps(inputs, tmp_path):
    ins, normal_val = inputs
    res = average_predictions([d for d, _, _ in ins], tmp_path / "avg")
    assert res["threshold"] is None and res["model"] == "average(m0+m1+m2)"
    stats = []
    for _, maps, scores in ins:
        px = np.concatenate([maps[i].astype(np.float64).ravel() for i in normal_val])
        stats.append((px.mean(), px.std()))
    for sid in res["scores"]:
        want = np.mean([(maps[sid] - mu) / sd for (_, maps, _), (mu, sd) in zip(ins, stats)], axis=0)
        got = tifffile.imread(tmp_path / "avg" / res["maps"][sid])
        assert np.allclose(got, want, atol=1e-5)
        assert res["scores"][sid] == pytest.approx(float(got.max()), abs=1e-6)
    recorded = [i["stats"] for i in res["average"]["inputs"]]
    assert [v for r in recorded for v in (r["mean"], r["std"])] == pytest.approx([v for st in stats for v in st])
    assert all(r["n_images"] == len(normal_val) and r["split"] == "val" for r in recorded)
    # without standardisation: eq. 4 as published, the plain mean of the maps
    plain = average_predictions([d for d, _, _ in ins], tmp_path / "plain", standardise="none")
    sid = next(iter(plain["scores"]))
    assert np.allclose(tifffile.imread(tmp_path / "plain" / plain["maps"][sid]),
                       np.mean([maps[sid] for _, maps, _ in ins], axis=0), atol=1e-5)
    assert plain["average"]["inputs"][0]["stats"] is None


def test_mean_score_z_scores_each_inputs_image_scores(run, inputs, tmp_path):
    """--score mean with --stats-split test (the run has one normal val image, three normal test ones)."""
    ins, _ = inputs
    normal_test = [s["id"] for s in run[3] if s["split"] == "test" and s["label"] == 0]
    res = average_predictions([d for d, _, _ in ins], tmp_path / "avg", score="mean", stats_split="test")
    assert len(normal_test) == 3 and res["average"]["inputs"][0]["stats"]["n_images"] == 3
    z = []
    for _, _, scores in ins:
        ref = np.array([scores[i] for i in normal_test])
        z.append({sid: (v - ref.mean()) / ref.std() for sid, v in scores.items()})
    for sid, got in res["scores"].items():
        assert got == pytest.approx(np.mean([zi[sid] for zi in z]), rel=1e-9)


def test_inputs_ranking_survives_an_affine_change_of_units(inputs, tmp_path):
    """A z-score is affine per input: rescaling one input's maps (distances in other units)
    leaves the averaged maps unchanged."""
    ins, _ = inputs
    base = average_predictions([d for d, _, _ in ins], tmp_path / "a")
    d1, maps1, scores1 = ins[1]
    w = PredictionsWriter(tmp_path / "scaled")
    for sid, a in maps1.items():
        w.add(sid, 3.0 * scores1[sid] - 2.0, 3.0 * a - 2.0)
    p = json.loads((d1 / "predictions.json").read_text())
    w.finish(model="scaled", dataset=p["dataset"], manifest_sha256=p["manifest_sha256"], split="test", threshold=None)
    res = average_predictions([ins[0][0], tmp_path / "scaled", ins[2][0]], tmp_path / "b")
    for sid in base["scores"]:
        assert np.allclose(tifffile.imread(tmp_path / "a" / base["maps"][sid]),
                           tifffile.imread(tmp_path / "b" / res["maps"][sid]), atol=1e-4)


def test_refusals_name_the_directory(inputs, tmp_path):
    ins, _ = inputs
    with pytest.raises(AverageError, match="given twice"):
        average_predictions([ins[0][0], ins[0][0]], tmp_path / "x")
    with pytest.raises(AverageError, match="no label-0 'train' samples"):
        average_predictions([d for d, _, _ in ins], tmp_path / "y", stats_split="train")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------ eq. 4 through the PatchCore CLI (`patchcore average`)
def _manifest(root, samples):
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({
        "format": "polar_detect.dataset/1", "classes": {}, "modalities": {},
        "samples": [{"id": s, "split": sp, "label": lb} for s, (sp, lb) in samples.items()]}))
    return root / "manifest.json"


def _pred(d, manifest, maps: dict, split="test", modality=None):
    (d / "maps").mkdir(parents=True)
    for sid, m in maps.items():
        tifffile.imwrite(d / "maps" / f"{sid}.tiff", m.astype(np.float32))
    p = {"model": "seq_patchcore", "dataset": str(manifest),
         "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(), "split": split,
         "threshold": 1.0, "modality": modality,
         "scores": {s: float(m.max()) for s, m in maps.items()}, "maps": {s: f"maps/{s}.tiff" for s in maps}}
    (d / "predictions.json").write_text(json.dumps(p))
    return d


SAMPLES = {"t0": ("test", 0), "t1": ("test", 1), "t2": ("test", 1),
           "v0": ("val", 0), "v1": ("val", 0), "v2": ("val", 1), "x0": ("train", 0)}


@pytest.fixture
def per_input(tmp_path):
    rng = np.random.default_rng(4)
    man = _manifest(tmp_path / "data", SAMPLES)
    ids = [s for s in SAMPLES if s != "x0"]
    # three inputs on very different distance scales
    raw = {k: {s: (rng.gamma(2.0, 1.0, (6, 8)) * gain + off) for s in ids}
           for k, gain, off in (("intensity", 1.0, 10.0), ("dolp", 40.0, 0.0), ("normals", 0.01, 3.0))}
    dirs = [_pred(tmp_path / k, man, raw[k], modality=k) for k in raw]
    return tmp_path, man, ids, raw, dirs


def _f32(x):
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def test_average_standardises_with_val_normals_then_averages(per_input):
    tmp, man, ids, raw, dirs = per_input
    res = average_predictions(dirs, tmp / "avg")
    # direct numpy: per input, mean/std over every pixel of the label-0 val maps (v0, v1 only)
    want = {}
    for sid in ids:
        z = []
        for k in raw:
            normal = np.stack([_f32(raw[k]["v0"]), _f32(raw[k]["v1"])])
            z.append((_f32(raw[k][sid]) - normal.mean()) / normal.std())
        want[sid] = np.mean(z, axis=0)
    for sid in ids:
        got = tifffile.imread(tmp / "avg" / res["maps"][sid])
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want[sid], rtol=1e-5, atol=1e-5)
        assert res["scores"][sid] == pytest.approx(want[sid].max(), rel=1e-9)
    assert res["split"] == "test" and res["threshold"] is None and set(res["scores"]) == set(ids)
    st = res["average"]["inputs"][1]["stats"]
    assert st["n_images"] == 2 and st["split"] == "val" and res["average"]["inputs"][1]["modality"] == "dolp"

    # --score mean: per-input image scores standardised with the normal val scores, averaged
    res_m = average_predictions(dirs, tmp / "avg_mean", score="mean")
    sc = {k: np.array([raw[k][s].max() for s in ("v0", "v1")]) for k in raw}   # the JSON scores
    for sid in ids:
        w = np.mean([(raw[k][sid].max() - sc[k].mean()) / sc[k].std() for k in raw])
        assert res_m["scores"][sid] == pytest.approx(w, rel=1e-6, abs=1e-9)

    # --standardise none: Polar-Ano eq. 4 as published (plain mean)
    res_n = average_predictions(dirs, tmp / "avg_none", standardise="none")
    plain = np.mean([_f32(raw[k]["t1"]) for k in raw], axis=0)
    np.testing.assert_allclose(tifffile.imread(tmp / "avg_none" / "maps" / "t1.tiff"), plain, rtol=1e-6)


def test_average_is_invariant_to_each_inputs_distance_scale(per_input, tmp_path):
    tmp, man, ids, raw, dirs = per_input
    base = average_predictions(dirs, tmp / "avg")
    scaled = _pred(tmp / "dolp_x1000", man, {s: raw["dolp"][s] * 1000 + 7 for s in ids}, modality="dolp")
    res = average_predictions([dirs[0], scaled, dirs[2]], tmp / "avg2")
    for sid in ids:
        assert res["scores"][sid] == pytest.approx(base["scores"][sid], rel=1e-4, abs=1e-4)


def test_average_cli_refuses_mismatched_inputs(per_input, capsys):
    from polar_detect.models.patchcore.__main__ import main
    tmp, man, ids, raw, dirs = per_input
    ok = ["average", "--pred", str(dirs[0]), "--pred", str(dirs[1]), "--quiet", "--out"]
    assert main(ok + [str(tmp / "ok")]) == 0
    assert json.loads((tmp / "ok" / "predictions.json").read_text())["model"] == "average(intensity+dolp)"

    other = _manifest(tmp / "data2", dict(SAMPLES, extra=("train", 0)))        # another dataset
    cases = {
        "dataset differs": _pred(tmp / "other_ds", other, raw["dolp"]),
        "split": _pred(tmp / "other_split", man, raw["dolp"], split="val"),
        "other samples": _pred(tmp / "fewer", man, {s: raw["dolp"][s] for s in ids if s != "t2"}),
    }
    for msg, bad in cases.items():
        assert main(["average", "--pred", str(dirs[0]), "--pred", str(bad), "--quiet",
                     "--out", str(tmp / "bad")]) == 2
        err = capsys.readouterr().err
        assert msg in err and str(bad) in err, err
    shape = _pred(tmp / "shape", man, {s: np.zeros((5, 5)) + 1 for s in ids})
    assert main(["average", "--pred", str(dirs[0]), "--pred", str(shape), "--standardise", "none", "--quiet",
                 "--out", str(tmp / "bad")]) == 2
    assert "map sizes differ" in capsys.readouterr().err
    assert main(["average", "--pred", str(dirs[0]), "--pred", str(dirs[0]), "--quiet",
                 "--out", str(tmp / "bad")]) == 2
    assert "given twice" in capsys.readouterr().err
    no_val = [_pred(tmp / f"nv{k}", man, {s: raw[k][s] for s in ids if s[0] == "t"}) for k in ("intensity", "dolp")]
    assert main(["average", "--pred", str(no_val[0]), "--pred", str(no_val[1]), "--quiet",
                 "--out", str(tmp / "bad")]) == 2
    assert "--split test,val" in capsys.readouterr().err
    man.write_text(man.read_text() + " ")                                        # dataset changed since
    with pytest.raises(AverageError, match="sha256"):
        average_predictions(dirs, tmp / "bad")
