"""Bad-input corpus for ``python -m polar_detect.models.draem train|predict|convert-legacy``.

Every case runs the real CLI entry point in-process and must: exit 2; print a one-line
message naming the file / option / key and the problem; write nothing and lose nothing
(the whole test directory - dataset copy, model copy, output paths - is byte-identical
before and after); and never execute a planted pickle.
"""
import json

import numpy as np
import pytest
import tifffile

from polar_detect.models.draem import store
from polar_detect.models.draem.__main__ import main

from tests.detect.draem_tiny import TRAIN_FAST, CorpusCopy, assert_refused, dataset, rewrite_image, write_trap


class Ctx(CorpusCopy):
    """Fresh copies of the dataset and the trained model under ``tmp``, and argv builders."""

    def train(self, *extra, out=None, data=None):
        return ["train", "--data", str(data or self.data), "--inputs", "R",
                "--out", str(out or self.tmp / "new_model"), *TRAIN_FAST, *extra]

    def predict(self, *extra, model=None, data=None, out=None):
        return ["predict", "--model", str(model or self.model), "--data", str(data or self.data),
                "--out", str(out or self.tmp / "pred"), *extra]

    def draem_json(self, **changes):
        p = self.model / "draem.json"
        cfg = json.loads(p.read_text())
        cfg.update(changes)
        p.write_text(json.dumps(cfg))

    def model_file(self):
        return self.model / "intensity" / "model.safetensors"

    def edit_model(self, fn):
        """Rewrite the intensity model file after ``fn(tensors, meta)`` (safetensors)."""
        tensors, meta = store.read(self.model_file(), store.MODEL_FORMAT)
        fn(tensors, meta)
        store.write(self.model_file(), tensors, meta)

    def manifest(self, fn):
        p = self.data / "manifest.json"
        m = json.loads(p.read_text())
        fn(m)
        p.write_text(json.dumps(m))


# ------------------------------------------------------------------ case set-ups
def _single_image(c):
    return c.train(data=dataset(c.tmp / "one", n_train=1))


def _all_anomalous(c):
    def f(m):
        for s in m["samples"]:
            if s["split"] == "train":
                s["label"], s["classes"] = 1, ["dent"]
    c.manifest(f)
    return c.train()


def _legacy_checkpoint(c):
    write_trap(c.tmp / "m" / "intensity" / "checkpoint.pt", c.marker)
    return c.train(out=c.tmp / "m")


def _pickle_as_checkpoint(c):
    c.model_file().unlink()                     # unfinished run: the checkpoint is consulted
    write_trap(c.model / "intensity" / "checkpoint.safetensors", c.marker)
    return c.train(out=c.model)


def _changed_image(c):
    rewrite_image(c.data, "000000", 0.45)
    return c.train(out=c.model)


def _legacy_model(c):
    c.model_file().unlink()
    write_trap(c.model / "intensity" / "model.pt", c.marker)
    return c.predict()


def _pickle_as_model(c):
    write_trap(c.model_file(), c.marker)
    return c.predict()


