"""Backbone-visible input encodings (train-split statistics stored in the model) and
Polar-Ano eq. 4 averaging of per-input predictions (issue 13)."""
import json
import math

import cv2
import numpy as np
import pytest
import tifffile
import torch

from polar_detect.backbones import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor
from polar_detect.models.patchcore import SequentialPatchCore, load_model, save_model
from polar_detect.models.patchcore.encoding import (BINS_PER_DECADE, EncodingError, InputEncoding,
                                             wheel_decode)

# the DoLP statistics of issue 13's usb_brick probe: median 0.017, 99th percentile 0.044,
# rare specular spikes up to 0.78
DOLP_MEDIAN, DOLP_P99, SPIKE = 0.017, 0.044, 0.78
SIGMA = math.log(DOLP_P99 / DOLP_MEDIAN) / 2.3263


def dolp_like(rng, n, h=48, w=64, gain=1.0):
    x = DOLP_MEDIAN * np.exp(SIGMA * rng.standard_normal((n, 1, h, w)))
    spikes = rng.random((n, 1, h, w)) < 1e-3
    x[spikes] = SPIKE
    return np.clip(x * gain, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def extractor():
    torch.set_num_threads(2)
    return FeatureExtractor(pool="seq")


def _items(images, label=0):
    return [{"image": torch.from_numpy(im), "label": label, "id": f"{label}_{i}"} for i, im in enumerate(images)]


# ----------------------------------------------------------------------------- encodings
def test_dolp_encoding_maps_train_percentile_to_backbone_range(extractor):
    rng = np.random.default_rng(0)
    train = dolp_like(rng, 8)
    bright_anomaly = np.ones((1, 1, 48, 64), np.float32)          # label 1: must not enter the statistic
    model = SequentialPatchCore(coreset_size=50, extractor=extractor, encoding="dolp", batch_size=3)
    enc = model.fit_encoding(_items(train) + _items(bright_anomaly, label=1))
    q = np.percentile(train, 99.5, method="lower")
    assert enc.scale == pytest.approx(q, rel=10 ** (0.5 / BINS_PER_DECADE) - 1 + 1e-6)
    assert enc.n_images == 8 and enc.n_values == train.size and enc.clip

    y = model.encode(torch.from_numpy(train)).numpy()
    assert y.min() >= 0 and y.max() <= 1                          # spikes saturate, nothing outside [0, 1]
    assert np.percentile(y, 99.5) == pytest.approx(1.0, abs=0.01)  # the train statistic -> top of the range
    assert 0.2 < np.median(y) < 0.6                                # bulk of DoLP mid-range, not black

    # what the backbone sees after ImageNet normalisation: the encoded bulk is within one
    # ImageNet standard deviation of the mean; raw DoLP (the bug) is ~2 below on every channel
    def backbone_median(x):
        x3 = torch.from_numpy(x).expand(-1, 3, -1, -1)
        z = (x3 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return z.median().item()
    assert abs(backbone_median(y)) < 1.0
    assert backbone_median(train) < -1.8


def test_histogram_percentile_matches_numpy_and_degenerate_input():
    rng = np.random.default_rng(1)
    x = np.exp(rng.normal(0, 3, (5, 3, 40, 40))).astype(np.float32)   # values over many decades
    x[0, 0, :5] = 0.0
    enc = InputEncoding("intensity", percentile=97.0).fit([torch.from_numpy(b) for b in np.split(x, 5)])
    assert enc.scale == pytest.approx(np.percentile(x, 97.0, method="lower"), rel=1.2e-3)
    assert not enc.clip                                            # intensity keeps highlights above q
    assert enc(torch.from_numpy(x)).max().item() > 1.0
    zero = InputEncoding("dolp").fit([torch.zeros(2, 1, 8, 8)])
    assert zero.scale == 1.0 and "degenerate" in zero.source
    with pytest.raises(EncodingError, match="no training values"):
        InputEncoding("dolp").fit([])
    with pytest.raises(EncodingError, match="before it was fitted"):
        InputEncoding("dolp")(torch.zeros(1, 1, 4, 4))


def test_aolp_wheel_is_continuous_invertible_and_three_channel():
    phi = torch.linspace(-math.pi / 2, math.pi / 2, 181).view(1, 1, 1, -1)
    stored = torch.cat([torch.cos(2 * phi), torch.sin(2 * phi)], 1)          # mono: 2 channels
    enc = InputEncoding("aolp")
    y = enc(stored)
    assert y.shape == (1, 3, 1, 181) and y.min() >= 0 and y.max() <= 1
    # -pi/2 and +pi/2 are the same polarization: same colour, no wrap edge
    assert torch.allclose(y[..., 0], y[..., -1], atol=1e-6)
    step = (y[..., 1:] - y[..., :-1]).abs().max()
    assert step < 0.02                                                       # 1 degree -> < 0.02
    back = wheel_decode(y)
    diff = torch.remainder(back - phi + math.pi / 2, math.pi) - math.pi / 2
    assert diff.abs().max() < 1e-5
    # RGB: (cos R, cos G, cos B, sin R, sin G, sin B); equal colours = the mono encoding
    rgb = torch.cat([stored[:, :1]] * 3 + [stored[:, 1:]] * 3, 1)
    assert torch.allclose(enc(rgb), y, atol=1e-6)
    assert enc.out_channels(6) == 3 and enc.out_channels(2) == 3
    with pytest.raises(EncodingError, match="channel pairs"):
        enc(torch.zeros(1, 3, 2, 2))


def test_normals_affine_and_unknown_modality():
    n = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    assert torch.equal(InputEncoding("normals")(n).flatten(), torch.tensor([0.0, 0.5, 1.0]))
    assert not InputEncoding("normals").needs_fit and not InputEncoding("aolp").needs_fit
    with pytest.raises(EncodingError, match="stokes"):
        InputEncoding("stokes")


def test_encoding_statistics_saved_and_restored(extractor, tmp_path):
    rng = np.random.default_rng(2)
    train = _items(dolp_like(rng, 6))
    model = SequentialPatchCore(coreset_size=60, extractor=extractor, encoding="dolp").fit(train)
    path = save_model(model, tmp_path / "m.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["polar_detect"])
    assert meta["encoding"]["scale"] == model.encoding.scale and meta["encoding"]["modality"] == "dolp"
    m2 = load_model(path, extractor=extractor)
    assert m2.encoding == model.encoding and not m2.encoding.needs_fit
    x = torch.from_numpy(dolp_like(rng, 2))
    assert torch.equal(model.predict(x)[1], m2.predict(x)[1])
    # a further fit (fine-tuning) keeps the stored statistics
    m2.finetune(_items(dolp_like(rng, 2, gain=3.0)), epochs=1)
    assert m2.encoding.scale == model.encoding.scale
    # legacy models (no encoding) load as such and take the images as given
    legacy = SequentialPatchCore(coreset_size=60, extractor=extractor).fit(train)
    m3 = load_model(save_model(legacy, tmp_path / "legacy.safetensors"), extractor=extractor)
    assert m3.encoding is None and torch.equal(m3.encode(x), x)


# ----------------------------------------------------------------------------- CLI on disk
def _write_dataset(root, images: dict, scale: float):
    """A dataset (contract section 2) with one DoLP modality; ``images``: id -> (split, label, array)."""
    (root / "samples").mkdir(parents=True)
    samples = []
    for sid, (split, label, arr) in images.items():
        tifffile.imwrite(root / "samples" / f"{sid}_dolp.tiff", arr[0])
        mask = np.zeros(arr.shape[-2:], np.uint8)
        if label:
            mask[10:20, 10:20] = 255
        cv2.imwrite(str(root / "samples" / f"{sid}_mask.png"), mask)
        samples.append({"id": sid, "split": split, "label": label, "classes": ["dent"] if label else [],
                        "files": {"dolp": f"samples/{sid}_dolp.tiff"},
                        "mask": f"samples/{sid}_mask.png", "instance_mask": None, "instances": []})
    man = {"format": "polar_detect.dataset/1", "name": root.name, "seed": 0, "classes": {"dent": "defect"},
           "modalities": {"dolp": {"channels": 1, "scale": scale, "offset": 0.0,
                                   "encoding": "float32 TIFF", "normalisation": f"x / {scale}"}},
           "samples": samples}
    (root / "manifest.json").write_text(json.dumps(man))
    return root


def test_cli_uses_train_split_statistics_not_the_dataset_normalisation(tmp_path, capsys):
    from polar_detect.models.patchcore.__main__ import main
    rng = np.random.default_rng(3)
    imgs = {}
    for i in range(6):
        imgs[f"tr{i}"] = ("train", 0, dolp_like(rng, 1)[0])
    for i in range(4):                       # held-out images 4x brighter: must not move the statistic
        arr = dolp_like(rng, 1, gain=4.0)[0]
        if i % 2:
            arr[:, 10:20, 10:20] = 0.2
        imgs[f"te{i}"] = ("test", i % 2, arr)
    imgs["va0"] = ("val", 0, dolp_like(rng, 1)[0])
    a = _write_dataset(tmp_path / "a", imgs, scale=1.0)
    b = _write_dataset(tmp_path / "b", imgs, scale=0.05)    # e.g. built with --norm-from another set
    train_values = np.stack([v[2] for v in imgs.values() if v[0] == "train"]).astype(np.float64)

    preds = {}
    for enc in ("auto", "none"):
        model = tmp_path / f"{enc}.safetensors"
        assert main(["train", "--data", str(a), "--modality", "dolp", "--encoding", enc, "--coreset-size", "60",
                     "--quiet", "--out", str(model)]) == 0
        for ds in (a, b):
            out = tmp_path / f"pred_{enc}_{ds.name}"
            assert main(["predict", "--model", str(model), "--data", str(ds), "--quiet", "--out", str(out)]) == 0
            preds[enc, ds.name] = json.loads((out / "predictions.json").read_text())
    stored = load_model(tmp_path / "auto.safetensors", download=False).encoding
    assert stored.scale == pytest.approx(np.percentile(train_values, 99.5, method="lower"), rel=1.2e-3)
    assert stored.n_images == 6
    # the encoded model reads stored values: the other dataset normalisation changes nothing
    assert preds["auto", "a"]["scores"] == preds["auto", "b"]["scores"]
    assert preds["auto", "b"]["modality"] == "dolp"
    # control: a model fed manifest-normalised values does see the difference
    assert preds["none", "a"]["scores"] != preds["none", "b"]["scores"]
    # predict refuses another modality than the model's
    assert main(["predict", "--model", str(tmp_path / "auto.safetensors"), "--data", str(a), "--modality",
                 "intensity", "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "trained on 'dolp'" in capsys.readouterr().err
