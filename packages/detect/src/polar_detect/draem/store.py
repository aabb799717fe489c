"""DRÆM files on disk: tensors in safetensors, everything else as JSON - never a pickle.

Same pattern as :mod:`polar_detect.patchcore.model`: one ``.safetensors`` file per model or
checkpoint whose header carries the non-tensor state as a JSON document under the
metadata key ``polar_detect`` (one file, so tensors and their description are written
together, atomically, and can never disagree). Reading a file parses the safetensors
header and raw tensor bytes only; nothing is unpickled, so a crafted file can at worst be
refused.

* model file (:data:`MODEL_FILE`): the network's ``state_dict`` under its own key names;
  JSON ``{"format": MODEL_FORMAT, "model_config": ..., "meta": ...}``.
* checkpoint (:data:`CHECKPOINT_FILE`): ``model.<key>`` (weights), ``optimizer.<param
  index>.<name>`` (Adam's per-parameter ``step``, ``exp_avg``, ``exp_avg_sq``); JSON with the
  optimizer's param groups (hyper-parameters), the LR scheduler's counters (its milestones
  are rebuilt from the config and only checked), the AMP grad-scaler state, epoch and loss
  history, plus whatever the caller adds (config and dataset digests).

Files written by older versions with ``torch.save`` (``model.pt``, ``checkpoint.pt``) are
refused with :class:`LegacyFormatError`, which says how to convert them
(``python -m polar_detect.draem convert-legacy``).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
#: Pickled predecessors (``torch.save``) of the files above.
LEGACY = {MODEL_FILE: "model.pt", CHECKPOINT_FILE: "checkpoint.pt"}
MODEL_FORMAT = "polar_detect.draem.model/1"
CHECKPOINT_FORMAT = "polar_detect.draem.checkpoint/1"
META_KEY = "polar_detect"
#: Sanity bounds on a model file's constructor arguments (checked before building the net).
MAX_CHANNELS, MAX_WIDTH = 64, 1024


class ModelFileError(ValueError):
    """A model or checkpoint file is missing, unreadable or not what it claims to be."""


class LegacyFormatError(ModelFileError):
    """Only a pickled file from an older version exists where a safetensors file is expected."""


def convert_hint(directory: str | Path) -> str:
    return (f"Convert it once, if you trust where it came from: python -m polar_detect.draem "
            f"convert-legacy {directory} NEW_DIR --trust-pickle")


def check_not_legacy(path: str | Path) -> None:
    """Raise :class:`LegacyFormatError` when ``path`` is absent but its pickled predecessor
    (``model.pt`` / ``checkpoint.pt``) is there. Nothing is opened."""
    path = Path(path)
    old = path.with_name(LEGACY.get(path.name, ""))
    if not path.exists() and path.name in LEGACY and old.exists():
        raise LegacyFormatError(
            f"{old}: pickled model file from an older version (torch.save); it is not loaded "
            f"because unpickling a file can run arbitrary code. {convert_hint(old.parent.parent)}")


def write(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` + JSON ``meta`` to ``path`` atomically (temporary file + rename).

    ``meta`` must be plain JSON (no NaN/inf: ``ValueError``)."""
    from safetensors.torch import save_file

    from polar_render.io import atomic_path
    path = Path(path)
    text = json.dumps(meta, allow_nan=False)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={META_KEY: text})
    return path


def _open_error(path: Path, exc: Exception) -> ModelFileError:
    return ModelFileError(f"{path}: not a polar_detect DRÆM safetensors file ({exc})")


