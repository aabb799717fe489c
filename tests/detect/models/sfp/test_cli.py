"""Bad-input corpus of ``python -m polar_detect.models.sfp``: exit 2, a message naming the file or
option and the problem, nothing written or lost (issue 18; project convention: ``CASES``)."""
import hashlib
import json
import shutil

import pytest
import torch

from polar_detect.models.sfp.__main__ import main
from polar_detect.models.sfp.toy import build_toy
from polar_detect.models.sfp.train import preset, train


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny toy dataset (4 train + 2 test, 16x24) and a 1-epoch model trained on it."""
    root = tmp_path_factory.mktemp("sfp_cli")
    build_toy(root / "data", n_train=4, n_test=2, seed=0, height=16, width=24)
    cfg = preset("tiny", widths=(4, 8), epochs=1, batch_size=2)
    train(root / "data", root / "model", cfg, progress=False)
    return root


TINY = ["--preset", "tiny", "--widths", "4,8", "--epochs", "1", "--batch-size", "2", "--quiet"]


def _copy_data(env, edit=None, name="data"):
    """A private copy of the toy dataset; ``edit(manifest)`` changes its manifest."""
    dst = env["tmp"] / name
    shutil.copytree(env["base"] / "data", dst)
    if edit is not None:
        mf = dst / "manifest.json"
        m = json.loads(mf.read_text())
        edit(m)
        mf.write_text(json.dumps(m))
    return dst


def _copy_model(env):
    dst = env["tmp"] / "model"
    shutil.copytree(env["base"] / "model", dst)
    return dst


def _drop_modality(name):
    def edit(m):
        del m["modalities"][name]
        for s in m["samples"]:
            s["files"].pop(name, None)
    return edit


def _set_each(key, value):
    def edit(m):
        for s in m["samples"]:
            s[key] = value
    return edit


def _set_modality(mod, key, value):
    def edit(m):
        m["modalities"][mod][key] = value
    return edit


def _garbage(path, text=b"not a model at all"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    return path


def _other_format_model(env):
    from safetensors.torch import save_file
    p = env["tmp"] / "patchcore.safetensors"
    save_file({"memory": torch.zeros(2, 2)}, str(p), metadata={"polar_detect": json.dumps({"format": "x/1"})})
    return p


def _damage_a_file(data):
    m = json.loads((data / "manifest.json").read_text())
    f = data / m["samples"][0]["files"]["dolp"]
    f.write_bytes(f.read_bytes() + b"\0")
    return data


# each builder: env -> (argv, watched paths, paths that must not exist afterwards)
def c_train(extra, data=None):
    def build(env):
        d = data(env) if data else env["base"] / "data"
        out = env["tmp"] / "run"
        return ["train", "--data", str(d), "--out", str(out), *TINY, *extra], [d], [out]
    return build


def c_train_into(prepare, extra=()):
    def build(env):
        out = prepare(env)
        return ["train", "--data", str(env["base"] / "data"), "--out", str(out), *TINY, *extra], [out], []
    return build


def c_predict(extra, data=None, model=None, out=None):
    def build(env):
        d = data(env) if data else env["base"] / "data"
        m = model(env) if model else env["base"] / "model"
        o = out(env, d) if out else env["tmp"] / "pred"
        absent = [] if out else [o]
        return ["predict", "--model", str(m), "--data", str(d), "--out", str(o), "--quiet", *extra], \
            [d, m], absent
    return build


def c_evaluate(extra, data=None, model=None, out=None):
    def build(env):
        d = data(env) if data else env["base"] / "data"
        m = model(env) if model else env["base"] / "model"
        o = out(env) if out else env["tmp"] / "eval.json"
        return ["evaluate", "--model", str(m), "--data", str(d), "--split", "test", "--out", str(o), "--quiet",
                *extra], [d, m], ([] if out else [o, o.with_suffix(".md")])
    return build


def c_export(extra, model=None, out="m.onnx"):
    def build(env):
        m = model(env) if model else env["base"] / "model"
        o = env["tmp"] / out
        return ["export", "--model", str(m), "--out", str(o), *extra], [m], [o]
    return build


def _stale(env):
    return _copy_model(env)


def _model_only(env):
    d = _copy_model(env)
    (d / "checkpoint.safetensors").unlink()
    return d


def _corrupt_checkpoint(env):
    d = env["tmp"] / "run"
    _garbage(d / "checkpoint.safetensors")
    return d


def _a_file(env):
    return _garbage(env["tmp"] / "run", b"I am a file")


CASES = [
    # -- train: data
    pytest.param(c_train([], data=lambda e: e["tmp"] / "nowhere"), ["nowhere", "no dataset manifest"],
                 id="train-no-manifest"),
    pytest.param(c_train([], data=lambda e: _copy_data(e, _drop_modality("normals"))),
                 ["manifest.json", "no 'normals' modality", "--modalities"], id="train-no-normals"),
    pytest.param(c_train([], data=lambda e: _copy_data(e, _drop_modality("dolp"))),
                 ["manifest.json", "no 'dolp' modality"], id="train-no-dolp"),
    pytest.param(c_train([], data=lambda e: _copy_data(e, _set_each("object_mask", None))),
                 ["manifest.json", "have no object_mask"], id="train-no-object-mask"),
    pytest.param(c_train([], data=lambda e: _copy_data(e, _set_each("object_mask", "../../../etc/passwd"))),
                 ["manifest.json", "object_mask", "outside"], id="train-object-mask-escapes"),
    pytest.param(c_train([], data=lambda e: _copy_data(e, _set_modality("dolp", "channels", 3))),
                 ["manifest.json", "dolp.tiff", "modalities.dolp.channels"], id="train-dolp-channels"),
    pytest.param(c_train([], data=lambda e: _copy_data(e, _set_modality("intensity", "scale", 0.0))),
                 ["manifest.json", "modalities.intensity.scale", "> 0"], id="train-zero-scale"),
    pytest.param(c_train(["--split", "holdout"]), ["unknown split 'holdout'"], id="train-unknown-split"),
    pytest.param(c_train(["--split", "val"]), ["manifest.json", "no samples in split"], id="train-empty-split"),
    # -- train: options
    pytest.param(c_train(["--preset", "huge"]), ["--preset huge: unknown", "cpu, gpu, tiny"], id="train-preset"),
    pytest.param(c_train(["--epochs", "0"]), ["--epochs: must be >= 1"], id="train-zero-epochs"),
    pytest.param(c_train(["--batch-size", "0"]), ["--batch-size: must be >= 1"], id="train-zero-batch"),
    pytest.param(c_train(["--lr", "-1"]), ["--lr: must be > 0"], id="train-negative-lr"),
    pytest.param(c_train(["--lr", "nan"]), ["--lr: must be > 0"], id="train-nan-lr"),
    pytest.param(c_train(["--crop", "64"]), ["--crop 64x64: larger than the images (16x24)", "manifest.json"],
                 id="train-crop-too-large"),
    pytest.param(c_train(["--crop", "4"]), ["--crop: must be None or >= 8"], id="train-crop-too-small"),
    pytest.param(c_train(["--crop", "12xabc"]), ["--crop", "expected N, HxW or none"], id="train-crop-garbage"),
    pytest.param(c_train(["--widths", "2,4"]), ["--widths", ">= 4"], id="train-narrow-widths"),
    pytest.param(c_train(["--widths", "8,x"]), ["--widths", "comma-separated integers"], id="train-widths-garbage"),
    pytest.param(c_train(["--loss", "l2"]), ["--loss: must be one of angle, cosine"], id="train-loss"),
    pytest.param(c_train(["--sensor-fraction", "1.5"]), ["--sensor-fraction: must be in [0, 1]"],
                 id="train-sensor-fraction"),
    pytest.param(c_train(["--background-weight", "-0.1"]), ["--background-weight: must be in [0, 1]"],
                 id="train-background-weight"),
    pytest.param(c_train(["--device", "tpu"]), ["--device tpu: not available"], id="train-device"),
    pytest.param(c_train(["--stop-after", "0"]), ["--stop-after: must be >= 1"], id="train-stop-after"),
    # -- train: the output directory
    pytest.param(c_train_into(_stale, ["--seed", "5"]),
                 ["checkpoint.safetensors", "different training run", "seed 0 -> 5", "--restart"],
                 id="train-stale-checkpoint"),
    pytest.param(c_train_into(_stale, ["--lr", "0.01"]), ["checkpoint.safetensors", "lr 0.002 -> 0.01", "--restart"],
                 id="train-stale-lr"),
    pytest.param(c_train_into(_model_only, ["--seed", "3"]),
                 ["model.safetensors", "different training run", "seed 0 -> 3", "--restart"],
                 id="train-other-model-in-out"),
    pytest.param(c_train_into(_corrupt_checkpoint), ["checkpoint.safetensors", "not a polar_detect SfP safetensors"],
                 id="train-corrupt-checkpoint"),
    pytest.param(c_train_into(_a_file), ["--out", "exists and is not a directory"], id="train-out-is-file"),
    # -- predict
    pytest.param(c_predict([], out=lambda e, d: d), ["--out", "must be a new directory outside --data"],
                 id="predict-out-is-data"),
    pytest.param(c_predict([], data=lambda e: _copy_data(e), out=lambda e, d: d / "samples" / "pred"),
                 ["--out", "must be a new directory outside --data"], id="predict-out-inside-data"),
    pytest.param(c_predict([], out=lambda e, d: (e["tmp"] / "exists").mkdir() or e["tmp"] / "exists"),
                 ["--out", "already exists; pass --overwrite"], id="predict-out-exists"),
    pytest.param(c_predict([], model=lambda e: e["tmp"] / "none"), ["none", "missing (no such file)"], id="predict-no-model"),
    pytest.param(c_predict([], model=lambda e: _garbage(e["tmp"] / "m.safetensors")),
                 ["m.safetensors", "not a polar_detect SfP safetensors file"], id="predict-garbage-model"),
    pytest.param(c_predict([], model=_other_format_model),
                 ["patchcore.safetensors", "format 'x/1', expected 'polar_detect.sfp.model/1'"],
                 id="predict-other-format"),
    pytest.param(c_predict(["--modality", "a/b"]), ["--modality 'a/b'", "letters, digits"], id="predict-modality-name"),
    pytest.param(c_predict(["--modality", "normals"]), ["manifest.json", "already has a modality 'normals'"],
                 id="predict-overwrite-ground-truth"),
    pytest.param(c_predict(["--norm-mismatch", "error"],
                           data=lambda e: _copy_data(e, _set_modality("intensity", "scale", 123.0))),
                 ["manifest.json", "normalisation differs", "intensity: scale 123"], id="predict-norm-mismatch"),
    pytest.param(c_predict([], data=lambda e: _damage_a_file(_copy_data(e))),
                 ["dolp.tiff", "sha256 differs", "manifest.json"], id="predict-damaged-source"),
    pytest.param(c_predict([], data=lambda e: _copy_data(e, _drop_modality("aolp"))),
                 ["manifest.json", "no 'aolp' modality"], id="predict-no-aolp"),
    # -- evaluate
    pytest.param(c_evaluate(["--sensor", "raw"]), ["--sensor: choose from exact, dofp", "raw"], id="evaluate-sensor"),
    pytest.param(c_evaluate(["--ior", "0.9"]), ["refractive index must be in (1, 5]"], id="evaluate-ior"),
    pytest.param(c_evaluate(["--limit", "0"]), ["--limit: must be >= 1"], id="evaluate-limit"),
    pytest.param(c_evaluate([], out=lambda e: e["tmp"]), ["--out", "is a directory"], id="evaluate-out-is-dir"),
    pytest.param(c_evaluate([], data=lambda e: _copy_data(e, _drop_modality("normals"))),
                 ["manifest.json", "no 'normals' modality"], id="evaluate-no-normals"),
    pytest.param(c_evaluate(["--split", "nope"]), ["unknown split 'nope'"], id="evaluate-split"),
    pytest.param(c_evaluate([], model=lambda e: e["tmp"] / "none"), ["none", "missing (no such file)"],
                 id="evaluate-no-model"),
    # -- export
    pytest.param(c_export([], out="m.txt"), ["--out", "m.txt", "expected a .onnx file name"], id="export-suffix"),
    pytest.param(c_export(["--size", "none"]), ["--size", "not none"], id="export-size-none"),
    pytest.param(c_export(["--size", "0x8"]), ["--size", "positive sizes"], id="export-size-zero"),
    pytest.param(c_export([], model=lambda e: _garbage(e["tmp"] / "g.safetensors")),
                 ["g.safetensors", "not a polar_detect SfP safetensors file"], id="export-garbage-model"),
]


def _tree(path):
    """{relative path: sha256} of every file under ``path`` (or of the file itself)."""
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)) if p != path else ".": hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


@pytest.mark.parametrize("build,expected", CASES)
def test_bad_input_exits_2_and_writes_nothing(base, tmp_path, capsys, build, expected):
    env = {"base": base, "tmp": tmp_path}
    argv, watched, absent = build(env)
    before = {str(p): _tree(p) for p in watched}
    base_before = _tree(base)
    try:
        rc = main(argv)
    except SystemExit as exc:        # argparse type errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert "Traceback" not in err
    if "usage:" not in err:                    # argparse prints usage + one error line
        assert len(err.strip().splitlines()) == 1, err
    for p in watched:
        assert _tree(p) == before[str(p)], f"{p} changed"
    for p in absent:
        assert not p.exists(), f"{p} was written"
    assert _tree(base) == base_before


def test_corpus_is_large_enough():
    assert len(CASES) >= 45
