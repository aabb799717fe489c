"""Bad-input corpus for ``python -m polar_detect.models.simplenet train|predict|export``.

Every case runs the real CLI entry point in-process and must: exit 2; print exactly one
``error:`` line naming the file / option / key and the problem, no traceback; write nothing
and lose nothing (the whole test directory -- dataset copy, model copy, output paths -- is
byte-identical before and after); and never execute a planted pickle.
"""
import json

import numpy as np
import pytest
import tifffile
import torch

from polar_detect.models.simplenet import store
from polar_detect.models.simplenet.__main__ import main

from tests.detect.draem_tiny import CorpusCopy, assert_refused, dataset, write_trap
from tests.detect.simplenet_tiny import FAST, one_thread, train_simplenet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("simplenet_corpus")
    data = dataset(root / "data", n_train=4, n_test=2)
    return data, one_thread(lambda: train_simplenet(data, root / "model"))


class Ctx(CorpusCopy):

    def train(self, *extra, data=None, out=None):
        return ["train", "--data", str(data or self.data), "--out", str(out or self.tmp / "new"), *FAST, *extra]

    def predict(self, *extra, model=None, data=None, out=None):
        return ["predict", "--model", str(model or self.model), "--data", str(data or self.data),
                "--out", str(out or self.tmp / "pred"), "--quiet", *extra]

    def manifest(self, fn):
        p = self.data / "manifest.json"
        m = json.loads(p.read_text())
        fn(m)
        p.write_text(json.dumps(m))

    def edit_model(self, fn):
        f = self.model / "model.safetensors"
        tensors, meta = store.read(f, store.MODEL_FORMAT)
        fn(tensors, meta)
        from polar_detect import store as files
        files.write(f, tensors, meta)


def _all_anomalous(c):
    c.manifest(lambda m: [s.update(label=1) for s in m["samples"] if s["split"] == "train"])
    return c.train()


def _nan_image(c):
    p = c.data / "samples" / "000001" / "intensity.tiff"
    a = tifffile.imread(p)
    a[3, 4, 0] = np.nan
    tifffile.imwrite(p, a, photometric="rgb")
    return c.train()


def _stale(c):
    return c.train("--epochs", "3", out=c.model)


def _pickle_model(c):
    write_trap(c.model / "model.safetensors", c.marker)
    return c.predict()


def _pickle_checkpoint(c):
    (c.model / "model.safetensors").unlink()
    write_trap(c.model / "checkpoint.safetensors", c.marker)
    return c.train(out=c.model)


def _one_channel_data(c):
    d = dataset(c.tmp / "grey", n_train=2, n_test=1)
    for p in (d / "samples").rglob("intensity.tiff"):
        tifffile.imwrite(p, tifffile.imread(p)[..., 0])
    m = json.loads((d / "manifest.json").read_text())
    m["modalities"]["intensity"]["channels"] = 1
    (d / "manifest.json").write_text(json.dumps(m))
    return c.predict(data=d)


def _foreign_out(c):
    (c.tmp / "pred").mkdir()
    (c.tmp / "pred" / "notes.txt").write_text("keep me")
    return c.predict()


def _bad_hidden(c):
    c.edit_model(lambda t, m: m["detector"]["head"].update(hidden=-3))
    return c.predict()


def _nan_tensor(c):
    def f(t, m):
        t["head.adaptor.weight"][0, 0] = float("nan")
    c.edit_model(f)
    return c.predict()


def _wrong_shape(c):
    def f(t, m):
        t["transform.mean"] = torch.zeros(7)
    c.edit_model(f)
    return c.predict()


def _wrong_format(c):
    c.edit_model(lambda t, m: m.update(format="polar_detect.draem.model/1"))
    return c.predict()


def _bad_source_kind(c):
    c.edit_model(lambda t, m: m["detector"]["sources"][0].update(kind="vit"))
    return c.predict()


def _channel_sum(c):
    c.edit_model(lambda t, m: m["detector"]["transform"].update(in_dim=160))
    return c.predict()


