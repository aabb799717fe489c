"""Modality encodings (polar_detect.dataset.encodings) through a real build: every modality a
dataset stores reads back losslessly within its stated precision, intensity-like modalities
share one scale, and a normalisation borrowed from a training set is the one applied."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from polar_render.io import write_float_tiff, write_json, write_png16

from polar_detect.dataset import encodings as enc
from polar_detect.dataset.build import build_from_renders
from polar_detect.dataset.torch_dataset import PolarDataset

from tests.detect.fake_render import anomaly, make_render

SPECS = [[]] * 6 + [[anomaly(1, "dent", (5, 5, 12, 12))]] * 2

EXPOSURE = 1000.0          # DN per radiance unit of the polarizer PNGs
ALL = list(enc.MODALITIES)


def add_polarizer_files(render, seed=0):
    """Give every fake sample pol0..pol135 (uint16 PNG, exposure_scale) and a 4-component
    Stokes TIFF (S0..S3 x RGB, component-major) so that every modality can be built."""
    rng = np.random.default_rng(seed)
    for d in sorted((render / "samples").iterdir()):
        meta = json.loads((d / "meta.json").read_text())
        h, w = meta["files"]["intensity"]["shape"][:2]
        for a in enc.POL_ANGLES:
            dn = rng.integers(0, 65535, (h, w, 3), dtype=np.uint16)
            write_png16(d / f"pol{a}.png", dn)
            meta["files"][f"pol{a}"] = {"path": f"pol{a}.png", "dtype": "uint16", "shape": [h, w, 3],
                                        "channels": ["R", "G", "B"], "exposure_scale": EXPOSURE}
        write_float_tiff(d / "stokes.tiff", rng.normal(size=(h, w, 12)).astype(np.float32))
        meta["files"]["stokes"] = {"path": "stokes.tiff", "dtype": "float32", "shape": [h, w, 12],
                                   "channels": [f"S{k}.{c}" for k in range(4) for c in "RGB"]}
        write_json(d / "meta.json", meta)
    return render


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    render = add_polarizer_files(make_render(root / "render", SPECS, seed=3))
    m, _ = build_from_renders([render], root / "data", ",".join(ALL), val_fraction=0.2, progress=False)
    return render, root / "data", m


def _stored(data, modality):
    """{id: (H, W, C) stored values} of every sample, read through the loader (no normalisation)."""
    ds = PolarDataset(data, "all", [modality], normalise=False)
    return {it["id"]: it["image"].numpy().transpose(1, 2, 0) for it in (ds[i] for i in range(len(ds)))}


def _source(render, sid, name):
    path = next(p for p in (render / "samples" / sid).iterdir() if p.stem == name)
    if path.suffix == ".png":
        import cv2
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]
    return tifffile.imread(path)


@pytest.mark.parametrize("modality", ["intensity", "dolp", "normals"])
def test_float_modalities_are_bit_exact(built, modality):
    render, data, m = built
    assert m["modalities"][modality]["channels"] == 3
    for sid, a in _stored(data, modality).items():
        assert a.dtype == np.float32 and np.array_equal(a, _source(render, sid, modality))


def test_aolp_round_trips_through_the_doubled_angle(built):
    render, data, m = built
    assert m["modalities"]["aolp"]["channels"] == 6
    for sid, a in _stored(data, "aolp").items():
        phi = _source(render, sid, "aolp")
        back = enc.decode_aolp(a)
        wrapped = (back - phi + np.pi / 2) % np.pi - np.pi / 2          # orientation: period pi
        assert np.abs(wrapped).max() < 2e-6
        assert np.allclose(a[..., :3] ** 2 + a[..., 3:] ** 2, 1.0, atol=1e-6)


def test_aolp_has_no_seam_at_plus_minus_half_pi():
    e = enc.encode_aolp(np.array([[np.pi / 2 - 1e-7, -np.pi / 2 + 1e-7]], np.float32))
    assert np.allclose(e[0, 0], e[0, 1], atol=1e-6)


@pytest.mark.parametrize("angle", enc.POL_ANGLES)
def test_polarizer_images_keep_every_digital_number(built, angle):
    render, data, _ = built
    for sid, a in _stored(data, f"pol{angle}").items():
        dn = _source(render, sid, f"pol{angle}")
        assert np.array_equal(np.rint(a.astype(np.float64) * EXPOSURE), dn)


def test_stokes_keeps_s0_s1_s2_and_drops_s3(built):
    render, data, m = built
    assert m["modalities"]["stokes"]["channels"] == 9
    for sid, a in _stored(data, "stokes").items():
        assert np.array_equal(a, _source(render, sid, "stokes")[..., :9])


def test_intensity_like_modalities_share_the_train_scale(built):
    _, data, m = built
    scales = {k: m["modalities"][k]["scale"] for k in enc.INTENSITY_LIKE}
    assert len(set(scales.values())) == 1 and scales["intensity"] != 1.0
    train = [s for s in m["samples"] if s["split"] == "train"]
    s0 = np.concatenate([enc.subsample(_stored(data, "intensity")[s["id"]]) for s in train])
    assert scales["intensity"] == pytest.approx(np.percentile(s0, enc.SCALE_PERCENTILE), rel=1e-6)
    for k in ("dolp", "aolp", "normals"):
        assert m["modalities"][k]["scale"] == 1.0 and m["modalities"][k]["offset"] == 0.0
    raw = PolarDataset(data, "test", ["intensity"], normalise=False)[0]["image"]
    norm = PolarDataset(data, "test", ["intensity"])[0]["image"]
    assert np.allclose(norm.numpy(), raw.numpy() / scales["intensity"], rtol=1e-6)


def test_normalisation_is_reused_from_a_training_set(built, tmp_path):
    _, train, m = built
    other = make_render(tmp_path / "render", SPECS, seed=9, intensity_gain=5.0)
    own, _ = build_from_renders([other], tmp_path / "own", "intensity", progress=False)
    borrowed, _ = build_from_renders([f"{other}:eval"], tmp_path / "borrowed", "intensity",
                                     norm_from=train, progress=False)
    s_train, s_own = m["modalities"]["intensity"]["scale"], own["modalities"]["intensity"]["scale"]
    assert borrowed["modalities"]["intensity"]["scale"] == s_train and abs(s_own / s_train - 5.0) < 1.5
    raw = PolarDataset(tmp_path / "own", "all", ["intensity"], normalise=False)[0]["image"].numpy()
    via_train = PolarDataset(tmp_path / "own", "all", ["intensity"], normalisation=train)[0]["image"].numpy()
    assert np.allclose(via_train, raw / s_train, rtol=1e-6)
    assert np.allclose(PolarDataset(tmp_path / "borrowed", "all", ["intensity"])[0]["image"].numpy(),
                       raw / s_train, rtol=1e-6)
