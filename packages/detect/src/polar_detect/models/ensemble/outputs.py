"""Output-level helpers: merge predictions directories, and time a command.

* :func:`merge_predictions` -- several predictions directories of one model on one dataset
  (e.g. ``draem predict --split test`` and ``--split val``) -> one directory, as
  ``patchcore predict --split test,val`` writes it (``split`` = the first directory's). The
  output-level ensemble (``polar_detect.evaluation.average``) needs each model's val normals beside its
  test predictions. Inputs are read with ``predictions.read_predictions`` / ``map_path`` /
  ``read_map`` (the contract's one reader); mixed datasets, a sample predicted twice, or a
  missing map are refused before anything is written; the output is built atomically.
* :func:`timed` -- run one or more commands and record their wall-clock seconds (and, for
  predict commands, the images predicted and images per second) in a JSON log, for the
  results table's training-time and throughput columns.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path


class OutputsError(ValueError):
    """Bad input to merge / timed; the message names the directory or file."""


def merge_predictions(pred_dirs, out, name: str | None = None) -> dict:
    from polar_render.io import atomic_dir

    from polar_detect.dataset.errors import InputError
    from polar_detect.predictions import PredictionsWriter, map_path, read_predictions
    dirs = [Path(d) for d in pred_dirs]
    if len(dirs) < 2:
        raise OutputsError("merge needs at least two --pred directories")
    out = Path(out)
    if out.resolve() in {d.resolve() for d in dirs}:
        raise OutputsError(f"--out {out}: is one of the --pred directories")
    preds, files = [], {}
    for d in dirs:
        try:
            p, path = read_predictions(d)
            for sid, rel in p["maps"].items():
                if rel is None:
                    raise OutputsError(f"{path}: maps.{sid} is null; merge needs every map")
                if sid in files:
                    raise OutputsError(f"{path}: sample {sid} is also predicted in {files[sid][0]}")
                f = map_path(d, path, sid, rel)
                if not f.is_file():
                    raise OutputsError(f"{f}: map of sample {sid} not found ({path})")
                files[sid] = (d, f)
        except InputError as e:
            raise OutputsError(str(e)) from None
        preds.append(p)
    first = preds[0]
    for p, d in zip(preds[1:], dirs[1:]):
        a, b = first.get("manifest_sha256"), p.get("manifest_sha256")
        if (a and b and a != b) or (not (a and b) and p.get("dataset") != first.get("dataset")):
            raise OutputsError(f"{d}: predicts another dataset than {dirs[0]} ({p.get('dataset')} vs "
                               f"{first.get('dataset')})")
    scores = {sid: float(p["scores"][sid]) for p in preds for sid in p["scores"]}
    with atomic_dir(out) as tmp:
        w = PredictionsWriter(tmp)
        for sid, (_, f) in files.items():
            w.copy(sid, scores[sid], f)
        for sid in scores.keys() - files.keys():
            w.add(sid, scores[sid])
        fields = {k: v for k, v in first.items() if k not in ("scores", "maps", "timing")}
        fields.update(model=name or first.get("model"), threshold=first.get("threshold"),
                      merged_from=[{"pred": str(d), "split": p.get("split"), "n": len(p["scores"])}
                                   for d, p in zip(dirs, preds)])
        return w.finish(**fields)


def _count_predictions(pred: Path) -> int | None:
    try:
        return len(json.loads((pred / "predictions.json").read_text())["scores"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def split_commands(argv: list[str]) -> list[list[str]]:
    """``cmd1 ... -- cmd2 ...`` -> [[cmd1, ...], [cmd2, ...]] (empty pieces dropped)."""
    out, cur = [], []
    for tok in argv:
        if tok == "--":
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(tok)
    if cur:
        out.append(cur)
    return out


def timed(commands: list[list[str]], log, name: str, pred=None) -> int:
    """Run ``commands`` in order (a leading ``python`` is this interpreter), stopping at the
    first failure (its exit status is returned); when all succeed record ``{name: {seconds,
    command, images?, images_per_s?}}`` in the JSON file ``log`` (seconds: all commands
    together; images: the predictions in ``pred`` afterwards)."""
    from polar_render.io import write_json
    if not commands:
        raise OutputsError("timed: no command given (put it after --)")
    if not name or any(c in name for c in "/\\\0"):
        raise OutputsError(f"--name {name!r}: expected a plain key")
    log = Path(log)
    entries = {}
    if log.exists():
        try:
            entries = json.loads(log.read_text())
            if not isinstance(entries, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as e:
            raise OutputsError(f"{log}: not a timing log ({e}); remove it or choose another --log") from None
    t0 = time.perf_counter()
    for command in commands:
        argv = [sys.executable, *command[1:]] if command[0] == "python" else list(command)
        rc = subprocess.call(argv)
        if rc != 0:
            return rc
    seconds = time.perf_counter() - t0
    rec = {"seconds": round(seconds, 3), "command": " -- ".join(shlex.join(c) for c in commands)}
    if pred is not None:
        n = _count_predictions(Path(pred))
        if n:
            rec.update(images=n, images_per_s=round(n / seconds, 3))
    entries[name] = rec
    log.parent.mkdir(parents=True, exist_ok=True)
    write_json(log, entries)
    return 0
