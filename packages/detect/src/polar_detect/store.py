"""Model and checkpoint files of every detector: safetensors tensors + JSON, never a pickle.

One ``.safetensors`` file per model or checkpoint. Its tensors are the model's (and, in a
checkpoint, the optimizer's) state; its header carries every non-tensor value as one JSON
document under the metadata key :data:`META_KEY` (``"polar_detect"``), whose ``"format"``
names the kind of file (e.g. ``"polar_detect.draem.model/1"``). Tensors and their description
are written together, atomically (``polar_render.io.atomic_path``: a file is either the old
one or the complete new one), so they never disagree. Reading parses the safetensors header
and raw tensor bytes only; nothing is unpickled, so a crafted file can at worst be refused.

Conventions:

* Refusals are :class:`ModelFileError` (a ``ValueError``; the CLIs exit 2) whose message
  starts with the file: ``"<file>: missing (no such file)"``, ``"<file>: not a polar_detect
  <label> safetensors file (...)"``, ``"<file>: format <found>, expected <wanted>"``.
* Optimizer state (Adam) is flattened to tensors ``<prefix><param index>.<name>`` plus a JSON
  part ``{"param_groups": [...], "scalars": {...}}``, so a checkpoint restores training exactly.
* A training directory is reused only when the run it records (config digest + dataset
  digest) is the requested one; otherwise :func:`inspect_run` refuses with
  :class:`StaleStateError` naming what differs (nested config keys flattened by
  :func:`flat_keys` to ``a.b.c``).

Each detector keeps only its schema (file names, format ids, metadata fields) in its own
``models/<name>/store.py``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import torch

META_KEY = "polar_detect"
#: At most this many differing config keys are named in a refusal.
MAX_NAMED_DIFFERENCES = 6


class ModelFileError(ValueError):
    """A model or checkpoint file is missing, unreadable or not what it claims to be."""


class StaleStateError(ValueError):
    """The output directory holds a model or checkpoint of another run (config or data)."""


# ------------------------------------------------------------------ files
def write(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict, *,
          allow_nan: bool = False) -> Path:
    """Write ``tensors`` + JSON ``meta`` to ``path`` atomically (parents created).

    ``meta`` must be plain JSON; NaN/inf raise ``ValueError`` unless ``allow_nan``."""
    from safetensors.torch import save_file

    from polar_render.io import atomic_path
    path = Path(path)
    text = json.dumps(meta, allow_nan=allow_nan)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={META_KEY: text})
    return path


def _unreadable(path: Path, label: str, exc: Exception) -> ModelFileError:
    return ModelFileError(f"{path}: not a polar_detect {label} safetensors file ({type(exc).__name__}: "
                          f"{exc}); it was not loaded (nothing is ever unpickled)")


def check_format(meta, fmt: str, path: str | Path) -> dict:
    """``meta`` when it is a JSON object whose ``format`` is ``fmt``; else a refusal."""
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFileError(f"{path}: format {got!r}, expected {fmt!r}")
    return meta


def read_header(path: str | Path, label: str):
    """The JSON document in the header of ``path`` (any format; tensors are not read).
    ``label`` names the detector in the refusal of an unreadable file."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: missing (no such file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})[META_KEY])
    except Exception as exc:  # noqa: BLE001 - any parse failure is one clear refusal
        raise _unreadable(path, label, exc) from None


def read_meta(path: str | Path, fmt: str, label: str) -> dict:
    """The JSON metadata of ``path`` (header only), whose format must be ``fmt``."""
    return check_format(read_header(path, label), fmt, path)


