"""DRÆM training loop (kept apart from the networks in :mod:`.model`).

Paper / reference settings: Adam, lr 1e-4, learning rate x0.2 at 80 % and 90 % of the
epochs, batch 8, 700 epochs. Presets (:data:`PRESETS`): ``paper``, ``polar_ano`` (Polar-Ano:
50 epochs, batch 4, paper widths) and ``small`` (16/8 widths for CPU work).

Reproducibility: the model is initialised from ``seed``; the epoch-``e`` shuffle uses a
generator seeded with ``(seed, e)`` and sample ``i`` is simulated from ``(seed, e, i)``,
so resuming from an end-of-epoch checkpoint reproduces the uninterrupted run exactly on
CPU. Mixed precision (float16 autocast + GradScaler) is used on CUDA only.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .losses import draem_loss
from .model import DRAEM, WIDTHS
from .simulate import AnomalySimulator, SimulatedDataset, SimulatorConfig

CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"


@dataclass
class TrainConfig:
    """All training settings; ``PRESETS`` holds named variants."""

    recon_width: int = 128
    disc_width: int = 64
    epochs: int = 700
    batch_size: int = 8
    lr: float = 1e-4
    milestones: tuple[float, ...] = (0.8, 0.9)   # fractions of ``epochs``
    lr_gamma: float = 0.2
    seed: int = 0
    num_workers: int = 0
    amp: bool = True                              # honoured on CUDA only
    ssim_max_val: float = 1.0                     # data range of the inputs for SSIM
    device: str = "auto"
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["simulator"]["beta_range"] = list(self.simulator.beta_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        sim = dict(d.pop("simulator", {}))
        for k in ("beta_range", "texture_range"):
            if isinstance(sim.get(k), list):
                sim[k] = tuple(sim[k])
        d["milestones"] = tuple(d.get("milestones", (0.8, 0.9)))
        return cls(**d, simulator=SimulatorConfig(**sim))


PRESETS = {
    "paper": TrainConfig(),
    "polar_ano": TrainConfig(epochs=50, batch_size=4),
    "small": TrainConfig(*WIDTHS["small"], epochs=20, batch_size=4),
}


def preset(name: str, **overrides) -> TrainConfig:
    """``PRESETS[name]`` with ``overrides`` (None values ignored)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch and ask cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build(channels: int, config: TrainConfig):
    """Model, optimizer and scheduler for ``config`` (model initialised from the seed)."""
    seed_everything(config.seed)
    model = DRAEM(channels, config.recon_width, config.disc_width)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = [max(1, int(round(f * config.epochs))) for f in config.milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, steps, gamma=config.lr_gamma)
    return model, opt, sched


def train(dataset, out_dir: str | Path, config: TrainConfig | None = None, *,
          simulator: AnomalySimulator | None = None, resume: bool = True,
          stop_after_epoch: int | None = None, progress: bool = True,
          extra: dict | None = None) -> DRAEM:
    """Train one DRÆM on ``dataset`` (items ``{"image": (C,H,W), ...}``, anomaly-free).

    Writes ``out_dir/checkpoint.pt`` after every epoch (model, optimizer, scheduler, scaler,
    epoch, loss history) and ``out_dir/model.pt`` (weights + config) at the end. With
    ``resume`` an existing checkpoint is continued. ``stop_after_epoch`` ends early
    (after that many epochs in total) without writing ``model.pt`` - used to test resume.
    ``extra`` is stored in ``model.pt`` (e.g. the input modality and image size).
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    first = dataset[0]["image"]
    channels, size = int(first.shape[0]), tuple(int(s) for s in first.shape[-2:])
    model, opt, sched = build(channels, config)
    model.to(device)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, history = 0, []
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start, history = ck["epoch"], ck["history"]
    (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2))

    sim = SimulatedDataset(dataset, simulator or AnomalySimulator(config.simulator), config.seed)
    end = config.epochs if stop_after_epoch is None else min(stop_after_epoch, config.epochs)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=(end - start) * -(-len(sim) // config.batch_size), desc=f"draem {out.name}",
                   unit="step", dynamic_ncols=True)
    for epoch in range(start, end):
        sim.set_epoch(epoch)
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        loader = DataLoader(sim, batch_size=config.batch_size, shuffle=True, generator=gen,
                            num_workers=config.num_workers,
                            pin_memory=device.type == "cuda")
        model.train()
        sums, n = {}, 0
        for batch in loader:
            x = batch["augmented"].to(device, non_blocking=True)
            target = batch["image"].to(device, non_blocking=True)
            mask = batch["mask"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                rec, logits = model(x)
            losses = draem_loss(rec, logits, target, mask, config.ssim_max_val)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            scaler.step(opt)
            scaler.update()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
            if bar is not None:
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{float(losses['total'].detach()):.4f}")
        sched.step()
        history.append({"epoch": epoch + 1, **{k: v / max(n, 1) for k, v in sums.items()}})
        _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                      "epoch": epoch + 1, "history": history, "config": config.to_dict(),
                      "model_config": model.config()}, ckpt_path)
    if bar is not None:
        bar.close()
    if stop_after_epoch is None or end == config.epochs:
        save_model(model, out / FINAL, {"size": list(size), "history": history,
                                        "train_config": config.to_dict(), **(extra or {})})
    return model


def save_model(model: DRAEM, path: str | Path, meta: dict | None = None) -> None:
    """Weights + constructor config (+ ``meta``) in one torch file."""
    _atomic_save({"model_config": model.config(), "state_dict": model.state_dict(),
                  "meta": meta or {}}, Path(path))


def load_model(path: str | Path, device: str = "cpu") -> tuple[DRAEM, dict]:
    """Inverse of :func:`save_model`: ``(model in eval mode, meta)``."""
    ck = torch.load(Path(path), map_location=device, weights_only=False)
    model = DRAEM(**ck["model_config"])
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval(), ck.get("meta", {})
