"""The dataset manifest (polar_detect.dataset.manifest): read and validated (errors name the
manifest and the key), verified against the recorded checksums, and the normalisation record
models compare at predict time."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from polar_detect.dataset.__main__ import main as cli
from polar_detect.dataset.build import build_from_renders
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.manifest import (normalisation_differences, read_manifest, sample_files, sha256_file,
                                           verify)

from tests.detect.fake_render import MIXED, NORMAL8, make_render


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


def test_normalisation_check_for_models(tmp_path):
    from polar_detect.dataset.manifest import check_normalisation, normalisation_of
    train = make_render(tmp_path / "train", NORMAL8, seed=1, intensity_gain=3.0)
    ev = make_render(tmp_path / "eval", MIXED, seed=2)
    tm, _ = build_from_renders([f"{train}:train"], tmp_path / "tr", "intensity", progress=False)
    build_from_renders([f"{ev}:eval"], tmp_path / "same", "intensity", norm_from=tmp_path / "tr", progress=False)
    build_from_renders([ev], tmp_path / "other", "intensity", progress=False)
    trained = normalisation_of(tm, ["intensity"])
    assert check_normalisation(trained, None, tmp_path / "same", ["intensity"])["status"] == "match"
    rec = check_normalisation(trained, None, tmp_path / "other", ["intensity"])
    assert rec["status"] == "mismatch" and "intensity: scale" in rec["differences"][0]
    with pytest.raises(DatasetError, match="normalisation differs"):
        check_normalisation(trained, None, tmp_path / "other", ["intensity"], on_mismatch="error")
    # an older model: no stored normalisation, falls back to the training manifest it recorded
    rec = check_normalisation(None, str(tmp_path / "tr" / "manifest.json"), tmp_path / "other", ["intensity"])
    assert rec["status"] == "mismatch" and rec["trained_source"].startswith("training manifest")
    assert check_normalisation(None, str(tmp_path / "gone"), tmp_path / "other", ["intensity"])["status"] == "unknown"


def _hand_made(root):
    """A two-sample manifest with real files: (root, manifest dict)."""
    (root / "img").mkdir(parents=True)
    for sid in ("a", "b"):
        (root / "img" / f"{sid}.png").write_bytes(b"x")
    m = {"format": "polar_detect.dataset/1", "name": "t", "seed": 0, "classes": {},
         "modalities": {"dolp": {"channels": 1, "encoding": "png16", "normalisation": "/65535",
                                 "scale": 1.0, "offset": 0.0}},
         "samples": [{"id": sid, "split": split, "label": 0, "classes": [], "source": "s",
                      "files": {"dolp": f"img/{sid}.png"}, "mask": None, "instance_mask": None,
                      "instances": [], "sha256": {}} for sid, split in (("a", "train"), ("b", "test"))]}
    (root / "manifest.json").write_text(json.dumps(m))
    return root, m


def _write(root, m):
    (root / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format="other/2"), "format"),
    (lambda m: m["samples"][1].update(id="a"), r"samples\[1\].*'a'"),
    (lambda m: m["samples"][0].update(id="../x"), r"samples\[0\]"),
    (lambda m: m["samples"][1].update(split="holdout"), r"samples\[1\].*split"),
    (lambda m: m["samples"][0].update(label=2), r"samples\[0\].*label"),
    (lambda m: m["modalities"]["dolp"].update(scale=0.0), "dolp"),
    (lambda m: m["modalities"]["dolp"].update(offset=float("nan")), "dolp"),
    (lambda m: m["samples"][0]["files"].update(dolp="/etc/hostname"), r"samples\[0\]\.files\.dolp.*outside"),
    (lambda m: m["samples"][1]["files"].update(dolp="../../x.png"), r"samples\[1\]\.files\.dolp.*outside"),
], ids=["format", "duplicate-id", "id-path", "split", "label", "scale", "offset", "absolute", "dotdot"])
def test_read_manifest_refuses_what_the_loaders_rely_on(tmp_path, edit, message):
    root, m = _hand_made(tmp_path / "d")
    assert read_manifest(root)["samples"][1]["id"] == "b"
    edit(m)
    _write(root, m)
    with pytest.raises(DatasetError, match="manifest.json") as err:
        read_manifest(root)
    assert err.match(message)


def test_missing_or_broken_manifest_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nope/manifest.json"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="manifest.json"):
        read_manifest(tmp_path)


def test_sha256_file_and_sample_files(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 1000).hexdigest() == sha256_file(p, chunk=7)
    s = {"files": {"dolp": "img/a.png", "aolp": "img/a_aolp.tiff"}, "mask": "m/a.png", "instance_mask": None,
         "ignore": "m/a_ignore.png"}
    assert set(sample_files(s)) == {"img/a.png", "img/a_aolp.tiff", "m/a.png", "m/a_ignore.png"}


def test_normalisation_differences_name_modality_and_field():
    a = {"intensity": {"scale": 2.0, "offset": 0.0}, "dolp": {"scale": 1.0, "offset": 0.0}}
    assert normalisation_differences(a, json.loads(json.dumps(a))) == []
    assert normalisation_differences(a, {**a, "dolp": {"scale": 1.0 + 1e-9, "offset": 0.0}}) == []   # rtol
    diff = normalisation_differences(a, {**a, "intensity": {"scale": 3.0, "offset": 0.0}})
    assert len(diff) == 1 and diff[0].startswith("intensity: scale")
    assert normalisation_differences(a, {"intensity": a["intensity"]})                  # a modality missing