def read(path: str | Path, fmt: str, label: str, device: str | torch.device = "cpu"
         ) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of a file written by :func:`write` with ``meta["format"] == fmt``."""
    from safetensors.torch import load_file
    meta = read_meta(path, fmt, label)
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(Path(path), label, exc) from None
    return tensors, meta


# ------------------------------------------------------------------ tensor checks
def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse a file whose floating-point tensors hold NaN or inf (names the first one)."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ModelFileError(f"{path}: tensor {k!r} holds non-finite values (NaN/inf)")


def _some(keys: list[str]) -> str:
    return f"{keys[:3]}{'...' if len(keys) > 3 else ''}"


def check_state(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: str | Path,
                what: str = "network") -> None:
    """Refuse ``state`` unless it has exactly the keys, shapes and dtypes of ``own`` (the
    module's ``state_dict``); the message names the ``what`` that needs them."""
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ModelFileError(f"{path}: tensors do not match the {what}: missing {_some(missing)}, "
                             f"unexpected {_some(extra)}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape) or state[k].dtype != v.dtype:
            raise ModelFileError(f"{path}: tensor {k!r} is {state[k].dtype} {tuple(state[k].shape)}, "
                                 f"the {what} needs {v.dtype} {tuple(v.shape)}")


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``module.load_state_dict(state, strict=True)`` with key/shape problems named."""
    check_state(module.state_dict(), state, path)
    module.load_state_dict(state, strict=True)


def prefixed(tensors: dict[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefix``, without it (a checkpoint's model part)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ------------------------------------------------------------------ optimizer state
def flatten_optimizer(sd: dict, prefix: str = "optimizer.") -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` -> (tensors ``<prefix><param>.<name>``, JSON part)."""
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}{pid}.{name}"] = v
            else:
                scalars.setdefault(str(pid), {})[name] = v
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _param_groups(groups, fresh: list[dict], path) -> list[dict]:
    if not isinstance(groups, list) or len(groups) != len(fresh):
        raise ModelFileError(f"{path}: optimizer.param_groups: does not match the optimizer")
    out = []
    for saved, new in zip(groups, fresh):
        if not isinstance(saved, dict) or set(saved) != set(new) or saved["params"] != new["params"]:
            raise ModelFileError(f"{path}: optimizer.param_groups: keys or parameters differ "
                                 f"from this optimizer's")
        out.append({k: tuple(v) if isinstance(new[k], tuple) else v for k, v in saved.items()})
    return out


def _scalars(saved, path) -> Iterable[tuple[int, str, object]]:
    """``(param, name, value)`` of the JSON scalars: ``{"0": {"step": 3}}`` (or the flat
    ``{"0.step": 3}`` of files written before the stores were merged)."""
    for key, v in (saved or {}).items():
        pid, _, name = str(key).partition(".")
        if not pid.isdigit():
            raise ModelFileError(f"{path}: unexpected optimizer scalar {key!r}")
        if name:
            yield int(pid), name, v
        else:
            yield from ((int(pid), n, x) for n, x in (v if isinstance(v, dict) else {}).items())


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict, fresh: dict,
                        path: str | Path, prefix: str = "optimizer.") -> dict:
    """Inverse of :func:`flatten_optimizer`; ``fresh`` is the new optimizer's state_dict
    (its tuples, e.g. Adam's ``betas``, are restored as tuples)."""
    groups = _param_groups(meta.get("param_groups"), fresh["param_groups"], path)
    state: dict = {}
    for key, v in tensors.items():
        if not key.startswith(prefix):
            continue
        pid, _, name = key[len(prefix):].partition(".")
        if not pid.isdigit() or not name:
            raise ModelFileError(f"{path}: unexpected optimizer tensor {key!r}")
        state.setdefault(int(pid), {})[name] = v
    for pid, name, v in _scalars(meta.get("scalars"), path):
        state.setdefault(pid, {})[name] = v
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------ run identity / resume
def flat_keys(d, prefix: str = "") -> dict:
    """Nested mapping -> ``{"a.b.c": value}`` (how a resume refusal names what differs)."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    """``"key old -> new"`` for each flattened key that differs (at most
    :data:`MAX_NAMED_DIFFERENCES`, then a count of the rest)."""
    a, b = flat_keys(old), flat_keys(new)
    diffs = [f"{k} {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if len(diffs) > MAX_NAMED_DIFFERENCES:
        diffs = diffs[:MAX_NAMED_DIFFERENCES] + [f"{len(diffs) - MAX_NAMED_DIFFERENCES} more"]
    return diffs


def run_differences(meta: dict, record: dict, config_digest: str, data_digest: str,
                    unrecorded: str = "") -> list[str]:
    """What differs between the run a file header records (``run``, ``config_digest``,
    ``dataset_digest``) and the requested one; ``unrecorded`` explains a missing record."""
    diffs = []
    if meta.get("config_digest") != config_digest:
        if not isinstance(meta.get("run"), dict):
            diffs.append(f"config: not recorded{unrecorded}")
        else:
            diffs += config_differences(meta["run"], record) or ["config"]
    old = meta.get("dataset_digest")
    if old != data_digest:
        diffs.append(f"dataset: not recorded{unrecorded}" if old is None else
                     f"dataset content {str(old)[:12]} -> {data_digest[:12]}")
    return diffs


def stale_error(stale: list[tuple[Path, list[str]]], restart: str = "--restart") -> StaleStateError:
    """The refusal for files of other runs: ``[(file, differences), ...]``, first named."""
    (p, diffs), also = stale[0], "".join(f" (and {Path(q).name})" for q, _ in stale[1:])
    return StaleStateError(f"{p}{also}: made by a different training run ({'; '.join(diffs)}); not "
                           f"resuming or reusing it. Pass {restart} to train from scratch (it replaces "
                           f"it), or choose another --out")


def inspect_run(files: Iterable[tuple[Path, str, str]], read_header: Callable[[Path, str], dict],
                differences: Callable[[dict], list[str]], restart: str = "--restart"
                ) -> tuple[str, dict | None]:
    """What a training directory holds for the requested run. ``files``: ``(path, format,
    action)`` in order of preference (e.g. model -> ``"done"``, checkpoint -> ``"resume"``);
    the first existing one whose header (``read_header(path, format)``) has no
    ``differences`` gives ``(action, header)``; none existing gives ``("fresh", None)``;
    only files of other runs raise :class:`StaleStateError` (``restart`` names the flag)."""
    stale = []
    for p, fmt, action in files:
        if Path(p).exists():
            meta = read_header(Path(p), fmt)
            diffs = differences(meta)
            if not diffs:
                return action, meta
            stale.append((Path(p), diffs))
    if not stale:
        return "fresh", None
    raise stale_error(stale, restart)
