"""Polarimetric DRÆM (Polar-Ano eq. 4): one DRÆM per input X_i, predictions averaged.

``inputs`` is a list of modality names; Polar-Ano's symbols are accepted as aliases
(:data:`ALIASES`): ``R`` -> intensity, ``phi`` -> aolp, ``rho`` -> dolp, and ``n`` ->
normals_learned, as in Polar-Ano, where n is the normal a shape-from-polarization network
predicts from the polarization images (``python -m polar_detect.models.sfp predict`` adds that
modality to a dataset). The renders' ground-truth normals, which no camera measures, are
the oracle ``n_oracle`` (or ``normals``). So ``"R+phi+rho+n"`` means
``"intensity,aolp,dolp,normals_learned"``.

Layout of a trained model directory::

    <dir>/draem.json                  {"model": "draem", "inputs": [...], "size": [H, W],
                                       "models": {input: {config_digest, dataset_digest}}, ...}
    <dir>/<input>/model.safetensors   one DRÆM per input (+ checkpoint.safetensors while
                                      training, train_config.json); see :mod:`.store`

``draem.json`` is data: it is validated (:func:`read_config`) and input names must stay
inside the directory. Loading checks that every per-input model is the one ``draem.json``
records (same run and dataset digests), so a directory left half-retrained is refused.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from polar_detect import modalities as _modalities
from polar_detect.models.draem import store
from polar_detect.models.draem.infer import predict
from polar_detect.models.draem.model import DRAEM, SIZE_MULTIPLE
from polar_detect.models.draem.train import (FINAL, TrainConfig, check_trainable, dataset_digest, digest, inspect_run,
                    read_model, run_record, train)

ALIASES = {"r": "intensity", "i": "intensity", "i_un": "intensity", "intensity": "intensity",
           "phi": "aolp", "aolp": "aolp", "rho": "dolp", "dolp": "dolp",
           "n": "normals_learned", "n_learned": "normals_learned", "normals_learned": "normals_learned",
           "n_oracle": "normals", "normals": "normals"}
CONFIG = "draem.json"
#: Input (modality) names: also sub-directory names of a model directory.
NAME = re.compile(r"[A-Za-z0-9_]+")
#: Largest network side accepted from a draem.json.
MAX_SIDE = 8192
#: Signed modalities (AoLP as cos/sin 2phi, normals, Stokes): polar_detect.modalities.TABLE,
#: the one table PatchCore's augmentation reads too.
SIGNED = _modalities.SIGNED


def modality_config(config: TrainConfig, modality: str) -> TrainConfig:
    """Adapt value-range settings to a modality's nominal range
    (``polar_detect.modalities.nominal_range``): signed ones get SSIM data range 2 and
    textures mapped to [-1, 1]; others keep the paper's [0, 1]. Unknown names keep [0, 1]."""
    if modality not in _modalities.TABLE or _modalities.nominal_range(modality) == (0.0, 1.0):
        return config
    lo, hi = _modalities.nominal_range(modality)
    sim = replace(config.simulator, texture_range=(lo, hi))
    return replace(config, ssim_max_val=hi - lo, simulator=sim)


def parse_inputs(spec: str | list[str]) -> list[str]:
    """``"R+phi"`` / ``"intensity,aolp"`` / list -> canonical modality names (order kept).

    Unknown names pass through unchanged (any manifest modality may be used).
    """
    parts = spec if isinstance(spec, (list, tuple)) else re.split(r"[+,\s]+", spec.strip())
    names = [ALIASES.get(p.strip().lower(), p.strip()) for p in parts if p.strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"bad input list {spec!r}")
    bad = [n for n in names if not isinstance(n, str) or not NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"bad input name(s) {bad} in {spec!r}: letters, digits and _ only")
    return names


def _bad(path: Path, key: str, problem: str) -> store.ModelFileError:
    return store.ModelFileError(f"{path}: {key}: {problem}")


