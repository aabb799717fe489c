"""The preset runner: stages in order, per-row evaluation, results table, resume."""
from __future__ import annotations

import json
import os
import math
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from polar_detect.pipelines import load_preset, resolve, run_preset, substitute


def test_substitute():
    assert substitute("a ${x} b ${y}", {"x": 1, "y": "z"}) == "a 1 b z"
    with pytest.raises(KeyError):
        substitute("${nope}", {})


def test_runner_stages_rows_and_resume(tmp_path):
    out = tmp_path / "run"
    write_metrics = ("python -c \"import json, pathlib; p = pathlib.Path('${out}/eval/${id}'); "
                     "p.mkdir(parents=True, exist_ok=True); (p / 'metrics.json').write_text(json.dumps("
                     "{'image': {'auroc': ${score}}, 'pixel': {'auroc': 0.5}}))\"")
    preset = {
        "vars": {"out": str(out), "msg": "hello"},
        "stages": {"one": "python -c \"open('${out}/one.txt', 'a').write('${msg}')\""},
        "rows": [{"id": "A", "score": 0.75}, {"id": "B", "score": 0.25}],
        "evaluate": {"write": write_metrics, "metrics": ["image_auroc", "pixel_auroc"]},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(preset))
    rows = run_preset(path, {"msg": "hi"})
    assert rows == [{"id": "A", "image_auroc": 0.75, "pixel_auroc": 0.5},
                    {"id": "B", "image_auroc": 0.25, "pixel_auroc": 0.5}]
    assert (out / "one.txt").read_text() == "hi"
    assert "| A | 0.7500 | 0.5000 |" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["vars"]["msg"] == "hi"
    run_preset(path, {"msg": "hi"})             # stage already done: not run again
    assert (out / "one.txt").read_text() == "hi"
    run_preset(path, {"msg": "hi"}, force=True)
    assert (out / "one.txt").read_text() == "hihi"


def test_resolve_nested_cycles_and_unknown_set(tmp_path):
    assert resolve({"out": "o", "data": "${out}/d", "m": "${data}/m"}) == {"out": "o", "data": "o/d", "m": "o/d/m"}
    with pytest.raises(ValueError, match="cycle"):
        resolve({"a": "${b}", "b": "x${a}"})
    with pytest.raises(KeyError, match="nope"):
        resolve({"a": "${nope}"})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"vars": {"out": str(tmp_path)}, "stages": {}, "rows": [],
                                    "evaluate": {"metrics": ["image_auroc"]}}))
    with pytest.raises(KeyError, match="outt"):
        run_preset(path, {"outt": "x"})
    path.write_text(yaml.safe_dump({"vars": {"out": str(tmp_path)}, "stages": {}, "rows": [{"id": "a b"}],
                                    "evaluate": {}}))
    with pytest.raises(ValueError, match="row id 'a b'"):
        load_preset(path)


