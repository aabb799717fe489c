"""The predictions contract (polar_detect.predictions): what a writer writes, the one reader
accepts, bit for bit; every model's writer produces a directory that passes the reader."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from polar_detect.dataset.errors import InputError
from polar_detect.models.baseline.blur import predict_dataset as baseline_predict
from polar_detect.models.draem.__main__ import main as draem_main
from polar_detect.predictions import (PredictionsWriter, check_predictions, read_map, read_predictions,
                                      write_predictions)

from tests.detect.draem_tiny import trained_tiny
from tests.detect.evaluation.ignore_data import data as ignore_data  # noqa: F401 - fixture

H, W = 40, 56


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The DRÆM tiny dataset (4 train, 2 test of 40x56) and a model trained on it."""
    return trained_tiny(tmp_path_factory.mktemp("pred"))


def _maps(seed=0):
    rng = np.random.default_rng(seed)
    return {"000004": rng.normal(size=(H, W)).astype(np.float32),
            "000005": (rng.random((H, W)) * 1e-30).astype(np.float32)}   # tiny values survive


def test_round_trip_is_bit_exact(tmp_path):
    maps = _maps()
    scores = {sid: float(m.max()) for sid, m in maps.items()}
    rec = write_predictions(tmp_path / "p", "toy", scores, maps, dataset="d/manifest.json", split="test",
                            threshold=0.25, extra={"k": 1})
    p, path = read_predictions(tmp_path / "p")
    assert path == tmp_path / "p" / "predictions.json"
    assert p == json.loads(path.read_text()) and p["model"] == "toy" and p["extra"] == {"k": 1}
    assert p["scores"] == scores and p["threshold"] == 0.25 and rec["maps"] == p["maps"]
    for sid, m in maps.items():
        back = read_map(tmp_path / "p" / p["maps"][sid])
        assert back.dtype == np.float32 and np.array_equal(back, m)


def test_rewrite_replaces_the_directory(tmp_path):
    maps = _maps()
    write_predictions(tmp_path / "p", "a", {k: 1.0 for k in maps}, maps, split="test")
    write_predictions(tmp_path / "p", "b", {"000004": 2.0}, {"000004": maps["000004"]}, split="test")
    p, _ = read_predictions(tmp_path / "p")
    assert p["model"] == "b" and set(p["scores"]) == {"000004"}
    assert sorted(f.name for f in (tmp_path / "p" / "maps").iterdir()) == ["000004.tiff"]   # no stale map


def test_writer_refuses_nan_and_repeated_ids(tmp_path):
    w = PredictionsWriter(tmp_path)
    bad = np.zeros((4, 4), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        w.add("a", 1.0, bad)
    with pytest.raises(ValueError, match="non-finite"):
        w.add("a", float("inf"), np.zeros((4, 4)))
    assert not (tmp_path / "maps" / "a.tiff").exists()
    w.add("a", 1.0, np.zeros((4, 4)))
    with pytest.raises(ValueError, match="twice"):
        w.add("a", 1.0, np.zeros((4, 4)))
    w.add("b", 0.5)                                   # a score without a map
    assert w.finish(model="m")["maps"] == {"a": "maps/a.tiff", "b": None}


def _write_raw(pred, sid, arr):
    (pred / "maps").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(pred / "maps" / f"{sid}.tiff", arr)
    (pred / "predictions.json").write_text(json.dumps({"model": "x", "split": "test", "scores": {sid: 1.0},
                                                       "maps": {sid: f"maps/{sid}.tiff"}}))


@pytest.mark.parametrize("case, message", [
    ("size", "anomaly map is 40x55 (HxW) but sample '000004' is 40x56"),
    ("nan", "anomaly map contains NaN or infinite values (1 of 2240 pixels)"),
    ("missing", "anomaly map not found"),
    ("unknown", "sample id 'nope' is not in"),
    ("outside", "maps.000004"),
])
def test_reader_names_what_is_wrong(tiny, tmp_path, case, message):
    data, _ = tiny
    man = json.loads((data / "manifest.json").read_text())
    for s in man["samples"]:
        s["size"] = [H, W]
    (data / "manifest.json").write_text(json.dumps(man))
    pred = tmp_path / "pred"
    a = np.zeros((H, W), np.float32)
    if case == "size":
        a = a[:, :-1]
    if case == "nan":
        a[3, 3] = np.nan
    _write_raw(pred, "000004", a)
    p = json.loads((pred / "predictions.json").read_text())
    if case == "missing":
        (pred / "maps" / "000004.tiff").unlink()
    if case == "unknown":
        p["scores"] = {"nope": 1.0}
    if case == "outside":
        p["maps"]["000004"] = "../elsewhere.tiff"
    (pred / "predictions.json").write_text(json.dumps(p))
    with pytest.raises(InputError) as e:
        check_predictions(pred, data)
    assert message in str(e.value)


def test_baseline_output_passes_the_reader(ignore_data, tmp_path):  # noqa: F811
    data, m = ignore_data
    pred = baseline_predict(data, tmp_path / "base", splits="test,val", sigma=2.0)
    entries = check_predictions(tmp_path / "base", data)
    wanted = {s["id"] for s in m["samples"] if s["split"] in ("test", "val")}
    assert {e.sample.id for e in entries} == wanted == set(pred["scores"])
    for e in entries:
        a = read_map(e.map)
        assert a.shape == tuple(e.sample.e["size"]) and e.score == pytest.approx(float(a.max()))


def test_draem_output_passes_the_reader(tiny, tmp_path, one_thread):
    data, model = tiny
    assert draem_main(["predict", "--model", str(model), "--data", str(data), "--split", "test",
                       "--out", str(tmp_path / "pred"), "--no-overlay"]) == 0
    entries = check_predictions(tmp_path / "pred", data)
    assert sorted(e.sample.id for e in entries) == ["000004", "000005"]
    for e in entries:
        a = read_map(e.map)
        assert a.shape == (H, W) and 0.0 <= a.min() and a.max() <= 1.0     # softmax probabilities