def read_meta(path: str | Path, fmt: str) -> dict:
    """The JSON metadata of ``path`` (header only; tensors are not read)."""
    from safetensors import safe_open
    path = Path(path)
    check_not_legacy(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
    except Exception as exc:  # noqa: BLE001 - any parse failure is one clear refusal
        raise _open_error(path, exc) from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFileError(f"{path}: format: expected {fmt!r}, got {got!r}")
    return meta


def read(path: str | Path, fmt: str, device: str | torch.device = "cpu"
         ) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of a file written by :func:`write` with ``meta["format"] == fmt``."""
    from safetensors.torch import load_file
    meta = read_meta(path, fmt)
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as exc:  # noqa: BLE001
        raise _open_error(Path(path), exc) from None
    return tensors, meta


def check_finite(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse a file whose floating-point tensors hold NaN or inf (names the first one)."""
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ModelFileError(f"{path}: tensor {k!r} holds non-finite values (NaN/inf)")


def check_model_config(cfg, path: str | Path) -> dict:
    """Validate a file's ``model_config`` before a network is built from it."""
    if not isinstance(cfg, dict) or set(cfg) != {"channels", "recon_width", "disc_width"}:
        raise ModelFileError(f"{path}: model_config: expected keys channels, recon_width, "
                             f"disc_width, got {cfg!r}")
    for k, hi in (("channels", MAX_CHANNELS), ("recon_width", MAX_WIDTH), ("disc_width", MAX_WIDTH)):
        v = cfg[k]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
            raise ModelFileError(f"{path}: model_config.{k}: expected an integer in 1..{hi}, got {v!r}")
    return cfg


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """``module.load_state_dict(state, strict=True)`` with key/shape problems named."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ModelFileError(f"{path}: tensors do not match the network: missing {missing[:3]}"
                             f"{'...' if len(missing) > 3 else ''}, unexpected {extra[:3]}"
                             f"{'...' if len(extra) > 3 else ''}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape) or state[k].dtype != v.dtype:
            raise ModelFileError(f"{path}: tensor {k!r} is {state[k].dtype} {tuple(state[k].shape)}, "
                                 f"the network needs {v.dtype} {tuple(v.shape)}")
    module.load_state_dict(state, strict=True)


# ------------------------------------------------------------------ optimizer / scheduler
def flatten_optimizer(sd: dict, prefix: str = "optimizer.") -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` -> (tensors ``<prefix><param>.<name>``, JSON part)."""
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}{pid}.{name}"] = v
            else:
                scalars.setdefault(str(pid), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict, fresh: dict,
                        path: str | Path, prefix: str = "optimizer.") -> dict:
    """Inverse of :func:`flatten_optimizer`; ``fresh`` is the new optimizer's state_dict
    (its tuples, e.g. Adam's ``betas``, are restored as tuples)."""
    groups = meta.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]):
        raise ModelFileError(f"{path}: optimizer.param_groups: does not match the optimizer")
    out_groups = []
    for saved, new in zip(groups, fresh["param_groups"]):
        if not isinstance(saved, dict) or set(saved) != set(new) or saved["params"] != new["params"]:
            raise ModelFileError(f"{path}: optimizer.param_groups: keys or parameters differ "
                                 f"from this optimizer's")
        out_groups.append({k: tuple(v) if isinstance(new[k], tuple) else v for k, v in saved.items()})
    state: dict = {}
    for key, v in tensors.items():
        if not key.startswith(prefix):
            continue
        pid, _, name = key[len(prefix):].partition(".")
        if not pid.isdigit() or not name:
            raise ModelFileError(f"{path}: unexpected optimizer tensor {key!r}")
        state.setdefault(int(pid), {})[name] = v
    for pid, st in (meta.get("scalars") or {}).items():
        state.setdefault(int(pid), {}).update(st)
    return {"state": state, "param_groups": out_groups}


def flat_keys(d, prefix: str = "") -> dict:
    """Nested mapping -> ``{"a.b.c": value}`` (how a resume refusal names what differs)."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flat_keys(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def scheduler_state(sched) -> dict:
    """JSON form of a MultiStepLR state (milestones as sorted ``[epoch, count]`` pairs)."""
    sd = dict(sched.state_dict())
    sd["milestones"] = sorted([int(k), int(v)] for k, v in sd["milestones"].items())
    return sd


def load_scheduler(sched, saved: dict, path: str | Path) -> None:
    """Restore counters saved by :func:`scheduler_state` into a scheduler rebuilt from the
    same config (its milestones must agree with the saved ones)."""
    fresh = dict(sched.state_dict())
    mine = sorted([int(k), int(v)] for k, v in fresh["milestones"].items())
    if not isinstance(saved, dict) or saved.get("milestones") != mine:
        raise ModelFileError(f"{path}: scheduler.milestones: {saved.get('milestones') if isinstance(saved, dict) else saved!r} "
                             f"do not match the config's {mine}")
    fresh.update({k: v for k, v in saved.items() if k != "milestones"})
    fresh["milestones"] = Counter({k: v for k, v in mine})
    sched.load_state_dict(fresh)

