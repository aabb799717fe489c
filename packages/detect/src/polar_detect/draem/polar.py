"""Polarimetric DRÆM (Polar-Ano eq. 4): one DRÆM per input X_i, predictions averaged.

``inputs`` is a list of modality names; Polar-Ano's symbols are accepted as aliases
(:data:`ALIASES`): ``R`` -> intensity, ``phi`` -> aolp, ``rho`` -> dolp, ``n`` -> normals,
so ``"R+phi+rho+n"`` and ``"intensity,aolp,dolp,normals"`` mean the same thing.

Layout of a trained model directory::

    <dir>/draem.json            {"model": "draem", "inputs": [...], "size": [H, W], ...}
    <dir>/<input>/model.pt       one DRÆM per input (+ checkpoint.pt while training)
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import torch

from .infer import predict
from .model import DRAEM
from .train import FINAL, TrainConfig, load_model, train

ALIASES = {"r": "intensity", "i": "intensity", "i_un": "intensity", "intensity": "intensity",
           "phi": "aolp", "aolp": "aolp", "rho": "dolp", "dolp": "dolp", "n": "normals",
           "normals": "normals"}
CONFIG = "draem.json"
#: Modalities stored in [-1, 1] by polar_detect.dataset (AoLP as cos/sin 2phi, normals).
SIGNED = {"aolp", "normals"}


def modality_config(config: TrainConfig, modality: str) -> TrainConfig:
    """Adapt value-range settings to a modality: signed ones get SSIM data range 2 and
    textures mapped to [-1, 1]; others keep the paper's [0, 1]."""
    if modality not in SIGNED:
        return config
    sim = replace(config.simulator, texture_range=(-1.0, 1.0))
    return replace(config, ssim_max_val=2.0, simulator=sim)


def parse_inputs(spec: str | list[str]) -> list[str]:
    """``"R+phi"`` / ``"intensity,aolp"`` / list -> canonical modality names (order kept).

    Unknown names pass through unchanged (any manifest modality may be used).
    """
    parts = spec if isinstance(spec, (list, tuple)) else re.split(r"[+,\s]+", spec.strip())
    names = [ALIASES.get(p.strip().lower(), p.strip()) for p in parts if p.strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"bad input list {spec!r}")
    return names


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
        (e.g. train R+phi+rho+n once, then evaluate R, R+phi, ... from the same models)."""
        d = Path(directory)
        cfg_path = d / CONFIG
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: not a DRÆM model directory")
        cfg = json.loads(cfg_path.read_text())
        names = cfg["inputs"] if inputs is None else parse_inputs(inputs)
        missing = [k for k in names if k not in cfg["inputs"]]
        if missing:
            raise ValueError(f"{cfg_path}: no model for input(s) {missing}; has {cfg['inputs']}")
        models = {k: load_model(d / k / FINAL, device)[0] for k in names}
        return cls(models, tuple(cfg["size"]) if cfg.get("size") else None)


def train_polar(make_dataset, inputs: str | list[str], out_dir: str | Path,
                config: TrainConfig | None = None, progress: bool = True,
                meta: dict | None = None) -> PolarDRAEM:
    """Train one DRÆM per input; ``make_dataset(modality)`` returns its train dataset.

    Each input gets the same config and seed (so the simulated anomaly masks are shared
    across inputs, as in training on co-registered images).
    """
    names = parse_inputs(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = config or TrainConfig()
    models, size = {}, None
    for name in names:
        ds = make_dataset(name)
        size = tuple(int(s) for s in ds[0]["image"].shape[-2:])
        models[name] = train(ds, out / name, modality_config(config, name), progress=progress,
                             extra={"input": name}).eval()
    (out / CONFIG).write_text(json.dumps({"model": "draem", "inputs": names, "size": list(size),
                                          "train_config": config.to_dict(), **(meta or {})},
                                         indent=2))
    return PolarDRAEM(models, size)
