"""The SfP network's model and checkpoint files: names, format ids and metadata fields.

The mechanics (safetensors tensors + one JSON document under the header key
``polar_detect``, atomic writes, format checks, optimizer flattening, resume refusals) are
:mod:`polar_detect.store`'s; nothing is ever unpickled.

* model file (:data:`MODEL_FILE`): tensors ``model.<key>`` (the network's ``state_dict``);
  JSON ``{"format": MODEL_FORMAT, "net": NetConfig, "inputs", "output", "normalisation",
  "train": {"digest", "config", "data", "history", ...}}``.
* checkpoint (:data:`CKPT_FILE`): ``model.<key>`` + AdamW state ``optim.<param index>.<name>``;
  JSON ``{"format": CKPT_FORMAT, "digest", "epoch", "config", "data", "optimizer":
  {"param_groups", "scalars"}, "history"}``.

The JSON may hold NaN (a diverged loss in ``history``), as it always could.
"""
from __future__ import annotations

from pathlib import Path

import torch

from polar_detect import store as _store
from polar_detect.store import ModelFileError, StaleStateError, stale_error  # noqa: F401 - re-exported

MODEL_FORMAT = "polar_detect.sfp.model/1"
CKPT_FORMAT = "polar_detect.sfp.checkpoint/1"
MODEL_FILE = "model.safetensors"
CKPT_FILE = "checkpoint.safetensors"
#: How refusals of an unreadable file name the detector.
LABEL = "SfP"
#: Name prefix of the optimizer's tensors in a checkpoint.
OPTIMIZER_PREFIX = "optim."


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write an SfP file atomically (``meta`` carries its ``format``)."""
    return _store.write(path, tensors, meta, allow_nan=True)


def read(path: str | Path, fmt: str) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of an SfP file of format ``fmt``."""
    return _store.read(path, fmt, LABEL)


def read_meta(path: str | Path, fmt: str) -> dict:
    """The JSON header of an SfP file of format ``fmt`` (tensors are not read)."""
    return _store.read_meta(path, fmt, LABEL)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, JSON part)`` of the optimizer's state for a checkpoint."""
    return _store.flatten_optimizer(opt.state_dict(), OPTIMIZER_PREFIX)


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                      path: str | Path) -> None:
    """Load a checkpoint's optimizer state into ``opt`` (built with the same parameters)."""
    opt.load_state_dict(_store.unflatten_optimizer(tensors, meta.get("optimizer") or {}, opt.state_dict(),
                                                   path, OPTIMIZER_PREFIX))