def test_row_train_steps_markers_and_scene_variants(tmp_path, capsys):
    """Rows with their own train command (in row order, each resumable) and scene variants."""
    out = tmp_path / "run"
    write = ("python -c \"import json, pathlib; p = pathlib.Path('${out}/eval/${id}'); "
             "p.mkdir(parents=True, exist_ok=True); m = float(open('${model}').read()); "
             "(p / 'metrics.json').write_text(json.dumps({'image': {'auroc': m}, 'aupro': {'value': 0.5}, "
             "'thresholded': None}))\" ${extra}")                      # empty variable: trailing space
    preset = {
        "vars": {"out": str(out), "models": "${out}/models", "v": "0.25", "extra": ""},
        "scenes": {"plain": {"from": "aluminum_plate", "set": {"anomalies.probability": "${v}",
                                                               "anomalies.classes.dent": None,
                                                               "sensor.dofp": {"enabled": True}}}},
        "stages": {"mk": "python -c \"import os; os.makedirs('${models}')\""},
        "rows": [{"id": "A", "model": "${models}/a", "train": "python -c \"open('${model}', 'w').write('0.75')\""},
                 {"id": "B+", "model": "${models}/b",     # builds on row A's model
                  "train": "python -c \"open('${model}', 'w').write(str(1 - float(open('${models}/a').read())))\""}],
        "evaluate": {"write": write, "metrics": ["image_auroc", "aupro", "f1"]},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    rows = run_preset(path, {})
    assert rows == [{"id": "A", "image_auroc": 0.75, "aupro": 0.5, "f1": None},
                    {"id": "B+", "image_auroc": 0.25, "aupro": 0.5, "f1": None}]
    assert "| B+ | 0.2500 | 0.5000 | n/a |" in (out / "results.md").read_text()
    mark = json.loads((out / ".done-B+-train").read_text())
    assert mark["command"].startswith("python -c") and len(mark["sha256"]) == 64
    scene = yaml.safe_load((out / "scenes" / "plain.yaml").read_text())
    assert scene["anomalies"]["probability"] == 0.25 and "dent" not in scene["anomalies"]["classes"]
    assert "water_stain" in scene["anomalies"]["classes"] and scene["sensor"]["dofp"] == {"enabled": True}
    assert scene["sensor"]["mode"] == "rgb" and scene["objects"][1]["parts"]["plate_top"]["mesh"].startswith("/")
    (out / "models" / "a").write_text("0.5")                 # a finished step is not rerun ...
    capsys.readouterr()
    run_preset(path, {"v": "0.3"})
    assert (out / "models" / "a").read_text() == "0.5"
    assert "another command" not in capsys.readouterr().out
    assert yaml.safe_load((out / "scenes" / "plain.yaml").read_text())["anomalies"]["probability"] == 0.3
    (out / ".done-A-train").write_text("python other\n")     # ... but a changed command reruns, with what follows
    run_preset(path, {})
    log = capsys.readouterr().out
    assert "A-train: command changed since its last run; rerunning it and every later step" in log
    assert (out / "models" / "a").read_text() == "0.75"
    ran = [ln for ln in log.splitlines() if ln.startswith("+ ")]
    assert "= mk: done" in log and len(ran) == 4         # A-train, A-write, B+-train, B+-write
    bad = dict(preset, scenes={"x": {"from": "aluminum_plate", "set": {"sensor.mode": "infrared"}}})
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    with pytest.raises(ValueError, match="sensor.mode"):
        run_preset(path, {})


# --- the Sequential PatchCore preset (issue 7) ------------------------------------------
SEQ = Path(__file__).parents[2] / "pipelines" / "seq_patchcore_aluminum.yaml"
SCENARIOS = ["Synth", "Synth_WS", "DA", "DR", "DA+DR", "Fine-tuning", "Real", "Melding", "PatchCore"]


def _argv(cmd: str) -> list[str]:
    return shlex.split(cmd)


def _opt(argv: list[str], flag: str) -> list[str]:
    """Values after ``flag`` (up to the next option)."""
    i = argv.index(flag)
    j = next((k for k in range(i + 1, len(argv)) if argv[k].startswith("--")), len(argv))
    return argv[i + 1:j]


def test_seq_patchcore_preset_resolves_and_maps_the_scenarios():
    p = load_preset(SEQ)
    cmds = p["stages"] + [s for r in p["rows"] for s in r["steps"]]
    assert all("${" not in c and "$" not in c for _, c in cmds)
    assert [r["id"] for r in p["rows"]] == SCENARIOS
    out = p["out"]
    st = {k: _argv(c) for k, c in p["stages"]}
    # data: Synth clean, Synth_WS/DR with stains as normal, DR = light variants; real = DoFP, other seed
    assert p["scenes"]["synth"][1] == {"anomalies.probability": 0, "anomalies.min_visible_px": 40}
    ws = p["scenes"]["synth_ws"][1]
    assert ws["anomalies.probability"] > 0 and all(ws[f"anomalies.classes.{c}"] is None for c in ("dent", "bump", "scratch"))
    assert p["scenes"]["real"][1]["sensor.dofp"]["enabled"] is True
    assert {tuple(_opt(st[f"render_dr_{v}"], "--light-variant")) for v in ("none", "rot90", "scale2")} == \
        {("none",), ("rot90",), ("scale2",)}
    assert {tuple(_opt(st[f"render_dr_{v}"], "--shard")) for v in ("none", "rot90", "scale2")} == {("0/3",), ("1/3",), ("2/3",)}
    assert _opt(st["render_real"], "--seed") != _opt(st["render_synth"], "--seed")
    assert "--impurities" not in st["data_synth"] and "--from-mosaic" in st["data_real"]
    assert all(_opt(st[k], "--impurities") == ["normal"] for k in ("data_synth_ws", "data_dr", "data_real"))
    assert _opt(st["data_dr"], "--render") == [f"{out}/render/dr_none"]  # argparse 'append': first of three
    assert st["data_dr"].count("--render") == 3
    rows = {r["id"]: r for r in p["rows"]}
    train = {k: _argv(dict(r["steps"])[f"{k}-train"]) for k, r in rows.items()}
    model = {k: r["env"]["model"] for k, r in rows.items()}
    assert len(set(model.values())) == len(model)
    data = {k: _opt(a, "--data")[0] for k, a in train.items()}
    assert data["Synth"].endswith("data/synth") and data["Synth_WS"] == data["DA"] and data["DR"] == data["DA+DR"]
    real = p["env"]["real_data"]
    assert all(data[k] == real for k in ("Fine-tuning", "Real", "Melding", "PatchCore"))
    assert {k for k, a in train.items() if "--augment" in a} == {"DA", "DA+DR", "Fine-tuning", "Real"}
    assert _opt(train["Fine-tuning"], "--model") == [model["DA+DR"]] and "finetune" in train["Fine-tuning"]
    assert _opt(train["Melding"], "--models") == [model["Real"], model["DA+DR"]]
    assert _opt(train["PatchCore"], "--method") == ["original"]
    assert all(_opt(train[k], "--method") == ["sequential"] for k in SCENARIOS[:5] + ["Real"])
    for k, r in rows.items():                                # same real test split for every scenario
        steps = dict(r["steps"])
        pred, ev = _argv(steps[f"{k}-predict"]), _argv(steps[f"{k}-evaluate"])
        assert _opt(pred, "--model") == [model[k]] and _opt(pred, "--data") == [real] == _opt(ev, "--data")
        assert _opt(pred, "--split") == ["test,val"] and _opt(ev, "--pred") == _opt(pred, "--out")
        assert _opt(ev, "--out") == [f"{out}/eval/{k}"]
    assert p["metrics"] == ["image_auroc", "pixel_auroc", "aupro", "f1", "mr_dw", "mr_dw_impurity"]


def _direct_aurocs(pred: Path, data: Path) -> tuple[float, float]:
    """(image, pixel) AUROC of a predictions directory on its dataset's test split, straight
    from the files with scikit-learn: ignore-only images out of the image AUROC, ignore pixels
    out of the pixel AUROC."""
    import cv2
    import numpy as np
    import tifffile
    from sklearn.metrics import roc_auc_score
    man = json.loads((data / "manifest.json").read_text())
    p = json.loads((pred / "predictions.json").read_text())
    test = [s for s in man["samples"] if s["split"] == "test"]
    kept = [s for s in test if not s.get("ignore_image")]
    image = roc_auc_score([s["label"] for s in kept], [p["scores"][s["id"]] for s in kept])
    scores, labels = [], []
    for s in test:
        a = tifffile.imread(pred / p["maps"][s["id"]])
        m = cv2.imread(str(data / s["mask"]), cv2.IMREAD_UNCHANGED) > 0 if s.get("mask") else np.zeros(a.shape, bool)
        keep = ~(cv2.imread(str(data / s["ignore"]), cv2.IMREAD_UNCHANGED) > 0) if s.get("ignore") else np.ones(a.shape, bool)
        scores.append(a[keep])
        labels.append(m[keep])
    return image, roc_auc_score(np.concatenate(labels), np.concatenate(scores))


TINY = {"n_render": "6", "n_real": "16", "res": "128x96", "spp": "4", "coreset_size": "100", "epochs": "2",
        "quiet": "--quiet", "eval_extra": "--no-report", "min_visible_px": "4"}   # 128x96: small anomalies


@pytest.mark.slow
def test_seq_patchcore_preset_end_to_end(tmp_path):
    """The whole preset at toy size (50-65 s on 2 CPU cores): each row of the table is its own
    evaluate step's metrics.json, whose AUROCs agree with a direct scikit-learn computation
    over that row's predictions, and the scenarios do not all collapse to one result."""
    out = tmp_path / "seq"
    rows = run_preset(SEQ, {**TINY, "out": str(out)})
    res = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in res["rows"]] == SCENARIOS == [r["id"] for r in rows]
    preset = {r["id"]: dict(r["steps"]) for r in load_preset(SEQ, {**TINY, "out": str(out)})["rows"]}
    for r in res["rows"]:
        m = json.loads((out / "eval" / r["id"] / "metrics.json").read_text())
        pred_out = _opt(_argv(preset[r["id"]][f"{r['id']}-predict"]), "--out")[0]
        assert Path(m["predictions"]) == Path(pred_out) / "predictions.json"
        assert r == {"id": r["id"], "image_auroc": m["image"]["auroc"], "pixel_auroc": m["pixel"]["auroc"],
                     "aupro": m["aupro"]["value"], "f1": m["thresholded"]["f1"],
                     "mr_dw": m["defect_wise_recall"]["mR_DW"],
                     "mr_dw_impurity": m["defect_wise_recall"]["mR_DW_impurity"],
                     **({"threshold_degenerate": r["threshold_degenerate"]} if "threshold_degenerate" in r else {})}
        for k in ("image_auroc", "pixel_auroc", "aupro", "f1", "mr_dw", "mr_dw_impurity"):
            assert r[k] is not None and 0.0 <= r[k] <= 1.0 and math.isfinite(r[k]), (r["id"], k, r[k])
        image, pixel = _direct_aurocs(Path(m["predictions"]).parent, out / "data" / "real")
        assert r["image_auroc"] == pytest.approx(image, abs=1e-12), r["id"]
        assert r["pixel_auroc"] == pytest.approx(pixel, abs=1e-9), r["id"]
    assert len({r["pixel_auroc"] for r in res["rows"]}) >= len(SCENARIOS) // 2   # scenarios differ
    real = json.loads((out / "data" / "real" / "manifest.json").read_text())
    assert real["labels"] == {"impurities": "normal"} and real["images"].startswith("DoFP")
    for s in real["samples"]:
        assert s["label"] == int(any(i["kind"] == "defect" for i in s["instances"]))
    splits = {sp: {s["label"] for s in real["samples"] if s["split"] == sp} for sp in ("train", "val", "test")}
    assert splits == {"train": {0}, "val": {0, 1}, "test": {0, 1}}
    synth_ws = json.loads((out / "data" / "synth_ws" / "manifest.json").read_text())
    assert {s["split"] for s in synth_ws["samples"]} == {"train"}
    metrics = json.loads((out / "eval" / "Melding" / "metrics.json").read_text())
    assert metrics["threshold"]["source"] == "val (F1-max)" and metrics["split"] == "test"
    assert metrics["image"]["n"] == sum(s["split"] == "test" for s in real["samples"])
    assert all((out / "models" / f).is_file() for f in ("da_dr.safetensors", "finetuned.safetensors",
                                                        "melded.safetensors"))


