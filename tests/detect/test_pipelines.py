"""The preset runner: stages in order, per-row evaluation, results table, resume."""
from __future__ import annotations

import json

import pytest
import yaml

from polar_detect.pipelines import run_preset, substitute


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