def read_config(directory: str | Path) -> dict:
    """``<directory>/draem.json``, validated: ``inputs`` (non-empty list of distinct names),
    ``size`` (null or [H, W], positive multiples of 32), optional ``models`` records,
    ``normalisation`` (object or null) and ``dataset`` (string or null)."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise store.ModelFileError(f"{path}: not a DRÆM model directory (no {CONFIG})")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise store.ModelFileError(f"{path}: unreadable JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise _bad(path, "(top level)", f"expected an object, got {type(cfg).__name__}")
    inputs = cfg.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad(path, "inputs", f"expected a non-empty list of input names, got {inputs!r}")
    for i, name in enumerate(inputs):
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise _bad(path, f"inputs.{i}", f"{name!r} is not an input name (letters, digits, _)")
    if len(set(inputs)) != len(inputs):
        raise _bad(path, "inputs", f"repeated names in {inputs}")
    size = cfg.get("size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE
            and v % SIZE_MULTIPLE == 0 for v in size)):
        raise _bad(path, "size", f"expected [H, W], positive multiples of {SIZE_MULTIPLE} up to "
                                 f"{MAX_SIDE}, got {size!r}")
    models = cfg.get("models")
    if models is not None:
        if not isinstance(models, dict):
            raise _bad(path, "models", f"expected an object, got {type(models).__name__}")
        for k, rec in models.items():
            if not isinstance(rec, dict) or not all(
                    rec.get(f) is None or isinstance(rec.get(f), str)
                    for f in ("config_digest", "dataset_digest")):
                raise _bad(path, f"models.{k}", "expected {config_digest, dataset_digest} strings")
    for key, types in (("normalisation", dict), ("dataset", str)):
        if cfg.get(key) is not None and not isinstance(cfg[key], types):
            raise _bad(path, key, f"expected {types.__name__} or null, got {type(cfg[key]).__name__}")
    return cfg


def input_dir(directory: str | Path, cfg: dict, name: str) -> Path:
    """``<directory>/<name>``, refused if it resolves outside ``directory``."""
    from polar_render.paths import contained
    return contained(directory, name, source=Path(directory) / CONFIG,
                     key=f"inputs.{cfg['inputs'].index(name)}")


class PolarDRAEM:
    """A set of per-input DRÆMs whose maps and scores are averaged (Polar-Ano eq. 4)."""

    def __init__(self, models: dict[str, DRAEM], size: tuple[int, int] | None = None):
        self.models, self.size = models, size

    @property
    def inputs(self) -> list[str]:
        return list(self.models)

    def predict_each(self, images: dict[str, torch.Tensor], out_size=None
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-input ``(maps (B,H,W), scores (B,))``; ``images[name]`` is (B,C,H,W)."""
        return {k: predict(m, images[k], self.size, out_size) for k, m in self.models.items()}

    def predict(self, images: dict[str, torch.Tensor], out_size=None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the per-input maps and mean of the per-input scores."""
        each = self.predict_each(images, out_size)
        maps = torch.stack([m for m, _ in each.values()]).mean(0)
        scores = torch.stack([s for _, s in each.values()]).mean(0)
        return maps, scores

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu",
             inputs: str | list[str] | None = None) -> "PolarDRAEM":
        """Load a trained directory; ``inputs`` selects a subset of its per-input models
        (e.g. train R+phi+rho+n once, then evaluate R, R+phi, ... from the same models).
        Never unpickles; see :func:`read_config` and :func:`.train.read_model`."""
        d = Path(directory)
        cfg = read_config(d)
        names = cfg["inputs"] if inputs is None else parse_inputs(inputs)
        missing = [k for k in names if k not in cfg["inputs"]]
        if missing:
            raise ValueError(f"{d / CONFIG}: no model for input(s) {missing}; has {cfg['inputs']}")
        models = {}
        for k in names:
            path = input_dir(d, cfg, k) / FINAL
            models[k], meta = read_model(path, device)
            rec = (cfg.get("models") or {}).get(k)
            if rec is not None and any(meta.get(f) != rec.get(f)
                                       for f in ("config_digest", "dataset_digest")):
                raise store.ModelFileError(
                    f"{path}: is not the model {d / CONFIG} records for {k!r} (another training "
                    f"run wrote it, e.g. an interrupted --restart); rerun draem train")
        return cls(models, tuple(cfg["size"]) if cfg.get("size") else None)


def train_polar(make_dataset, inputs: str | list[str], out_dir: str | Path,
                config: TrainConfig | None = None, progress: bool = True,
                meta: dict | None = None, *, restart: bool = False,
                identity: dict | None = None, log=None) -> PolarDRAEM:
    """Train one DRÆM per input; ``make_dataset(modality)`` returns its train dataset.

    Each input gets the same config and seed (so the simulated anomaly masks are shared
    across inputs, as in training on co-registered images). Every dataset is built and
    every input's existing state checked (:func:`.train.inspect_run`) before anything is
    written or trained. ``identity`` (e.g. ``{"preset": "small"}``) joins the run record.
    ``draem.json`` (with ``meta``) is written last, atomically.
    """
    from polar_render.io import write_json

    names = parse_inputs(inputs)
    out = Path(out_dir)
    config = config or TrainConfig()
    plans = {}
    for name in names:
        ds, cfg = make_dataset(name), modality_config(config, name)
        check_trainable(ds, cfg)
        first = ds[0]["image"]
        extra = {"input": name, **(identity or {})}
        record = run_record(cfg, first.shape[-2:], first.shape[0], extra)
        data = dataset_digest(ds)
        inspect_run(out / name, record, data, restart)
        plans[name] = (ds, cfg, extra, record, data)
    models, records, size = {}, {}, None
    for name, (ds, cfg, extra, record, data) in plans.items():
        size = tuple(int(s) for s in ds[0]["image"].shape[-2:])
        models[name] = train(ds, out / name, cfg, progress=progress, extra=extra,
                             data_digest=data, restart=restart, log=log).eval()
        records[name] = {"config_digest": digest(record), "dataset_digest": data}
    write_json(out / CONFIG, {"model": "draem", "inputs": names, "size": list(size),
                              "train_config": config.to_dict(), "models": records, **(meta or {})})
    return PolarDRAEM(models, size)
