"""The public API of polar_detect: train, predict and evaluate in Python, as the CLIs do.

Each function runs exactly what the matching command line runs: the options go through
that command's own argument parser (same defaults, types, choices and checks) and then to
the same command function (``COMMANDS`` / ``cmd_*`` of ``polar_detect.models.<name>.__main__``,
``polar_detect.evaluation.evaluate.evaluate``), so a result equals the CLI's for the same
arguments. Option names are the CLI flags in Python spelling (``--batch-size`` ->
``batch_size=``); ``True`` sets a flag, ``None``/``False`` leave an option at its default,
a list repeats an ``append`` option (e.g. the ensemble's ``source=[...]``).

Errors raise instead of exiting: ``ValueError`` for an unknown model or option, a bad option
value (message: ``"<model> <command>: ..."``), bad data or model files (the CLIs' exit-2
errors, e.g. :class:`polar_detect.store.ModelFileError`); ``OSError`` for unreadable or
unwritable files.

Models: ``draem``, ``patchcore``, ``simplenet``, ``ensemble`` (feature-level) and ``sfp``
(shape from polarization: ``predict`` writes a copy of the dataset with a ``normals``
modality; it has no anomaly evaluation). ``predict`` finds the kind of model from its files.
"""
from __future__ import annotations

import argparse
import inspect
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace

__all__ = ["MODELS", "train", "predict", "evaluate", "model_kind"]

#: Detector name -> its command-line module.
MODELS = {"draem": "polar_detect.models.draem.__main__",
          "patchcore": "polar_detect.models.patchcore.__main__",
          "simplenet": "polar_detect.models.simplenet.__main__",
          "ensemble": "polar_detect.models.ensemble.__main__",
          "sfp": "polar_detect.models.sfp.__main__"}
#: Model file format id -> detector name (how :func:`model_kind` recognises a file).
FORMATS = {"polar_detect.patchcore/1": "patchcore", "polar_detect.sfp.model/1": "sfp"}


def _module(model: str):
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    return import_module(MODELS[model])


def _command(model: str, command: str):
    """``(subcommand parser, function)`` of ``python -m polar_detect.models.<model> <command>``."""
    mod = _module(model)
    table = getattr(mod, "COMMANDS", None) or {"train": mod.cmd_train, "predict": mod.cmd_predict}
    subs = [a for a in mod.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    if command not in table or not subs or command not in subs[0].choices:
        raise ValueError(f"model {model!r} has no {command!r} command")
    return subs[0].choices[command], table[command]


def _argv(parser: argparse.ArgumentParser, where: str, options: dict) -> list[str]:
    """Command-line arguments for ``options`` (Python names), each checked to exist."""
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    argv = []
    for name, value in options.items():
        if name not in actions:
            raise ValueError(f"{where}: unknown option {name!r}; options: {', '.join(sorted(actions))}")
        action, flag = actions[name], actions[name].option_strings[-1]
        if isinstance(action, argparse.BooleanOptionalAction) and isinstance(value, bool):
            argv.append(action.option_strings[0] if value else f"--no-{action.option_strings[0][2:]}")
        elif value is None or value is False:
            continue
        elif value is True or action.nargs == 0:
            argv.append(flag)
        elif isinstance(action, argparse._AppendAction) and isinstance(value, (list, tuple)):
            argv += [x for v in value for x in (flag, str(v))]
        else:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return argv


def _run(model: str, command: str, options: dict):
    """Parse ``options`` with the command's own parser and run its function."""
    parser, fn = _command(model, command)
    where = f"{model} {command}"

    def refuse(message):
        raise ValueError(f"{where}: {message}")
    parser.error = refuse                     # an argparse error raises instead of exiting
    args = parser.parse_args(_argv(parser, where, options))
    args.cmd = command
    rc = fn(args)
    if rc not in (None, 0):
        raise RuntimeError(f"{where}: the command ended with status {rc}")
    return args


def train(model: str, data: str | Path, out: str | Path, **options) -> Path:
    """Train ``model`` (a name in :data:`MODELS`) on the dataset ``data`` into ``out`` (a model
    directory; for PatchCore a ``.safetensors`` file); returns ``out``. ``options`` are the
    ``train`` command's flags, e.g. ``train("draem", "data", "runs/draem", inputs="R+phi",
    preset="small", epochs=1)``."""
    _run(model, "train", {"data": str(data), "out": str(out), **options})
    return Path(out)


def model_kind(model_dir: str | Path) -> str:
    """The detector that wrote ``model_dir`` (a directory or model file), from its files'
    headers: ``draem`` (``draem.json``), ``patchcore``, ``simplenet``, ``ensemble`` or ``sfp``."""
    from polar_detect.store import ModelFileError, read_header
    p = Path(model_dir)
    if (p / "draem.json").is_file():
        return "draem"
    f = p / "model.safetensors" if p.is_dir() else p
    meta = read_header(f, "model")
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt == "polar_detect.simplenet.model/1":
        kind = (meta.get("detector") or {}).get("kind")
        return kind if kind in ("simplenet", "ensemble") else "simplenet"
    if fmt not in FORMATS:
        raise ModelFileError(f"{f}: format {fmt!r}, expected a model of {', '.join(MODELS)}")
    return FORMATS[fmt]


def predict(model_dir: str | Path, data: str | Path, out: str | Path | None = None, **options) -> Path:
    """Run the model in ``model_dir`` (any kind, see :func:`model_kind`) on ``data``; writes
    ``predictions.json`` + ``maps/`` into ``out`` (default: ``<model_dir>/pred``, or
    ``<file stem>_pred`` next to a model file) and returns it. For ``sfp`` ``out`` is a new
    dataset (a copy of ``data`` with the predicted normals)."""
    p = Path(model_dir)
    out = Path(out) if out is not None else (p / "pred" if p.is_dir() else p.with_name(f"{p.stem}_pred"))
    _run(model_kind(p), "predict", {"model": str(p), "data": str(data), "out": str(out), **options})
    return out


def evaluate(pred: str | Path, data: str | Path, out: str | Path, val_pred: str | Path | None = None,
             **options) -> dict:
    """Metrics of the predictions directory ``pred`` against the dataset ``data`` (any model's
    predictions: they share one contract); writes ``metrics.json`` (+ ``report.html`` unless
    ``report=False``) into ``out`` and returns the metrics. ``val_pred``: predictions on the
    val split (they set the threshold). ``options``: ``fpr_limit``, ``threshold``,
    ``n_bootstrap``, ... (the keyword arguments of
    :func:`polar_detect.evaluation.evaluate.evaluate`; the CLI's defaults)."""
    from polar_detect.evaluation import evaluate as ev
    params = inspect.signature(ev.evaluate).parameters
    allowed = [n for n, q in params.items() if q.kind is q.KEYWORD_ONLY]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(f"evaluate: unknown option {bad[0]!r}; options: {', '.join(allowed)}")
    values = {n: options.get(n, params[n].default) for n in allowed}
    problem = ev.option_error(SimpleNamespace(**values, bootstrap=values.get("n_bootstrap", 0)))
    if problem:
        raise ValueError(f"evaluate: {problem}")
    return ev.evaluate(Path(pred), Path(data), Path(out), None if val_pred is None else Path(val_pred),
                       **options)
