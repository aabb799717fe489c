"""Saving and loading PatchCore models: one ``.safetensors`` file, no pickle.

Layout (format id ``polar_detect.patchcore/1``, unchanged since issue 6): tensor ``memory``
(n, D) float32 + JSON metadata under the key ``polar_detect`` holding the extractor config
(``features``), ``method`` (sequential | original), ``k``, ``blur_sigma``, ``blur_kernel``,
``batch_size``, the calibrated ``threshold``, ``memory_size``, the input ``encoding`` (with
its train-split statistics; null for models saved before issue 13), ``history``, ``info``
and the method's own fields (``coreset_size``, ``chunk_size`` | ``ratio``). Files are written
and read by ``polar_detect.store`` (atomic, no pickle; refusals are ``ModelFileError``, a
ValueError naming the file); this module holds only PatchCore's schema. Backbone weights are
not stored: they are resolved again from the config on load (``polar_detect.backbones``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from polar_detect import store
from polar_detect.backbones import FeatureExtractor
from polar_detect.models.patchcore.trainer import PatchCore, PatchCoreDetector, SequentialPatchCore

FORMAT = "polar_detect.patchcore/1"
LABEL = "PatchCore"
METHODS = {"sequential": SequentialPatchCore, "original": PatchCore}


def model_config(model: PatchCoreDetector) -> dict:
    """The JSON metadata saved with ``model`` (module docstring)."""
    return {"format": FORMAT, "method": model.method, "features": model.feature_cfg.to_dict(),
            "k": model.k, "blur_sigma": model.blur_sigma, "blur_kernel": model.blur_kernel,
            "batch_size": model.batch_size, "threshold": model.threshold,
            "memory_size": 0 if model.memory is None else len(model.memory),
            "encoding": None if model.encoding is None else model.encoding.to_dict(),
            "history": model.history, "info": model.info, **model.extra_config()}


def save_model(model: PatchCoreDetector, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (atomically, parent directories created); returns the path."""
    if model.memory is None:
        raise RuntimeError("nothing to save: model is not trained")
    return store.write(path, {"memory": model.memory}, model_config(model), allow_nan=True)


def read_model_file(path: str | Path) -> tuple[dict, torch.Tensor]:
    """(config dict, memory tensor) of a saved model; ``polar_detect.store.ModelFileError``
    (a ValueError naming ``path``) for a missing, unreadable or other file."""
    tensors, cfg = store.read(path, FORMAT, LABEL)
    if "memory" not in tensors:
        raise store.ModelFileError(f"{path}: no tensor 'memory' in this PatchCore model file")
    return cfg, tensors["memory"]


def load_model(path: str | Path, device: str = "cpu", download: bool = True,
               extractor: FeatureExtractor | None = None) -> PatchCoreDetector:
    """Load a saved SequentialPatchCore / PatchCore; ``extractor``: reuse a loaded one
    (same config) instead of building the backbone again."""
    cfg, mem = read_model_file(path)
    cls = METHODS[cfg["method"]]
    kw = dict(k=cfg["k"], blur_sigma=cfg["blur_sigma"], blur_kernel=cfg["blur_kernel"],
              batch_size=cfg.get("batch_size", 8), device=device, download=download,
              extractor=extractor, encoding=cfg.get("encoding"))
    if cls is SequentialPatchCore:
        kw.update(coreset_size=cfg["coreset_size"], chunk_size=cfg.get("chunk_size", 4096))
    else:
        kw.update(ratio=cfg["ratio"])
    model = cls(cfg["features"], **kw)
    model.memory = mem.to(model.device)
    model.threshold = cfg.get("threshold")
    model.history = cfg.get("history", [])
    model.info = cfg.get("info", {})
    return model
