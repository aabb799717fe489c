"""Run a paper preset from ``pipelines/*.yaml`` with one command and tabulate its rows.

Schema (see ``pipelines/README.md``):

* ``vars``: defaults, overridden by ``--set key=value`` (only declared keys); a value may use
  other variables (``data: ${out}/data``), resolved after the overrides.
* ``scenes`` (optional): scene-file variants ``<name>: {from: <scene>, set: {<dotted.key>:
  <value>}}``, written to ``${out}/scenes/<name>.yaml`` before the stages
  (``polar_render.config.scenes.write_scene_variant``; ``null`` deletes a key) and validated;
  render one with ``--scene ${out}/scenes/<name>.yaml``.
* ``stages``: shell commands run in order.
* ``rows``: each an ``id`` (letters, digits, ``_ . + -``: it names files) plus per-row
  variables, which may use ``${...}`` (also of the same row); an optional ``train`` command
  runs for the row first. Rows run in order, so a row may build on an earlier row's model.
* ``evaluate``: commands run for every row, and the ``metrics`` to tabulate from
  ``${out}/eval/${id}/metrics.json`` (names: ``METRIC_KEYS``).

``${name}`` is replaced by the variable, a leading ``python`` by this interpreter; a
command is split like a shell would (``shlex``) and run without a shell. Each command is a
step with a marker ``${out}/.done-<stage>`` or ``${out}/.done-<id>-<step>`` holding the
sha256 of the command it ran (after substitution, plus the scene variants it names). A rerun
skips a step whose marker matches; a step whose command changed reruns, and so does every
step after it (stages, then rows in order); ``--force`` reruns everything. Results go to
``${out}/results.json`` and ``results.md``; thresholded metrics (f1, mr_dw, det_*) of a row
whose threshold is degenerate (``metrics.threshold_degeneracy``) are marked there.

A preset *runs the commands it lists*, like a Makefile: it is code, not data. ``--dry-run``
prints the commands (variables substituted) and what a run would do, running nothing and
writing nothing.

``python -m polar_detect.pipelines pipelines/polar_ano_draem.yaml --set n_render=48 preset=small``
``python -m polar_detect.pipelines usb_brick_station --dry-run``  (a name: ``pipelines/<name>.yaml``)
"""
from __future__ import annotations

import argparse
import hashlib
import os
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

