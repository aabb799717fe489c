"""Run a paper preset from ``pipelines/*.yaml`` with one command and tabulate its rows.

Schema (see ``pipelines/README.md``):

* ``vars``: defaults, overridden by ``--set key=value`` (only declared keys); a value may use
  other variables (``data: ${out}/data``), resolved after the overrides.
* ``scenes`` (optional): scene-file variants ``<name>: {from: <scene>, set: {<dotted.key>:
  <value>}}``, written to ``${out}/scenes/<name>.yaml`` before the stages
  (``polar_render.config.write_scene_variant``; ``null`` deletes a key) and validated;
  render one with ``--scene ${out}/scenes/<name>.yaml``.
* ``stages``: shell commands run in order.
* ``rows``: each an ``id`` (letters, digits, ``_ . + -``: it names files) plus per-row
  variables, which may use ``${...}`` (also of the same row); an optional ``train`` command
  runs for the row first. Rows run in order, so a row may build on an earlier row's model.
* ``evaluate``: commands run for every row, and the ``metrics`` to tabulate from
  ``${out}/eval/${id}/metrics.json`` (names: ``METRIC_KEYS``).

``${name}`` is replaced by the variable, a leading ``python`` by this interpreter. Each
command is a step with a marker ``${out}/.done-<stage>`` or ``${out}/.done-<id>-<step>``
holding the command it ran; a step whose marker exists is skipped, so a rerun resumes
(``--force`` reruns everything). Results go to ``${out}/results.json`` and ``results.md``.

``python -m polar_detect.pipelines pipelines/polar_ano_draem.yaml --set n_render=48 preset=small``
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

# table name -> (section, key) of polar_detect.evaluate's metrics.json
METRIC_KEYS = {"image_auroc": ("image", "auroc"), "pixel_auroc": ("pixel", "auroc"),
               "image_ap": ("image", "ap"), "pixel_ap": ("pixel", "ap"),
               "aupro": ("aupro", "value"),                     # FPR limit: evaluate --fpr-limit (0.3)
               "f1": ("thresholded", "f1"),                     # pixel F1 at evaluate's threshold
               "mr_dw": ("defect_wise_recall", "mR_DW"),        # mean defect-wise recall (defect classes)
               "mr_dw_impurity": ("defect_wise_recall", "mR_DW_impurity"),  # share of impurities flagged
               "image_auroc_lo": ("image", "auroc_ci_low"),     # 95 % stratified bootstrap interval
               "image_auroc_hi": ("image", "auroc_ci_high"),
               "pixel_auroc_part": ("pixel_part", "auroc"),     # pixels inside the part (object_mask) only
               **{f"det_{c}": ("instance_detection_rate", c)    # share of instances of class c detected
                  for c in ("dent", "bump", "scratch", "chip", "water_stain", "missing", "extra", "swapped")},
               # image AUROC of normal images vs images holding a class of the group (evaluate.CLASS_GROUPS)
               **{f"image_auroc_{g}": ("image", "auroc_by_group", g, "auroc")
                  for g in ("structural", "impurity", "logical")}}
_VAR = re.compile(r"\$\{(\w+)\}")
_ROW_ID = re.compile(r"^[\w.+-]+$")


def substitute(text: str, env: dict) -> str:
    def one(m):
        key = m.group(1)
        if key not in env:
            raise KeyError(f"unknown variable ${{{key}}}")
        return str(env[key])
    return _VAR.sub(one, text)


def resolve(env: dict, where: str = "vars") -> dict:
    """String values with every ``${...}`` expanded (variables may refer to each other)."""
    out = {k: "" if v is None else str(v) for k, v in env.items()}
    for _ in range(len(out) + 1):
        try:
            new = {k: substitute(v, out) for k, v in out.items()}
        except KeyError as e:
            raise KeyError(f"{where}: {e.args[0]}") from None
        if new == out:
            break
        out = new
    loops = sorted(k for k, v in out.items() if _VAR.search(v))
    if loops:
        raise ValueError(f"{where}: variables {loops} refer to themselves (a cycle)")
    return out


def _value(v, env: dict):
    """Substitute variables inside a YAML value; a substituted string is re-read as YAML."""
    if isinstance(v, dict):
        return {k: _value(x, env) for k, x in v.items()}
    if isinstance(v, list):
        return [_value(x, env) for x in v]
    if isinstance(v, str) and _VAR.search(v):
        return yaml.safe_load(substitute(v, env))
    return v


def write_scenes(scenes: dict, out: Path) -> None:
    """Write resolved scene-file variants ``{name: (base scene, {dotted.key: value})}`` to
    ``out/scenes/<name>.yaml`` and validate them."""
    from polar_render.config import load_scene, write_scene_variant

    for name, (base, overrides) in scenes.items():
        dest = write_scene_variant(out / "scenes" / f"{name}.yaml", base, dotted=overrides)
        load_scene(dest)  # a bad override fails here, naming the file
        print(f"= scene {name}: {dest}", flush=True)


def _shell(cmd: str) -> None:
    argv = shlex.split(cmd)
    if argv and argv[0] == "python":
        argv[0] = sys.executable
    print("+ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def _step(out: Path, name: str, cmd: str, force: bool) -> None:
    """Run one command unless its marker exists; the marker records the command."""
    marker = out / f".done-{name}"
    if marker.exists() and not force:
        done = marker.read_text().split()
        note = "" if done in (["ok"], cmd.split()) else " (with another command; --force to rerun)"
        print(f"= {name}: done{note}", flush=True)
        return
    _shell(cmd)
    marker.write_text(cmd + "\n")


def load_preset(path: Path, overrides: dict | None = None) -> dict:
    """A preset with every ``${...}`` resolved, nothing run: ``{"env", "out", "scenes":
    {name: (base, {dotted.key: value})}, "stages": [(step, command)], "rows": [{"id", "env",
    "steps": [(step, command)]}], "metrics": [...]}``. Steps are named as their markers."""
    overrides = overrides or {}
    spec = yaml.safe_load(Path(path).read_text())
    for key in ("vars", "stages", "rows", "evaluate"):
        if key not in (spec or {}):
            raise ValueError(f"{path}: missing '{key}' (schema: vars, scenes, stages, rows, evaluate)")
    unknown = sorted(set(overrides) - set(spec["vars"]))
    if unknown:
        raise KeyError(f"--set {', '.join(unknown)}: not a variable of {path} (known: {', '.join(spec['vars'])})")
    env = resolve({**spec["vars"], **overrides})
    metrics = spec["evaluate"].get("metrics", ["image_auroc", "pixel_auroc"])
    bad = [k for k in metrics if k not in METRIC_KEYS]
    if bad:
        raise ValueError(f"{path}: unknown metrics {bad}; known: {', '.join(METRIC_KEYS)}")
    scenes = {}
    for name, sc in (spec.get("scenes") or {}).items():
        if not isinstance(sc, dict) or "from" not in sc:
            raise ValueError(f"{path}: scenes.{name}: expected {{from: <scene>, set: {{<dotted.key>: <value>}}}}")
        scenes[name] = (substitute(str(sc["from"]), env),
                        {str(k): _value(v, env) for k, v in (sc.get("set") or {}).items()})
    rows = []
    for row in spec["rows"]:
        rid = str(row.get("id", ""))
        if not _ROW_ID.match(rid):
            raise ValueError(f"{path}: row id {rid!r} must be letters, digits, '_', '.', '+' or '-'")
        renv = resolve({**env, **{k: v for k, v in row.items() if k != "train"}}, f"row {rid}")
        cmds = ([("train", row["train"])] if row.get("train") else []) + \
            [(k, v) for k, v in spec["evaluate"].items() if k != "metrics"]
        rows.append({"id": rid, "env": renv, "steps": [(f"{rid}-{k}", substitute(v, renv)) for k, v in cmds]})
    return {"env": env, "out": Path(env["out"]), "scenes": scenes, "metrics": metrics, "rows": rows,
            "stages": [(k, substitute(v, env)) for k, v in spec["stages"].items()]}


def run_preset(path: Path, overrides: dict, force: bool = False) -> list[dict]:
    """Run a preset (resuming from its markers) and write its results table."""
    p = load_preset(path, overrides)
    out, metrics = p["out"], p["metrics"]
    out.mkdir(parents=True, exist_ok=True)
    if p["scenes"]:
        write_scenes(p["scenes"], out)
    for name, cmd in p["stages"]:
        _step(out, name, cmd, force)
    results = []
    for row in p["rows"]:
        for name, cmd in row["steps"]:
            _step(out, name, cmd, force)
        mpath = out / "eval" / row["id"] / "metrics.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"{mpath}: not written by the evaluate steps of row {row['id']}")
        m = json.loads(mpath.read_text())
        res = {"id": row["id"]}
        for k in metrics:
            node = m
            for part in METRIC_KEYS[k]:   # (section, key) or a longer path into metrics.json
                node = node.get(part) if isinstance(node, dict) else None
            res[k] = node
        results.append(res)
    (out / "results.json").write_text(json.dumps({"preset": str(path), "vars": p["env"], "rows": results}, indent=1))
    lines = ["| row | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for r in results:
        lines.append(f"| {r['id']} | " + " | ".join("n/a" if r[k] is None else f"{r[k]:.4f}" for k in metrics) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m polar_detect.pipelines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", type=Path)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    overrides = {}
    for kv in args.set:
        if "=" not in kv:
            print(f"error: --set takes KEY=VALUE, got {kv!r}", file=sys.stderr)
            return 2
        k, v = kv.split("=", 1)
        overrides[k] = v
    try:
        run_preset(args.preset, overrides, args.force)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: stage failed with exit code {exc.returncode}: {' '.join(map(str, exc.cmd))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
