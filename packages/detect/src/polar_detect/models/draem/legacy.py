"""One-off conversion of DRÆM model directories written by older versions (``torch.save``
pickles: ``<input>/model.pt``) into the current safetensors format (:mod:`.store`).

This is the only place in ``polar_detect`` that reads a pickled model file, and only when
the caller says it trusts the files (``trust_pickle=True``; CLI ``--trust-pickle``). It uses
``torch.load`` with ``weights_only=True``, torch's restricted unpickler - which still
parses the pickle and has had bypasses; a file from an untrusted source should be
retrained, not converted.

Converted models carry no run or dataset digest (old files did not record them), so
``draem train`` will not treat them as up to date for any run; predicting works as before.
Training checkpoints (``checkpoint.pt``) are not converted: a finished ``model.pt`` is
what predictions need, and an unfinished run must be retrained.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from polar_detect.models.draem import store
from polar_detect.models.draem.model import DRAEM
from polar_detect.models.draem.polar import CONFIG, input_dir, read_config
from polar_detect.models.draem.train import save_model


class LegacyConversionError(ValueError):
    """The old directory cannot be converted (missing files, unexpected content)."""


def _plan(old: Path, cfg: dict) -> dict[str, Path]:
    """``{input: old model.pt}`` for every input, checked before anything is written."""
    files = {}
    for name in cfg["inputs"]:
        sub = input_dir(old, cfg, name)
        src = sub / store.LEGACY[store.MODEL_FILE]
        if not src.is_file():
            what = (" (only checkpoint.pt: training never finished; retrain instead)"
                    if (sub / store.LEGACY[store.CHECKPOINT_FILE]).is_file() else "")
            raise LegacyConversionError(f"{src}: missing{what}")
        files[name] = src
    return files


def _reason(exc: Exception) -> str:
    """The informative line of a torch.load error (e.g. 'Unsupported global: GLOBAL
    builtins.open ...'), without terminal colour codes."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln]
    line = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else "")
    return line.split(" Please use")[0]


def _load_one(src: Path) -> tuple[DRAEM, dict]:
    """Read one legacy ``model.pt`` (restricted unpickler) and rebuild the network."""
    try:
        ck = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is a refusal naming the file
        raise LegacyConversionError(f"{src}: refused by torch's restricted loader, not converted "
                                    f"({type(exc).__name__}: {_reason(exc)})") from None
    if not isinstance(ck, dict) or not {"model_config", "state_dict"} <= set(ck):
        raise LegacyConversionError(f"{src}: expected a dict with model_config and state_dict "
                                    f"(a DRÆM model.pt), got {type(ck).__name__}")
    cfg = store.check_model_config(ck["model_config"], src)
    state = ck["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise LegacyConversionError(f"{src}: state_dict is not a mapping of tensors")
    store.check_finite(state, src)
    model = DRAEM(**cfg)
    store.load_state(model, dict(state), src)
    meta = ck.get("meta") if isinstance(ck.get("meta"), dict) else {}
    return model.eval(), meta


def convert_legacy(old_dir: str | Path, new_dir: str | Path, *, trust_pickle: bool = False,
                   log=print) -> Path:
    """Convert ``old_dir`` (draem.json + ``<input>/model.pt``) into ``new_dir`` (which must
    not exist); returns ``new_dir``. Refuses unless ``trust_pickle``."""
    from polar_render.io import atomic_dir, write_json

    old, new = Path(old_dir), Path(new_dir)
    if not trust_pickle:
        raise LegacyConversionError(
            f"{old}: converting reads pickled files, which can run code hidden in them; pass "
            f"--trust-pickle only for files you made yourself or fully trust")
    if new.exists():
        raise LegacyConversionError(f"{new}: already exists; choose a new directory")
    cfg = read_config(old)
    files = _plan(old, cfg)
    loaded = {name: _load_one(src) for name, src in files.items()}
    with atomic_dir(new) as tmp:
        for name, (model, meta) in loaded.items():
            save_model(model, tmp / name / store.MODEL_FILE,
                       {**meta, "converted_from": str(files[name].resolve())},
                       {"run": None, "config_digest": None, "dataset_digest": None})
            log(f"draem: {files[name]} -> {new / name / store.MODEL_FILE}")
        write_json(tmp / CONFIG, {**cfg, "models": {k: {"config_digest": None, "dataset_digest": None}
                                                    for k in cfg["inputs"]},
                                  "converted_from": str(old.resolve())})
    return new