def _truncated_model(c):
    b = c.model_file().read_bytes()
    c.model_file().write_bytes(b[: len(b) // 2])
    return c.predict()


def _nan_weights(c):
    c.edit_model(lambda t, m: t["discriminative.head.weight"].view(-1).__setitem__(0, float("nan")))
    return c.predict()


def _foreign_format(c):
    c.edit_model(lambda t, m: m.update(format="polar_detect.patchcore/1"))
    return c.predict()


def _zero_channels(c):
    c.edit_model(lambda t, m: m["model_config"].update(channels=0))
    return c.predict()


def _wider_config(c):
    c.edit_model(lambda t, m: m["model_config"].update(recon_width=8))
    return c.predict()


def _missing_tensor(c):
    c.edit_model(lambda t, m: t.pop("reconstructive.head.bias"))
    return c.predict()


def _nan_folder(c):
    folder = c.tmp / "imgs"
    folder.mkdir()
    a = np.full((40, 56, 3), 0.4, np.float32)
    a[0, 0, 1] = np.inf
    tifffile.imwrite(folder / "bad.tiff", a, photometric="rgb")
    return c.predict(data=folder)


def _out_not_predictions(c):
    (c.tmp / "docs").mkdir()
    (c.tmp / "docs" / "thesis.txt").write_text("precious")
    return c.predict(out=c.tmp / "docs")


def _convert_only_checkpoint(c):
    old = c.tmp / "old"
    write_trap(old / "intensity" / "checkpoint.pt", c.marker)
    (old / "draem.json").write_text(json.dumps({"model": "draem", "inputs": ["intensity"], "size": [32, 32]}))
    return ["convert-legacy", str(old), str(c.tmp / "new"), "--trust-pickle"]


def _convert_trap(c):
    old = c.tmp / "old"
    write_trap(old / "intensity" / "model.pt", c.marker)
    (old / "draem.json").write_text(json.dumps({"model": "draem", "inputs": ["intensity"], "size": [32, 32]}))
    return ["convert-legacy", str(old), str(c.tmp / "new"), "--trust-pickle"]


def _convert_untrusted(c):
    args = _convert_trap(c)
    return args[:-1]


def _out_is_file(c):
    (c.tmp / "f").write_text("x")
    return c.train(out=c.tmp / "f")


CASES = [
    # --- train: options
    pytest.param(lambda c: c.train("--batch-size", "1"), ["--batch-size 1", ">= 2", "BatchNorm"], id="train-batch-1"),
    pytest.param(lambda c: c.train("--epochs", "0"), ["--epochs 0", ">= 1"], id="train-epochs-0"),
    pytest.param(lambda c: c.train("--size", "0"), ["--size 0", "multiple of 32"], id="train-size-0"),
    pytest.param(lambda c: c.train("--size", "48"), ["--size 48", "multiple of 32"], id="train-size-48"),
    pytest.param(lambda c: c.train("--lr", "nan"), ["--lr nan", "finite"], id="train-lr-nan"),
    pytest.param(lambda c: c.train("--lr", "-1"), ["--lr -1.0", "> 0"], id="train-lr-negative"),
    pytest.param(lambda c: c.train("--seed", "-1"), ["--seed -1", ">= 0"], id="train-seed-negative"),
    pytest.param(lambda c: c.train("--workers", "-2"), ["--workers -2", ">= 0"], id="train-workers-negative"),
    pytest.param(lambda c: c.train("--device", "gpu0"), ["--device gpu0", "not a torch device"], id="train-device-bogus"),
    pytest.param(lambda c: c.train("--device", "cuda:7"), ["--device cuda:7", "no such CUDA device"],
                 id="train-device-absent"),
    pytest.param(lambda c: c.train("--textures", str(c.tmp / "nope")), ["--textures", "nope", "not a directory"],
                 id="train-textures-missing"),
    pytest.param(lambda c: c.train(out=c.data), ["--out", "dataset directory"], id="train-out-is-data"),
    pytest.param(lambda c: c.train(out=c.tmp), ["--out", "dataset directory"], id="train-out-contains-data"),
    pytest.param(_out_is_file, ["--out", "not a directory"], id="train-out-is-file"),
    pytest.param(lambda c: c.train()[:4] + ["../evil"] + c.train()[5:], ["bad input name", "../evil"],
                 id="train-inputs-path-escape"),
    pytest.param(lambda c: c.train()[:4] + ["foo"] + c.train()[5:], ["manifest.json", "unknown modality 'foo'"],
                 id="train-inputs-unknown"),
    pytest.param(lambda c: c.train()[:4] + ["R+intensity"] + c.train()[5:], ["bad input list", "R+intensity"],
                 id="train-inputs-repeated"),
    # --- train: data and state
    pytest.param(lambda c: c.train(data=c.model), ["manifest.json"], id="train-data-not-a-dataset"),
    pytest.param(_single_image, ["single image", "000000/intensity.tiff", "at least 2"], id="train-single-image"),
    pytest.param(_all_anomalous, ["manifest.json", "no anomaly-free training samples"], id="train-no-normal-samples"),
    pytest.param(_legacy_checkpoint, ["checkpoint.pt", "pickled", "convert-legacy"], id="train-legacy-checkpoint"),
    pytest.param(_pickle_as_checkpoint, ["checkpoint.safetensors", "not a polar_detect DRÆM safetensors"],
                 id="train-pickle-as-checkpoint"),
    pytest.param(lambda c: c.train("--epochs", "3", out=c.model),
                 ["model.safetensors", "train_config.epochs 1 -> 3", "--restart"], id="train-stale-config"),
    pytest.param(lambda c: c.train("--preset", "paper", out=c.model),
                 ["model.safetensors", "preset 'small' -> 'paper'", "--restart"], id="train-stale-preset"),
    pytest.param(_changed_image, ["model.safetensors", "dataset content", "--restart"], id="train-stale-dataset"),
    # --- predict: model directory
    pytest.param(lambda c: c.predict(model=c.tmp / "nomodel"), ["nomodel", "not a DRÆM model directory"],
                 id="predict-no-model-dir"),
    pytest.param(_legacy_model, ["model.pt", "pickled", "convert-legacy", "--trust-pickle"], id="predict-legacy-model"),
    pytest.param(lambda c: (c.model / "draem.json").write_text("{not json") and c.predict(),
                 ["draem.json", "unreadable JSON"], id="predict-draem-json-garbage"),
    pytest.param(lambda c: c.draem_json(inputs=["../../etc"]) or c.predict(), ["draem.json", "inputs.0"],
                 id="predict-draem-json-input-escape"),
    pytest.param(lambda c: c.draem_json(inputs="intensity") or c.predict(), ["draem.json", "inputs:"],
                 id="predict-draem-json-inputs-not-list"),
    pytest.param(lambda c: c.draem_json(size=[33, 32]) or c.predict(), ["draem.json", "size", "[33, 32]"],
                 id="predict-draem-json-size"),
    pytest.param(lambda c: c.draem_json(models={"intensity": {"config_digest": "0" * 64, "dataset_digest": None}})
                 or c.predict(), ["model.safetensors", "is not the model", "draem.json"], id="predict-inconsistent-dir"),
    pytest.param(_pickle_as_model, ["model.safetensors", "not a polar_detect DRÆM safetensors"],
                 id="predict-pickle-as-model"),
    pytest.param(_truncated_model, ["model.safetensors", "not a polar_detect DRÆM safetensors"],
                 id="predict-truncated-model"),
    pytest.param(_foreign_format, ["model.safetensors", "format", "polar_detect.patchcore/1"], id="predict-foreign-format"),
    pytest.param(_nan_weights, ["model.safetensors", "discriminative.head.weight", "non-finite"], id="predict-nan-weights"),
    pytest.param(_zero_channels, ["model.safetensors", "model_config.channels", "got 0"], id="predict-zero-channels"),
    pytest.param(_wider_config, ["model.safetensors", "the network needs"], id="predict-config-tensor-mismatch"),
    pytest.param(_missing_tensor, ["model.safetensors", "missing", "reconstructive.head.bias"], id="predict-missing-tensor"),
    # --- predict: data and output
    pytest.param(lambda c: c.predict("--inputs", "n"), ["draem.json", "no model for input", "normals_learned"],
                 id="predict-input-not-trained"),
    pytest.param(lambda c: c.predict("--device", "tpu:x"), ["--device tpu:x"], id="predict-device-bogus"),
    pytest.param(lambda c: c.predict("--split", "bogus"), ["--split bogus", "choose from"], id="predict-bad-split"),
    pytest.param(lambda c: c.predict(data=c.tmp / "absent"), ["absent", "not a dataset directory or image folder"],
                 id="predict-data-missing"),
    pytest.param(_nan_folder, ["bad.tiff", "non-finite"], id="predict-inf-input"),
    pytest.param(lambda c: c.predict(out=c.model), ["--out", "--model directory"], id="predict-out-is-model"),
    pytest.param(lambda c: c.predict(out=c.tmp), ["--out", "--model directory"], id="predict-out-contains-model"),
    pytest.param(_out_not_predictions, ["--out", "docs", "holds no predictions.json"], id="predict-out-foreign-dir"),
    # --- convert-legacy
    pytest.param(_convert_untrusted, ["old", "--trust-pickle", "can run code"], id="convert-without-trust"),
    pytest.param(_convert_trap, ["model.pt", "Unsupported global"], id="convert-trap-refused"),
    pytest.param(_convert_only_checkpoint, ["model.pt", "missing", "training never finished"], id="convert-only-checkpoint"),
    pytest.param(lambda c: ["convert-legacy", str(c.model), str(c.data), "--trust-pickle"], ["data", "already exists"],
                 id="convert-target-exists"),
]


@pytest.mark.parametrize("setup, expect", CASES)
def test_bad_input(trained, tmp_path, capsys, setup, expect):
    ctx = Ctx(tmp_path, *trained)
    argv = setup(ctx)
    assert_refused(lambda: main(argv), tmp_path, capsys, expect, ctx.marker)