# --- command-hash markers and --dry-run (issue 20 item 4) -------------------------------
from polar_detect.pipelines import find_preset, main as pipelines_main  # noqa: E402

LOG = "python -c \"open('${out}/log.txt', 'a').write('${tag}${x} ')\""


def _chain(tmp_path, **vars_):
    """Three stages and one row that append their name (and the variables) to log.txt."""
    out = tmp_path / "run"
    write = ("python -c \"import json, pathlib; p = pathlib.Path('${out}/eval/${id}'); "
             "p.mkdir(parents=True, exist_ok=True); open('${out}/log.txt', 'a').write('eval '); "
             "(p / 'metrics.json').write_text(json.dumps({'image': {'auroc': 0.5}, "
             "'thresholded': {'f1': ${f1}}, 'threshold': {'value': 0.1, 'degenerate': ${degenerate}, "
             "'degeneracy': {'reason': 'flags 99 % of normal pixels'}}}))\"")
    preset = {"vars": {"out": str(out), "x": "1", "y": "1", "f1": "0.25", "degenerate": "False", **vars_},
              "stages": {"one": LOG.replace("${tag}", "one"), "two": LOG.replace("${tag}${x}", "two${y}"),
                         "three": LOG.replace("${tag}", "three")},
              "rows": [{"id": "A"}],
              "evaluate": {"write": write, "metrics": ["image_auroc", "f1"]}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path, out


def _log(out):
    words = (out / "log.txt").read_text().split()
    (out / "log.txt").write_text("")
    return words


def test_changed_command_reruns_its_step_and_every_later_step(tmp_path, capsys):
    path, out = _chain(tmp_path)
    run_preset(path, {})
    assert _log(out) == ["one1", "two1", "three1", "eval"]
    run_preset(path, {})                                     # unchanged: nothing runs
    assert _log(out) == []
    run_preset(path, {"y": "2"})                             # only stage two's command changes
    assert _log(out) == ["two2", "three1", "eval"]           # ... it and everything after rerun
    assert "two: command changed since its last run" in capsys.readouterr().out
    run_preset(path, {"x": "3", "y": "2"})                   # the first stage changes: all rerun
    assert _log(out) == ["one3", "two2", "three3", "eval"]
    mark = json.loads((out / ".done-two").read_text())
    assert mark["command"].endswith("write('two2 ')\"") and len(mark["sha256"]) == 64


def test_interrupted_rerun_still_reruns_the_later_steps(tmp_path):
    path, out = _chain(tmp_path)
    run_preset(path, {})
    _log(out)
    spec = yaml.safe_load(path.read_text())
    spec["stages"]["three"] = "python -c \"import sys; sys.exit(3)\""
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(subprocess.CalledProcessError):
        run_preset(path, {"y": "2"})                         # two reruns, three fails
    assert _log(out) == ["two2"]
    assert not (out / ".done-three").exists() and not (out / ".done-A-write").exists()
    spec["stages"]["three"] = LOG.replace("${tag}", "three")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run_preset(path, {"y": "2"})
    assert _log(out) == ["three1", "eval"]                   # the row reruns although its command is old


def test_scene_variant_change_reruns_the_step_naming_it(tmp_path):
    out = tmp_path / "run"
    preset = {"vars": {"out": str(out), "p": "0.25"},
              "scenes": {"v": {"from": "aluminum_plate", "set": {"anomalies.probability": "${p}"}}},
              "stages": {"uses": "python -c \"open('${out}/log.txt', 'a').write('uses ')\" ${out}/scenes/v.yaml",
                         "other": "python -c \"open('${out}/log.txt', 'a').write('other ')\""},
              "rows": [], "evaluate": {"metrics": ["image_auroc"]}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    run_preset(path, {})
    assert _log(out) == ["uses", "other"]
    run_preset(path, {})
    assert _log(out) == []
    run_preset(path, {"p": "0.5"})                           # same command text, another scene file
    assert _log(out) == ["uses", "other"]


def test_dry_run_prints_substituted_commands_and_runs_nothing(tmp_path, capsys):
    path, out = _chain(tmp_path)
    assert pipelines_main([str(path), "--dry-run", "--set", "y=7"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()                                  # nothing run, nothing written
    assert f"open('{out}/log.txt', 'a').write('two7 ')" in text and "${" not in text
    assert text.count("RUN (missing)") == 4 and "4 of 4 steps would run" in text
    run_preset(path, {"y": "7"})
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert pipelines_main([str(path), "--dry-run", "--set", "y=8"]) == 0
    text = capsys.readouterr().out
    assert "# stage: one: skip (done)" in text and "# stage: two: RUN (changed)" in text
    assert "# stage: three: RUN (after a rerun step)" in text and "3 of 4 steps would run" in text
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_preset_by_name_and_shipped_presets_dry_run(capsys):
    assert find_preset("usb_brick_station").name == "usb_brick_station.yaml"
    for name in ("usb_brick_station", "polar_ano_draem", "seq_patchcore_aluminum"):
        assert pipelines_main([name, "--dry-run", "--set", "out=/nonexistent/x"]) == 0
        text = capsys.readouterr().out
        assert "python -m polar_detect.evaluation.evaluate" in text and "${" not in text
    assert not Path("/nonexistent").exists()


def test_results_mark_thresholded_metrics_of_a_degenerate_threshold(tmp_path):
    path, out = _chain(tmp_path, degenerate="True", f1="1.0")
    rows = run_preset(path, {})
    assert rows[0]["threshold_degenerate"] == "flags 99 % of normal pixels"
    md = (out / "results.md").read_text()
    assert "| A | 0.5000 | ~~1.0000~~ (trivial) |" in md and "Row A: degenerate threshold" in md


def test_variant_of_a_scene_outside_the_repo_loads(tmp_path, monkeypatch):
    """A preset may vary the user's own scene (meshes next to it, outside assets/): the
    variant under out/scenes/ names those meshes by absolute path, which the preset allows
    through POLAR_ASSET_DIRS for itself and its commands; nothing else is allowed."""
    import shutil

    from polar_render.config.scenes import REPO_ROOT, SceneConfigError, load_scene, write_scene_variant
    from polar_detect.pipelines import write_scenes

    monkeypatch.setenv("POLAR_ASSET_DIRS", "")  # restored (unset) after the test
    own = tmp_path / "mine"
    own.mkdir()
    for f in (REPO_ROOT / "assets" / "usb_brick").glob("*.ply"):
        shutil.copy(f, own / f.name)
    text = (REPO_ROOT / "scenes" / "usb_brick" / "scene.yaml").read_text()
    (own / "scene.yaml").write_text(text.replace("../../assets/usb_brick/", ""))
    out = tmp_path / "out"
    stray = write_scene_variant(tmp_path / "elsewhere" / "v.yaml", own / "scene.yaml")
    with pytest.raises(SceneConfigError, match="outside"):
        load_scene(stray)
    write_scenes({"v": (str(own / "scene.yaml"), {"render.spp": 2})}, out)
    assert load_scene(out / "scenes" / "v.yaml").render["spp"] == 2
    assert str(own.resolve()) in os.environ["POLAR_ASSET_DIRS"].split(os.pathsep)
