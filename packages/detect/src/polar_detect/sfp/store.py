"""Model and checkpoint files of the SfP network: safetensors + JSON, never pickle.

A file is one ``.safetensors`` holding the tensors and, in its string metadata under the
key ``polar_detect``, one JSON document (format, configuration, digests, history). Loading
uses ``safetensors.safe_open`` (no code execution, unlike ``torch.load`` of a pickle), and
every write goes through ``polar_render.io.atomic_path``: a file is either the old one or
the complete new one, never half written.

Optimizer state (Adam) is flattened to tensors ``optim.<param index>.<key>`` plus its
``param_groups`` in the JSON, so a checkpoint restores training exactly.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

META_KEY = "polar_detect"


class StoreError(ValueError):
    """A model/checkpoint file that is missing, unreadable or of another kind (names the file)."""


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``tensors`` + ``meta`` (JSON-serialisable) to ``path`` atomically."""
    from safetensors.torch import save_file
    from polar_render.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return path


def load(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a file written by :func:`save` whose ``meta["format"]`` is ``kind``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise StoreError(f"{path}: not a polar_detect safetensors file ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != kind:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise StoreError(f"{path}: expected a {kind} file, found format {found!r}")
    return tensors, meta


def read_meta(path: str | Path) -> dict | None:
    """The JSON metadata of a safetensors file, or None when it is unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})[META_KEY])
    except Exception:  # noqa: BLE001
        return None


def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` -> (tensors, JSON part)."""
    tensors, scalars = {}, {}
    for idx, st in state["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], part: dict) -> dict:
    """Inverse of :func:`optimizer_to_tensors` -> a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    for name, val in part.get("scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in part["param_groups"]]
    return {"state": state, "param_groups": groups}
