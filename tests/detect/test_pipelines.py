"""The preset runner: stages in order, per-row evaluation, results table, resume."""
from __future__ import annotations

import json
import math
import shlex
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
    assert (out / ".done-B+-train").read_text().startswith("python -c")
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
    (out / ".done-A-train").write_text("python other\n")     # ... but a changed command is pointed out
    run_preset(path, {})
    assert "A-train: done (with another command; --force to rerun)" in capsys.readouterr().out
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


TINY = {"n_render": "6", "n_real": "16", "res": "128x96", "spp": "4", "coreset_size": "100", "epochs": "2",
        "quiet": "--quiet", "eval_extra": "--no-report", "min_visible_px": "4"}   # 128x96: small anomalies


@pytest.mark.slow
def test_seq_patchcore_preset_end_to_end(tmp_path):
    """The whole preset at toy size (50-65 s on 2 CPU cores): a finite row per scenario."""
    out = tmp_path / "seq"
    rows = run_preset(SEQ, {**TINY, "out": str(out)})
    res = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in res["rows"]] == SCENARIOS == [r["id"] for r in rows]
    for r in res["rows"]:
        for k in ("image_auroc", "pixel_auroc", "aupro", "f1", "mr_dw", "mr_dw_impurity"):
            assert r[k] is not None and 0.0 <= r[k] <= 1.0 and math.isfinite(r[k]), (r["id"], k, r[k])
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