# table name -> (section, key) of polar_detect.evaluation.evaluate's metrics.json
METRIC_KEYS = {"image_auroc": ("image", "auroc"), "pixel_auroc": ("pixel", "auroc"),
               "image_ap": ("image", "ap"), "pixel_ap": ("pixel", "ap"),
               "aupro": ("aupro", "value"),                     # FPR limit: evaluate --fpr-limit (0.3)
               "spro": ("spro", "value"),                       # AU-sPRO (LOCO regions; evaluate --spro-fpr-limit 0.05)
               "f1": ("thresholded", "f1"),                     # pixel F1 at evaluate's threshold
               "mr_dw": ("defect_wise_recall", "mR_DW"),        # mean defect-wise recall (defect classes)
               "mr_dw_impurity": ("defect_wise_recall", "mR_DW_impurity"),  # share of impurities flagged
               "image_auroc_lo": ("image", "auroc_ci_low"),     # 95 % stratified bootstrap interval
               "image_auroc_hi": ("image", "auroc_ci_high"),
               "pixel_auroc_part": ("pixel_part", "auroc"),     # pixels inside the part (object_mask) only
               **{f"det_{c}": ("instance_detection_rate", c)    # share of instances of class c detected
                  for c in ("dent", "bump", "scratch", "chip", "water_stain", "missing", "extra", "swapped")},
               # image AUROC of normal images vs images holding a class of the group (evaluation.image_level.CLASS_GROUPS)
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


def allow_base_scene_dirs(scenes: dict) -> None:
    """A variant under ``out/scenes/`` names its base scene's meshes by absolute path, outside
    its own folder; the preset (trusted, it is code) allows those folders as asset
    directories for itself and every command it runs, through ``POLAR_ASSET_DIRS``."""
    from polar_render.config.scenes import resolve_scene_path
    from polar_render.config.schema import ASSET_DIRS_ENV

    dirs = [d for d in os.environ.get(ASSET_DIRS_ENV, "").split(os.pathsep) if d]
    for base, _ in scenes.values():
        d = str(resolve_scene_path(base).resolve().parent)
        if d not in dirs:
            dirs.append(d)
    if dirs:
        os.environ[ASSET_DIRS_ENV] = os.pathsep.join(dirs)


def write_scenes(scenes: dict, out: Path) -> None:
    """Write resolved scene-file variants ``{name: (base scene, {dotted.key: value})}`` to
    ``out/scenes/<name>.yaml`` and validate them."""
    from polar_render.config.scenes import load_scene, write_scene_variant

    allow_base_scene_dirs(scenes)
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


# ------------------------------------------------------------------ step markers
MARKER_FORMAT = "polar_detect.pipelines.marker/2"


def step_digest(cmd: str, out: Path) -> str:
    """sha256 of a step: its command after substitution, plus the bytes of every scene variant
    under ``out/scenes/`` the command names (a changed ``scenes:`` override changes the step)."""
    h = hashlib.sha256(cmd.encode("utf-8"))
    for tok in shlex.split(cmd):
        p = Path(tok)
        if p.suffix == ".yaml" and p.is_file() and p.resolve().parent == (out / "scenes").resolve():
            h.update(b"\0" + tok.encode("utf-8") + b"\0" + p.read_bytes())
    return h.hexdigest()


def _marker(out: Path, name: str) -> Path:
    return out / f".done-{name}"


def marker_state(out: Path, name: str, cmd: str) -> str:
    """``done`` (marker holds this step's digest; or a marker written before digests, whose
    recorded command text is this command), ``changed`` or ``missing``."""
    m = _marker(out, name)
    if not m.is_file():
        return "missing"
    try:
        text = m.read_text()
        rec = json.loads(text)
    except OSError:
        return "changed"
    except ValueError:                         # the older plain-text marker: the command itself
        return "done" if text.split() == cmd.split() else "changed"
    ok = isinstance(rec, dict) and rec.get("format") == MARKER_FORMAT and rec.get("sha256") == step_digest(cmd, out)
    return "done" if ok else "changed"


def _write_marker(out: Path, name: str, cmd: str) -> None:
    from polar_render.io import write_json
    write_json(_marker(out, name), {"format": MARKER_FORMAT, "step": name, "command": cmd,
                                    "sha256": step_digest(cmd, out)})


def plan_steps(p: dict, force: bool = False) -> list[dict]:
    """Every step of a loaded preset in run order with what a run would do: ``run`` when its
    marker is missing, records another command (``changed``) or an earlier step runs (a
    changed step reruns every step after it), else ``skip``."""
    out = p["out"]
    steps = [("stage", n, c) for n, c in p["stages"]] + \
        [(f"row {r['id']}", n, c) for r in p["rows"] for n, c in r["steps"]]
    plan, stale = [], force
    for where, name, cmd in steps:
        state = marker_state(out, name, cmd)
        why = "--force" if force else ("after a rerun step" if stale and state == "done" else state)
        run = stale or state != "done"
        stale = stale or run
        plan.append({"where": where, "step": name, "command": cmd, "run": run,
                     "state": state, "why": why if run else "done"})
    return plan


def _execute(out: Path, plan: list[dict]) -> None:
    """Run the plan: before the first step that runs, every marker from there on is removed
    (so an interrupted rerun cannot leave later steps marked done with stale inputs)."""
    first = next((i for i, st in enumerate(plan) if st["run"]), None)
    if first is not None:
        for st in plan[first:]:
            _marker(out, st["step"]).unlink(missing_ok=True)
    for st in plan:
        if not st["run"]:
            print(f"= {st['step']}: done", flush=True)
            continue
        if st["state"] == "changed":
            print(f"= {st['step']}: command changed since its last run; rerunning it and every later step",
                  flush=True)
        _shell(st["command"])
        _write_marker(out, st["step"], st["command"])


class PresetError(ValueError):
    """A preset file that cannot be used; the message names the file and the key path."""


PRESET_DIRS = (Path("pipelines"), Path(__file__).resolve().parents[4] / "pipelines")


def find_preset(name: str | Path) -> Path:
    """A preset path, or a preset name looked up as ``pipelines/<name>.yaml`` (here, then in
    this repository)."""
    p = Path(name)
    if p.is_file():
        return p
    if p.suffix not in (".yaml", ".yml") and p.name == str(name):
        for d in PRESET_DIRS:
            if (d / f"{name}.yaml").is_file():
                return d / f"{name}.yaml"
    known = sorted({q.stem for d in PRESET_DIRS if d.is_dir() for q in d.glob("*.yaml")})
    raise PresetError(f"{name}: unknown preset (no such file, nor pipelines/{p.stem}.yaml); "
                      f"known: {', '.join(known) or 'none'}")


def _read_spec(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PresetError(f"{path}: cannot read preset ({e})") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PresetError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(spec, dict):
        raise PresetError(f"{path}: a preset is a mapping (vars, scenes, stages, rows, evaluate), "
                          f"got {type(spec).__name__}")
    for key in ("vars", "stages", "rows", "evaluate"):
        if key not in spec:
            raise PresetError(f"{path}: missing '{key}' (schema: vars, scenes, stages, rows, evaluate)")
    _check_types(path, spec)
    return spec


def _scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _check_types(path: Path, spec: dict) -> None:
    """Shapes of the schema's keys, each error naming its key path."""
    def need(ok, key, what):
        if not ok:
            raise PresetError(f"{path}: {key}: expected {what}")
    need(isinstance(spec["vars"], dict), "vars", "a mapping of name: value")
    for k, v in spec["vars"].items():
        need(_scalar(v), f"vars.{k}", "a string or number")
    need(isinstance(spec["stages"], dict), "stages", "a mapping of name: command")
    for k, v in spec["stages"].items():
        need(isinstance(v, str) and v.strip(), f"stages.{k}", "a non-empty command string")
    need(isinstance(spec["rows"], list), "rows", "a list of {id: ..., <var>: ...}")
    for i, row in enumerate(spec["rows"]):
        need(isinstance(row, dict), f"rows[{i}]", "a mapping with an 'id'")
        for k, v in row.items():
            need(_scalar(v), f"rows[{i}].{k}", "a string or number")
    need(isinstance(spec["evaluate"], dict), "evaluate", "a mapping of step: command (and 'metrics')")
    for k, v in spec["evaluate"].items():
        if k == "metrics":
            need(isinstance(v, list) and all(isinstance(x, str) for x in v), "evaluate.metrics", "a list of names")
        else:
            need(isinstance(v, str) and v.strip(), f"evaluate.{k}", "a non-empty command string")
    need(isinstance(spec.get("scenes") or {}, dict), "scenes", "a mapping of name: {from, set}")


def load_preset(path: Path, overrides: dict | None = None) -> dict:
    """A preset with every ``${...}`` resolved, nothing run: ``{"env", "out", "scenes":
    {name: (base, {dotted.key: value})}, "stages": [(step, command)], "rows": [{"id", "env",
    "steps": [(step, command)]}], "metrics": [...]}``. Steps are named as their markers."""
    overrides = overrides or {}
    path = Path(path)
    spec = _read_spec(path)
    unknown = sorted(set(overrides) - set(spec["vars"]))
    if unknown:
        raise KeyError(f"--set {', '.join(unknown)}: not a variable of {path} (known: {', '.join(spec['vars'])})")
    if "out" not in spec["vars"]:
        raise PresetError(f"{path}: vars.out: missing (the run's output directory)")
    try:
        env = resolve({**spec["vars"], **overrides})
    except KeyError as e:
        raise PresetError(f"{path}: {e.args[0]}") from None
    except ValueError as e:
        raise PresetError(f"{path}: {e}") from None
    if not env["out"].strip():
        raise PresetError(f"{path}: vars.out: empty output directory")
    metrics = spec["evaluate"].get("metrics", ["image_auroc", "pixel_auroc"])
    bad = [k for k in metrics if k not in METRIC_KEYS]
    if bad:
        raise PresetError(f"{path}: evaluate.metrics: unknown {bad}; known: {', '.join(METRIC_KEYS)}")
    scenes = {}
    for name, sc in (spec.get("scenes") or {}).items():
        if not isinstance(sc, dict) or "from" not in sc or not isinstance(sc.get("set") or {}, dict):
            raise PresetError(f"{path}: scenes.{name}: expected {{from: <scene>, set: {{<dotted.key>: <value>}}}}")
        scenes[name] = (_subst(path, f"scenes.{name}.from", str(sc["from"]), env),
                        {str(k): _value(v, env) for k, v in (sc.get("set") or {}).items()})
    rows, seen = [], set()
    for i, row in enumerate(spec["rows"]):
        rid = str(row.get("id", ""))
        if not _ROW_ID.match(rid):
            raise PresetError(f"{path}: rows[{i}].id: row id {rid!r} must be letters, digits, '_', '.', '+' or '-'")
        if rid in seen:
            raise PresetError(f"{path}: rows[{i}].id: row id {rid!r} appears twice")
        seen.add(rid)
        try:
            renv = resolve({**env, **{k: v for k, v in row.items() if k != "train"}}, f"rows[{i}] ({rid})")
        except (KeyError, ValueError) as e:
            raise PresetError(f"{path}: {e.args[0]}") from None
        cmds = ([("train", row["train"])] if row.get("train") else []) + \
            [(k, v) for k, v in spec["evaluate"].items() if k != "metrics"]
        rows.append({"id": rid, "env": renv,
                     "steps": [(f"{rid}-{k}", _subst(path, f"rows[{i}].{k}" if k == "train" else f"evaluate.{k}",
                                                     v, renv)) for k, v in cmds]})
    return {"env": env, "out": Path(env["out"]), "scenes": scenes, "metrics": metrics, "rows": rows,
            "stages": [(k, _subst(path, f"stages.{k}", v, env)) for k, v in spec["stages"].items()]}


def _subst(path: Path, key: str, text: str, env: dict) -> str:
    try:
        cmd = substitute(text, env)
        shlex.split(cmd)
    except KeyError as e:
        raise PresetError(f"{path}: {key}: {e.args[0]}") from None
    except ValueError as e:                      # shlex: unbalanced quotes
        raise PresetError(f"{path}: {key}: cannot split the command ({e})") from None
    return cmd


def dry_run(path: Path, overrides: dict, force: bool = False) -> list[dict]:
    """Print what :func:`run_preset` would run (variables substituted); run and write nothing."""
    p = load_preset(path, overrides)
    plan = plan_steps(p, force)
    print(f"# preset {path}: out {p['out']}  ({sum(s['run'] for s in plan)} of {len(plan)} steps would run)")
    for name, (base, sets) in p["scenes"].items():
        print(f"# scene variant {p['out'] / 'scenes' / (name + '.yaml')}: from {base}, set {json.dumps(sets)}")
    for st in plan:
        print(f"# {st['where']}: {st['step']}: {'RUN (' + st['why'] + ')' if st['run'] else 'skip (done)'}")
        print(st["command"])
    return plan


def run_preset(path: Path, overrides: dict, force: bool = False) -> list[dict]:
    """Run a preset (resuming from its markers) and write its results table."""
    p = load_preset(path, overrides)
    out, metrics = p["out"], p["metrics"]
    out.mkdir(parents=True, exist_ok=True)
    if p["scenes"]:
        write_scenes(p["scenes"], out)
    _execute(out, plan_steps(p, force))
    results = [_row_result(out, row, metrics) for row in p["rows"]]
    _write_results(out, path, p["env"], metrics, results)
    return results


THRESHOLD_METRICS = {k for k, v in METRIC_KEYS.items()
                     if v[0] in ("thresholded", "defect_wise_recall", "instance_detection_rate")}


def _row_result(out: Path, row: dict, metrics: list) -> dict:
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
    th = m.get("threshold") if isinstance(m.get("threshold"), dict) else {}
    if th.get("degenerate"):
        res["threshold_degenerate"] = (th.get("degeneracy") or {}).get("reason") or True
    return res


def _write_results(out: Path, path, env: dict, metrics: list, results: list) -> None:
    (out / "results.json").write_text(json.dumps({"preset": str(path), "vars": env, "rows": results}, indent=1))
    lines = ["| row | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for r in results:
        bad = "threshold_degenerate" in r

        def cell(k):
            v = "n/a" if r[k] is None else f"{r[k]:.4f}"
            return f"~~{v}~~ (trivial)" if bad and k in THRESHOLD_METRICS and r[k] is not None else v
        lines.append(f"| {r['id']} | " + " | ".join(cell(k) for k in metrics) + " |")
    if any("threshold_degenerate" in r for r in results):
        lines.append("")
        lines += [f"Row {r['id']}: degenerate threshold, {r['threshold_degenerate']}" for r in results
                  if "threshold_degenerate" in r]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m polar_detect.pipelines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", help="a preset file, or a name in pipelines/ (e.g. usb_brick_station)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--force", action="store_true", help="rerun every step")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the commands (variables substituted) and which would run; run nothing")
    args = ap.parse_args(argv)
    overrides = {}
    for kv in args.set:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            print(f"error: --set takes KEY=VALUE, got {kv!r}", file=sys.stderr)
            return 2
        if k in overrides:
            print(f"error: --set {k}: given twice", file=sys.stderr)
            return 2
        overrides[k] = v
    try:
        path = find_preset(args.preset)
        if args.dry_run:
            dry_run(path, overrides, args.force)
        else:
            run_preset(path, overrides, args.force)
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