CASES = [
    pytest.param(lambda c: c.train(data=c.tmp / "nowhere"), ["nowhere/manifest.json", "not found"], id="train-no-manifest"),
    pytest.param(lambda c: c.train(out=c.data), ["--out", "is (or contains) the dataset directory"], id="train-out-is-data"),
    pytest.param(lambda c: c.train(out=c.data / "manifest.json"), ["--out", "not a directory"], id="train-out-is-file"),
    pytest.param(lambda c: c.train("--epochs", "0"), ["--epochs 0", "must be >= 1"], id="train-epochs-0"),
    pytest.param(lambda c: c.train("--noise-std", "-1"), ["--noise-std -1.0", "> 0"], id="train-noise-negative"),
    pytest.param(lambda c: c.train("--noise-std", "nan"), ["--noise-std nan", "finite"], id="train-noise-nan"),
    pytest.param(lambda c: c.train("--margin", "0"), ["--margin 0.0", "> 0"], id="train-margin-0"),
    pytest.param(lambda c: c.train("--batch-patches", "1"), ["--batch-patches 1", "batch norm"], id="train-batch-patches-1"),
    pytest.param(lambda c: c.train("--lr-adaptor", "inf"), ["--lr-adaptor inf", "finite"], id="train-lr-inf"),
    pytest.param(lambda c: c.train("--blur-sigma", "-2"), ["--blur-sigma -2.0", "0..64"], id="train-blur-negative"),
    pytest.param(lambda c: c.train("--pca-dim", "0"), ["--pca-dim 0", ">= 1"], id="train-pca-0"),
    pytest.param(lambda c: c.train("--pca-dim", "ten"), ["--pca-dim ten", "integer"], id="train-pca-text"),
    pytest.param(lambda c: c.train("--pca-dim", "999"), ["--pca-dim 999", "larger than the 152 channels"], id="train-pca-too-large"),
    pytest.param(lambda c: c.train("--balance", "image"), ["--balance image", "source or channel"], id="train-bad-balance"),
    pytest.param(lambda c: c.train("--percentile", "0"), ["--percentile 0.0", "(0, 100]"], id="train-percentile-0"),
    pytest.param(lambda c: c.train("--seed", "-1"), ["--seed -1", ">= 0"], id="train-seed-negative"),
    pytest.param(lambda c: c.train("--modality", "dolp"), ["manifest.json", "unknown modality 'dolp'"], id="train-unknown-modality"),
    pytest.param(lambda c: c.train("--backbone", "vgg16"), ["unknown backbone 'vgg16'"], id="train-unknown-backbone"),
    pytest.param(lambda c: c.train("--stages", "s8,s3"), ["stages", "s3", "choose from"], id="train-unknown-stage"),
    pytest.param(lambda c: c.train("--pool", "max"), ["pool 'max'", "local or seq"], id="train-bad-pool"),
    pytest.param(lambda c: c.train("--weights", str(c.tmp / "w.pth")), ["w.pth", "not found"], id="train-weights-missing"),
    pytest.param(_all_anomalous, ["manifest.json", "no anomaly-free images in the train split"], id="train-all-anomalous"),
    pytest.param(_nan_image, ["000001/intensity.tiff", "NaN"], id="train-nan-image"),
    pytest.param(_stale, ["model.safetensors", "different training run", "epochs 2 -> 3", "--restart"], id="train-stale-model"),
    pytest.param(_pickle_checkpoint, ["checkpoint.safetensors", "not a polar_detect simplenet/ensemble safetensors file"], id="train-pickle-checkpoint"),
    pytest.param(lambda c: c.predict(model=c.tmp / "nomodel"), ["nomodel", "missing"], id="predict-no-model"),
    pytest.param(_pickle_model, ["model.safetensors", "not a polar_detect simplenet/ensemble safetensors file", "unpickled"], id="predict-pickle-model"),
    pytest.param(lambda c: c.predict("--split", "holdout"), ["--split holdout", "train, val, test"], id="predict-bad-split"),
    pytest.param(lambda c: c.predict("--batch-size", "0"), ["--batch-size 0", ">= 1"], id="predict-batch-0"),
    pytest.param(_foreign_out, ["--out", "holds no predictions.json"], id="predict-foreign-out"),
    pytest.param(lambda c: c.predict(out=c.model), ["--out", "is (or contains) the --model directory"], id="predict-out-is-model"),
    pytest.param(lambda c: c.predict(out=c.tmp), ["--out", "is (or contains) the --model directory"], id="predict-out-contains-model"),
    pytest.param(lambda c: c.predict(data=c.tmp / "nodata"), ["nodata/manifest.json", "not found"], id="predict-no-data"),
    pytest.param(_one_channel_data, ["manifest.json", "has 1 channels, the model was trained on 3"], id="predict-wrong-channels"),
    pytest.param(_bad_hidden, ["model.safetensors", "detector.head", "hidden"], id="predict-bad-hidden"),
    pytest.param(_nan_tensor, ["model.safetensors", "head.adaptor.weight", "non-finite"], id="predict-nan-tensor"),
    pytest.param(_wrong_shape, ["model.safetensors", "transform.mean", "needs"], id="predict-wrong-shape"),
    pytest.param(_wrong_format, ["model.safetensors", "format", "polar_detect.draem.model/1"], id="predict-wrong-format"),
    pytest.param(_bad_source_kind, ["model.safetensors", "detector.sources", "'vit'"], id="predict-bad-source-kind"),
    pytest.param(_channel_sum, ["model.safetensors", "in_dim 160", "[152]"], id="predict-channel-sum"),
    pytest.param(lambda c: ["export", "--model", str(c.model), "--out", str(c.tmp / "m.txt"), "--size", "56x40"],
                 ["--out", "m.txt", ".onnx"], id="export-bad-suffix"),
    pytest.param(lambda c: ["export", "--model", str(c.model), "--out", str(c.tmp / "m.onnx"), "--size", "56"],
                 ["--size 56", "WxH"], id="export-bad-size"),
    pytest.param(lambda c: ["export", "--model", str(c.model), "--out", str(c.tmp / "m.onnx"), "--size", "4x4"],
                 ["--size 4x4", "8..8192"], id="export-tiny-size"),
]


@pytest.mark.parametrize("setup, expect", CASES)
def test_bad_input(trained, tmp_path, capsys, setup, expect):
    c = Ctx(tmp_path, *trained)
    argv = setup(c)
    assert_refused(lambda: one_thread(lambda: main(argv)), tmp_path, capsys, expect, c.marker)
