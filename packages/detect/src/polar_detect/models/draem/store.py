"""DRÆM's model and checkpoint files: their names, format ids and metadata fields.

The file mechanics (safetensors tensors + a JSON header, atomic writes, format checks,
optimizer flattening, resume refusals) are :mod:`polar_detect.store`'s; this module holds
what is DRÆM's own:

* model file (:data:`MODEL_FILE`): the network's ``state_dict`` under its own key names;
  JSON ``{"format": MODEL_FORMAT, "model_config": ..., "meta": ...}``.
* checkpoint (:data:`CHECKPOINT_FILE`): ``model.<key>`` (weights), ``optimizer.<param
  index>.<name>`` (Adam's per-parameter ``step``, ``exp_avg``, ``exp_avg_sq``); JSON with the
  optimizer's param groups (hyper-parameters), the LR scheduler's counters (its milestones
  are rebuilt from the config and only checked), the AMP grad-scaler state, epoch and loss
  history, plus whatever the caller adds (config and dataset digests).

Files written by older versions with ``torch.save`` (``model.pt``, ``checkpoint.pt``) are
refused with :class:`LegacyFormatError`, which says how to convert them
(``python -m polar_detect.models.draem convert-legacy``).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from polar_detect import store as _store
from polar_detect.store import (ModelFileError, check_finite, flat_keys, flatten_optimizer, load_state,
                                unflatten_optimizer, write)

__all__ = ["MODEL_FILE", "CHECKPOINT_FILE", "MODEL_FORMAT", "CHECKPOINT_FORMAT", "LABEL", "ModelFileError",
           "LegacyFormatError", "check_not_legacy", "read", "read_meta", "write", "check_finite",
           "check_model_config", "load_state", "flatten_optimizer", "unflatten_optimizer", "flat_keys",
           "scheduler_state", "load_scheduler"]

MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
#: Pickled predecessors (``torch.save``) of the files above.
LEGACY = {MODEL_FILE: "model.pt", CHECKPOINT_FILE: "checkpoint.pt"}
MODEL_FORMAT = "polar_detect.draem.model/1"
CHECKPOINT_FORMAT = "polar_detect.draem.checkpoint/1"
#: How refusals of an unreadable file name the detector.
LABEL = "DRÆM"
#: Sanity bounds on a model file's constructor arguments (checked before building the net).
MAX_CHANNELS, MAX_WIDTH = 64, 1024


class LegacyFormatError(ModelFileError):
    """Only a pickled file from an older version exists where a safetensors file is expected."""


def convert_hint(directory: str | Path) -> str:
    return (f"Convert it once, if you trust where it came from: python -m polar_detect.models.draem "
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


def read_meta(path: str | Path, fmt: str) -> dict:
    """The JSON metadata of a DRÆM file (header only), after the legacy check."""
    check_not_legacy(path)
    return _store.read_meta(path, fmt, LABEL)


def read(path: str | Path, fmt: str, device: str | torch.device = "cpu"
         ) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of a DRÆM file with ``meta["format"] == fmt``."""
    check_not_legacy(path)
    return _store.read(path, fmt, LABEL, device)


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


# ------------------------------------------------------------------ scheduler
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

