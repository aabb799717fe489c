"""polar_detect.dataset.writer: every file a sample names reads back as written (per
modality encoding), checksums match, and the atomic swap keeps the old dataset when
finishing fails."""
from __future__ import annotations

import os

import numpy as np
import pytest

from polar_render import io
from polar_detect.dataset import encodings as enc
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.images import read_png, read_tiff
from polar_detect.dataset.manifest import read_manifest, sha256_file
from polar_detect.dataset.writer import DatasetWriter

H, W = 6, 8


def _arrays(rng):
    phi = rng.uniform(-np.pi / 2, np.pi / 2, (H, W, 3))
    return {"intensity": rng.uniform(0, 2, (H, W, 3)), "dolp": rng.uniform(0, 1, (H, W, 3)),
            "aolp": enc.encode_aolp(phi), "normals": rng.normal(size=(H, W, 3))}, phi


def _write(out, value=1, overwrite=False, finish=True):
    rng = np.random.default_rng(value)
    arrays, phi = _arrays(rng)
    mask = np.zeros((H, W), bool)
    mask[1:3, 2:6] = True
    inst = mask.astype(np.uint16) * 7
    with DatasetWriter(out, "t", 0, overwrite) as w:
        w.add("a", "train", 0, "src-a", arrays)
        w.add("b", "test", 1, "src-b", arrays, mask=mask, instance_mask=inst,
              instances=[{"id": 7, "class": "dent", "kind": "defect"}], classes=["dent"],
              regions={7: mask}, object_mask=np.ones((H, W), bool))
        if finish:
            w.finish({m: enc.modality_entry(m, ["R", "G", "B"]) for m in arrays}, {"dent": "defect"})
    return arrays, phi, mask, inst


def test_every_encoding_round_trips(tmp_path):
    out = tmp_path / "d"
    arrays, phi, mask, inst = _write(out)
    m = read_manifest(out)
    b = {s["id"]: s for s in m["samples"]}["b"]
    for mod, a in arrays.items():
        got = read_tiff(out / b["files"][mod])
        np.testing.assert_array_equal(got, enc.as_hwc(a))
    np.testing.assert_allclose(enc.decode_aolp(read_tiff(out / b["files"]["aolp"])), phi, atol=1e-6)
    np.testing.assert_array_equal(read_png(out / b["mask"]), mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(read_png(out / b["instance_mask"]), inst)
    np.testing.assert_array_equal(read_png(out / b["instances"][0]["region_mask"]), mask.astype(np.uint8) * 255)
    assert read_png(out / b["object_mask"]).min() == 255
    for rel, digest in b["sha256"].items():
        assert sha256_file(out / rel) == digest
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_non_finite_refused_and_nothing_left(tmp_path):
    out = tmp_path / "d"
    with pytest.raises(DatasetError, match="src: dolp has 1 pixels with NaN"):
        with DatasetWriter(out, "t") as w:
            w.add("a", "train", 0, "src", {"dolp": np.where(np.eye(H, W) * np.arange(W) == 3, np.nan, 0.5)})
    assert list(tmp_path.iterdir()) == []


def test_swap_failure_keeps_the_old_dataset(tmp_path, monkeypatch):
    out = tmp_path / "d"
    old_arrays = _write(out, value=1)[0]
    before = (out / "manifest.json").read_bytes()
    real_replace = os.replace

    def failing(src, dst):
        if os.path.basename(str(src)).startswith(".tmp-d"):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", failing)
    with pytest.raises(OSError, match="Input/output error"):
        _write(out, value=2, overwrite=True)
    monkeypatch.setattr(io.os, "replace", real_replace)
    assert (out / "manifest.json").read_bytes() == before
    m = read_manifest(out)
    a = {s["id"]: s for s in m["samples"]}["a"]
    np.testing.assert_array_equal(read_tiff(out / a["files"]["intensity"]), enc.as_hwc(old_arrays["intensity"]))
    assert [p.name for p in tmp_path.iterdir()] == ["d"]     # no .tmp-* / .old-* left behind
    # an error before finish leaves the old dataset too; a finished overwrite replaces it
    with pytest.raises(DatasetError, match="duplicate sample id"):
        with DatasetWriter(out, "t", 0, True) as w:
            w.add("a", "train", 0, "s", {"dolp": np.zeros((H, W))})
            w.add("a", "train", 0, "s", {"dolp": np.zeros((H, W))})
    assert (out / "manifest.json").read_bytes() == before
    new_arrays = _write(out, value=3, overwrite=True)[0]
    a = {s["id"]: s for s in read_manifest(out)["samples"]}["a"]
    np.testing.assert_array_equal(read_tiff(out / a["files"]["intensity"]), enc.as_hwc(new_arrays["intensity"]))
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(out, "t")
