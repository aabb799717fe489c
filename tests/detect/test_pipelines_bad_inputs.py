"""Bad-input corpus of the workflow CLIs: pipeline presets (``python -m polar_detect.pipelines``)
and evaluate options (``python -m polar_detect.evaluation.evaluate``).

Every case calls the real entry point in-process and requires exit code 2, a one-line message
naming the file and/or key and the problem, and that nothing was written (the preset's output
directory / evaluate's --out stays absent) and the inputs are unchanged.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from polar_detect.evaluation import evaluate as ev
from polar_detect import pipelines as pl

from tests.detect.evaluation.handmade import make_run

GOOD = {"vars": {"out": "OUT", "x": "1"},
        "stages": {"s": "python -c \"print('${x}')\""},
        "rows": [{"id": "A"}],
        "evaluate": {"e": "python -c \"print('${id}')\"", "metrics": ["image_auroc"]}}


def preset(**changes):
    """GOOD with top-level keys replaced (None removes one)."""
    spec = {k: v for k, v in GOOD.items()}
    for k, v in changes.items():
        if v is None:
            spec.pop(k)
        else:
            spec[k] = v
    return spec


def P(spec, argv, expect, id):
    """A pipelines case: ``spec`` (dict -> YAML, str -> raw text, None -> no file written)."""
    return pytest.param("pipelines", spec, argv, expect, id=id)


def E(argv, expect, id):
    """An evaluate case: options after --pred/--data/--out of a valid run."""
    return pytest.param("evaluate", None, argv, expect, id=id)


CASES = [
    P(None, ["no_such_preset"], ["no_such_preset: unknown preset", "usb_brick_station"], "unknown-preset"),
    P(None, ["no_such_preset", "--dry-run"], ["no_such_preset: unknown preset"], "unknown-preset-dry-run"),
    P("vars: [\n  out: x\n", [], ["p.yaml: not valid YAML"], "preset-bad-yaml"),
    P("- a\n- b\n", [], ["p.yaml: a preset is a mapping", "got list"], "preset-not-a-mapping"),
    P(b"\xff\xfe vars", [], ["p.yaml: cannot read preset"], "preset-not-utf8"),
    P(preset(stages=None), [], ["p.yaml: missing 'stages'"], "preset-missing-stages"),
    P(preset(), ["--set", "x"], ["--set takes KEY=VALUE", "'x'"], "set-without-equals"),
    P(preset(), ["--set", "=3"], ["--set takes KEY=VALUE"], "set-empty-key"),
    P(preset(), ["--set", "xx=2"], ["--set xx: not a variable of", "p.yaml", "known: out, x"], "set-unknown-variable"),
    P(preset(), ["--set", "x=1", "x=2"], ["--set x: given twice"], "set-twice"),
    P(preset(evaluate={"metrics": ["image_aurocc"]}), [], ["p.yaml: evaluate.metrics: unknown ['image_aurocc']"],
      "unknown-metric"),
    P(preset(evaluate={"metrics": "image_auroc"}), [], ["p.yaml: evaluate.metrics: expected a list"],
      "metrics-not-a-list"),
    P(preset(rows=[{"id": "a b"}]), [], ["p.yaml: rows[0].id: row id 'a b'"], "bad-row-id"),
    P(preset(rows=[{"id": "../x"}]), [], ["p.yaml: rows[0].id: row id '../x'"], "row-id-path"),
    P(preset(rows=[{"id": "A"}, {"id": "A"}]), [], ["p.yaml: rows[1].id: row id 'A' appears twice"],
      "duplicate-row-id"),
    P(preset(rows=[{"id": "A", "x": [1, 2]}]), [], ["p.yaml: rows[0].x: expected a string or number"],
      "row-value-list"),
    P(preset(rows={"id": "A"}), [], ["p.yaml: rows: expected a list"], "rows-not-a-list"),
    P(preset(vars={"out": "OUT", "a": "${b}", "b": "x${a}"}), [], ["p.yaml: vars: variables ['a', 'b']", "cycle"],
      "variable-cycle"),
    P(preset(vars={"x": "1"}), [], ["p.yaml: vars.out: missing"], "vars-out-missing"),
    P(preset(vars={"out": "OUT", "x": {"a": 1}}), [], ["p.yaml: vars.x: expected a string or number"],
      "var-not-scalar"),
    P(preset(stages={"s": "python -c ${nope}"}), [], ["p.yaml: stages.s: unknown variable ${nope}"],
      "unknown-variable-in-stage"),
    P(preset(evaluate={"e": "python ${nope}"}), [], ["p.yaml: evaluate.e: unknown variable ${nope}"],
      "unknown-variable-in-evaluate"),
    P(preset(stages={"s": "python -c \"print(1)"}), [], ["p.yaml: stages.s: cannot split the command",
                                                         "quotation"], "unbalanced-quote"),
    P(preset(stages={"s": ["python", "-V"]}), [], ["p.yaml: stages.s: expected a non-empty command string"],
      "stage-not-a-string"),
    P(preset(stages={"s": " "}), [], ["p.yaml: stages.s: expected a non-empty command string"], "stage-blank"),
    P(preset(scenes={"v": {"set": {"a": 1}}}), [], ["p.yaml: scenes.v: expected {from: <scene>"],
      "scene-without-from"),
    P(preset(vars={"out": ""}), [], ["p.yaml: vars.out: empty output directory"], "empty-out"),
    E(["--fpr-limit", "0"], ["--fpr-limit 0.0: must be in (0, 1]"], "eval-fpr-limit-zero"),
    E(["--fpr-limit", "1.5"], ["--fpr-limit 1.5: must be in (0, 1]"], "eval-fpr-limit-above-one"),
    E(["--spro-fpr-limit", "-0.1"], ["--spro-fpr-limit -0.1: must be in (0, 1]"], "eval-spro-limit-negative"),
    E(["--min-coverage", "2"], ["--min-coverage 2.0: must be in [0, 1]"], "eval-min-coverage"),
    E(["--bins", "1"], ["--bins 1: must be >= 2"], "eval-bins"),
    E(["--max-exact-pixels", "-5"], ["--max-exact-pixels -5: must be >= 0"], "eval-max-exact-negative"),
    E(["--bootstrap", "-1"], ["--bootstrap -1: must be >= 0"], "eval-bootstrap-negative"),
    E(["--threshold", "nan"], ["--threshold nan: must be a finite number"], "eval-threshold-nan"),
    E(["--threshold", "inf"], ["--threshold inf: must be a finite number"], "eval-threshold-inf"),
]


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("handmade"))


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("tool,spec,argv,expect", CASES)
def test_bad_input(tool, spec, argv, expect, tmp_path, capsys, handmade, monkeypatch):
    monkeypatch.chdir(tmp_path)                       # a relative out/ would land here
    out = tmp_path / "run"
    if tool == "pipelines":
        path = tmp_path / "p.yaml"
        if isinstance(spec, dict):
            text = yaml.safe_dump(spec, sort_keys=False).replace("OUT", str(out))
            path.write_text(text)
        elif isinstance(spec, bytes):
            path.write_bytes(spec)
        elif isinstance(spec, str):
            path.write_text(spec)
        args = [str(path), *argv] if spec is not None else argv
        before = _tree(tmp_path)
        code = pl.main(args)
    else:
        data, pred, vpred, _, _ = handmade
        before = _tree(data.parent)
        code = ev.main(["--pred", str(pred), "--data", str(data), "--out", str(out), "--val-pred", str(vpred), *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    line = err.strip()
    assert "\n" not in line and line.startswith("error: ") and "Traceback" not in err, err
    for e in expect:
        assert e in line, (e, line)
    assert not out.exists()
    assert _tree(tmp_path if tool == "pipelines" else handmade[0].parent) == before


def test_corpus_size():
    assert len(CASES) >= 8
    assert len({c.id for c in CASES}) == len(CASES)
