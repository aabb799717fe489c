"""Bad-input corpus for ``python -m polar_detect.models.ensemble`` (train with feature sources,
average, merge, loco-layout, timed).

Every case runs the real CLI entry point in-process and must: exit 2; print exactly one
``error:`` line naming the file / option / key and the problem, no traceback; write nothing
and lose nothing (the whole test directory is byte-identical before and after); and never
execute a planted pickle.
"""
import json
import shutil
from pathlib import Path

import pytest

from polar_detect.models.ensemble.__main__ import main

from tests.detect.draem_tiny import assert_refused, dataset, write_trap
from tests.detect.models.ensemble.tiny import draem_and_patchcore
from tests.detect.simplenet_tiny import FAST, one_thread, train_simplenet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny dataset (two normals in val), a DRÆM, a PatchCore, and SimpleNet predictions."""
    from polar_detect.models.simplenet.__main__ import main as simplenet_main
    root = tmp_path_factory.mktemp("ensemble_corpus")
    data = draem_and_patchcore(root, n_train=4, n_test=4, coreset_size=20)

    def build():
        train_simplenet(data, root / "sn")
        assert simplenet_main(["predict", "--model", str(root / "sn"), "--data", str(data), "--split", "test,val",
                               "--out", str(root / "pred"), "--quiet"]) == 0
    one_thread(build)
    return root


class Ctx:
    def __init__(self, tmp: Path, root: Path):
        self.tmp = tmp
        for name in ("data", "draem", "sn", "pred"):
            shutil.copytree(root / name, tmp / name)
        shutil.copy(root / "pc.safetensors", tmp / "pc.safetensors")
        self.data, self.draem, self.pc, self.pred = tmp / "data", tmp / "draem", tmp / "pc.safetensors", tmp / "pred"
        self.marker = tmp / "PWNED"

    def train(self, *sources, extra=()):
        src = [x for s in sources for x in ("--source", s)]
        return ["train", "--data", str(self.data), "--out", str(self.tmp / "ens"), *src, *FAST, *extra]


def _pickle_patchcore(c):
    write_trap(c.pc, c.marker)
    return c.train("lite0", f"patchcore:{c.pc}")


def _patchcore_other_modality(c):
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(c.pc), framework="pt") as f:
        meta, mem = json.loads(f.metadata()["polar_detect"]), f.get_tensor("memory")
    meta["encoding"]["modality"] = "dolp"
    save_file({"memory": mem}, str(c.pc), metadata={"polar_detect": json.dumps(meta)})
    return c.train(f"patchcore:{c.pc}")


def _draem_no_norm(c):
    p = c.draem / "draem.json"
    cfg = json.loads(p.read_text())
    cfg.pop("normalisation", None)
    p.write_text(json.dumps(cfg))
    return c.train(f"draem:{c.draem}")


def _draem_pickle(c):
    (c.draem / "intensity" / "model.safetensors").unlink()
    write_trap(c.draem / "intensity" / "model.pt", c.marker)
    return c.train(f"draem:{c.draem}")


def _other_dataset_pred(c):
    other = dataset(c.tmp / "other", n_train=2, n_test=2, seed=5)
    p = json.loads((c.pred / "predictions.json").read_text())
    p2 = dict(p, dataset=str(other / "manifest.json"), manifest_sha256="0" * 64)
    shutil.copytree(c.pred, c.tmp / "pred2")
    (c.tmp / "pred2" / "predictions.json").write_text(json.dumps(p2))
    return ["average", "--pred", str(c.pred), "--pred", str(c.tmp / "pred2"), "--out", str(c.tmp / "avg")]


def _merge_overlap(c):
    shutil.copytree(c.pred, c.tmp / "pred2")
    return ["merge", "--pred", str(c.pred), "--pred", str(c.tmp / "pred2"), "--out", str(c.tmp / "m")]


def _merge_missing_map(c):
    shutil.copytree(c.pred, c.tmp / "pred2")
    p = json.loads((c.pred / "predictions.json").read_text())
    keep = sorted(p["scores"])[:1]
    (c.tmp / "pred2" / "predictions.json").write_text(json.dumps(dict(
        p, scores={k: 0.5 for k in ["zz"]}, maps={"zz": "maps/zz.tiff"})))
    (c.pred / "predictions.json").write_text(json.dumps(dict(
        p, scores={k: p["scores"][k] for k in keep}, maps={k: p["maps"][k] for k in keep})))
    return ["merge", "--pred", str(c.pred), "--pred", str(c.tmp / "pred2"), "--out", str(c.tmp / "m")]


def _loco_exists(c):
    (c.tmp / "loco").mkdir()
    (c.tmp / "loco" / "keep.txt").write_text("mine")
    return ["loco-layout", "--data", str(c.data), "--out", str(c.tmp / "loco"), "--quiet"]


def _timed_bad_log(c):
    (c.tmp / "t.json").write_text("[not json")
    return ["timed", "--log", str(c.tmp / "t.json"), "--name", "x", "--", "python", "-c", "pass"]


CASES = [
    pytest.param(lambda c: c.train(), ["--source", "at least one"], id="train-no-source"),
    pytest.param(lambda c: c.train("resnet:x"), ["--source resnet:x", "unknown kind 'resnet'"], id="train-unknown-kind"),
    pytest.param(lambda c: c.train("lite3"), ["--source lite3", "unknown kind 'lite3'"], id="train-lite3"),
    pytest.param(lambda c: c.train("backbone:"), ["--source backbone:", "needs a backbone name"], id="train-backbone-no-name"),
    pytest.param(lambda c: c.train("backbone:vgg"), ["unknown backbone 'vgg'"], id="train-backbone-unknown"),
    pytest.param(lambda c: c.train("lite1:s8+s64"), ["stages", "s64"], id="train-bad-stage"),
    pytest.param(lambda c: c.train("draem:"), ["--source draem:", "needs a model directory"], id="train-draem-no-path"),
    pytest.param(lambda c: c.train(f"draem:{c.tmp / 'nodraem'}"), ["nodraem/draem.json", "not found"], id="train-draem-missing"),
    pytest.param(lambda c: c.train(f"draem:{c.draem}@s3"), ["draem@s3/draem.json", "not found"], id="train-draem-bad-level"),
    pytest.param(_draem_no_norm, ["draem.json", "normalisation.intensity: missing"], id="train-draem-no-normalisation"),
    pytest.param(_draem_pickle, ["model.pt", "pickled model file"], id="train-draem-pickle"),
    pytest.param(lambda c: c.train("patchcore:"), ["--source patchcore:", "needs a model file"], id="train-patchcore-no-path"),
    pytest.param(lambda c: c.train(f"patchcore:{c.tmp / 'no.safetensors'}"), ["no.safetensors", "not found"],
                 id="train-patchcore-missing"),
    pytest.param(_pickle_patchcore, ["pc.safetensors", "not a polar_detect PatchCore safetensors file"], id="train-patchcore-pickle"),
    pytest.param(_patchcore_other_modality, ["patchcore:", "reads 'dolp', not --modality 'intensity'"],
                 id="train-patchcore-other-modality"),
    pytest.param(lambda c: c.train("lite0", extra=("--pca-dim", "500")), ["--pca-dim 500", "larger than the 152"],
                 id="train-pca-too-large"),
    pytest.param(lambda c: c.train("lite0", extra=("--pool", "max")), ["pool 'max'"], id="train-bad-pool"),
    pytest.param(lambda c: ["predict", "--model", str(c.draem), "--data", str(c.data), "--out", str(c.tmp / "p")],
                 ["draem/model.safetensors", "missing"], id="predict-draem-dir-as-model"),
    pytest.param(lambda c: ["average", "--pred", str(c.pred), "--pred", str(c.pred), "--out", str(c.tmp / "avg")],
                 ["pred", "given twice"], id="average-same-twice"),
    pytest.param(_other_dataset_pred, ["pred2", "dataset differs"], id="average-other-dataset"),
    pytest.param(lambda c: ["average", "--pred", str(c.pred), "--pred", str(c.tmp / "none"), "--out", str(c.tmp / "avg")],
                 ["none/predictions.json", "not found"], id="average-missing-pred"),
    pytest.param(lambda c: ["merge", "--pred", str(c.pred), "--out", str(c.tmp / "m")], ["at least two"], id="merge-one"),
    pytest.param(_merge_overlap, ["pred2/predictions.json", "also predicted in"], id="merge-overlap"),
    pytest.param(_merge_missing_map, ["zz.tiff", "not found"], id="merge-missing-map"),
    pytest.param(lambda c: ["merge", "--pred", str(c.pred), "--pred", str(c.tmp / "x"), "--out", str(c.pred)],
                 ["--out", "is one of the --pred directories"], id="merge-out-is-input"),
    pytest.param(_loco_exists, ["loco", "already exists", "--overwrite"], id="loco-out-exists"),
    pytest.param(lambda c: ["loco-layout", "--data", str(c.data), "--out", str(c.tmp / "loco"),
                            "--logical-saturation", "1.5"], ["--logical-saturation 1.5", "(0, 1]"], id="loco-bad-saturation"),
    pytest.param(lambda c: ["loco-layout", "--data", str(c.data), "--out", str(c.tmp / "loco"), "--gamma", "0"],
                 ["--gamma 0.0", "0.1..10"], id="loco-bad-gamma"),
    pytest.param(lambda c: ["loco-layout", "--data", str(c.data), "--out", str(c.tmp / "loco"), "--modality", "dolp"],
                 ["manifest.json", "unknown modality 'dolp'"], id="loco-unknown-modality"),
    pytest.param(lambda c: ["loco-layout", "--data", str(c.data), "--data", str(c.data), "--out", str(c.tmp / "loco")],
                 ["would overwrite", "give each dataset once"], id="loco-same-data-twice"),
    pytest.param(lambda c: ["timed", "--log", str(c.tmp / "t.json"), "--name", "x"], ["no command given"], id="timed-no-command"),
    pytest.param(lambda c: ["timed", "--log", str(c.tmp / "t.json"), "--name", "a/b", "--", "python", "-c", "pass"],
                 ["--name 'a/b'", "plain key"], id="timed-bad-name"),
    pytest.param(_timed_bad_log, ["t.json", "not a timing log"], id="timed-bad-log"),
]


@pytest.mark.parametrize("setup, expect", CASES)
def test_bad_input(trained, tmp_path, capsys, setup, expect):
    c = Ctx(tmp_path, trained)
    argv = setup(c)
    assert_refused(lambda: one_thread(lambda: main(argv)), tmp_path, capsys, expect, c.marker)
