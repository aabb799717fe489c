"""Run a paper preset from ``pipelines/*.yaml`` with one command and tabulate its rows.

Schema (``pipelines/polar_ano_draem.yaml``): ``vars`` (defaults, overridable with
``--set key=value``), ``stages`` (shell commands run in order), ``rows`` (each with an
``id`` and per-row variables) and ``evaluate`` (commands run for every row, and the
``metrics`` to tabulate from ``${out}/eval/${id}/metrics.json``). ``${name}`` is replaced
by the variable; ``python`` by this interpreter. Results go to ``${out}/results.json``
and ``${out}/results.md``. Stages whose marker ``${out}/.done-<stage>`` exists are skipped,
so a rerun resumes (``--force`` reruns everything).

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

METRIC_KEYS = {"image_auroc": ("image", "auroc"), "pixel_auroc": ("pixel", "auroc"),
               "image_ap": ("image", "ap"), "pixel_ap": ("pixel", "ap")}


def substitute(text: str, env: dict) -> str:
    def one(m):
        key = m.group(1)
        if key not in env:
            raise KeyError(f"unknown variable ${{{key}}}")
        return str(env[key])
    return re.sub(r"\$\{(\w+)\}", one, text)


def _shell(cmd: str) -> None:
    argv = shlex.split(cmd)
    if argv and argv[0] == "python":
        argv[0] = sys.executable
    print("+ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def run_preset(path: Path, overrides: dict, force: bool = False) -> list[dict]:
    spec = yaml.safe_load(Path(path).read_text())
    for key in ("vars", "stages", "rows", "evaluate"):
        if key not in spec:
            raise ValueError(f"{path}: missing '{key}' (this runner handles the stages/rows/evaluate schema)")
    env = {**{k: ("" if v is None else v) for k, v in spec["vars"].items()}, **overrides}
    out = Path(substitute(str(env["out"]), env))
    out.mkdir(parents=True, exist_ok=True)
    for name, cmd in spec["stages"].items():
        marker = out / f".done-{name}"
        if marker.exists() and not force:
            print(f"= stage {name}: done", flush=True)
            continue
        _shell(substitute(cmd, env))
        marker.write_text("ok\n")
    results = []
    metrics = spec["evaluate"].get("metrics", ["image_auroc", "pixel_auroc"])
    for row in spec["rows"]:
        renv = {**env, **row}
        for step, cmd in spec["evaluate"].items():
            if step != "metrics":
                _shell(substitute(cmd, renv))
        m = json.loads((out / "eval" / str(row["id"]) / "metrics.json").read_text())
        res = {"id": row["id"]}
        for k in metrics:
            a, b = METRIC_KEYS[k]
            res[k] = (m.get(a) or {}).get(b)
        results.append(res)
    (out / "results.json").write_text(json.dumps({"preset": str(path), "vars": env, "rows": results}, indent=1))
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
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: stage failed with exit code {exc.returncode}: {' '.join(map(str, exc.cmd))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
