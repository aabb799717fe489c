"""Training of the SfP network (the network itself is :mod:`.model`), with exact resume.

Objective: mean angle between predicted and true normals, ``atan2(|p x g|, p . g)`` (exact
near 0, unlike ``acos``), over the part's pixels (the sample's ``object_mask``); other
surface pixels (ground truth normal non-zero) get ``background_weight`` (so that the
normals predicted on the ground are sensible when a detector sees the whole frame; 0
restricts the loss to the part). ``loss="cosine"`` uses 1 - cos instead.

Optimiser: AdamW; learning rate warmed up linearly over ``warmup`` of the steps, then cosine
to ``lr_min_ratio`` x ``lr``; gradient norm clipped at ``grad_clip``.

Reproducibility and resume: the weights are initialised from ``seed``; epoch ``e`` visits
the samples in the order ``default_rng([seed, e]).permutation``; sample ``i`` of epoch ``e``
draws its flips, crop and DoFP noise from ``default_rng([seed, e, i])`` (and
``[seed, e, i, 1]`` for the sensor), and the learning rate is a function of the step
number. So nothing but the weights and the optimiser state carries over between epochs,
and a run resumed from the end-of-epoch checkpoint equals the uninterrupted run (CPU, same
thread count; tested).

A checkpoint (``<out>/checkpoint.safetensors``, written atomically after every epoch) stores
the digest of the training configuration and the data (the training manifest's sha256,
which holds every file's sha256, plus the sample ids). ``train`` resumes only when the
digest matches; otherwise it refuses (exit 2) and names what differs, and ``--restart``
discards the old state. ``epochs`` is part of the configuration (the learning-rate
schedule depends on it); ``stop_after`` (stop after that many epochs in this call, e.g.
to split a long run) is not.

Presets (:data:`PRESETS`):

* ``cpu``: widths 16/32/64/128 (0.49 M parameters), 128x128 crops around part pixels,
  batch 8, 24 epochs; the target budget is <= 30 min for 200 training images of 320x240
  on 2 CPU cores (measured numbers in ``README.md``).
* ``gpu``: widths 32/64/128/256 (1.9 M parameters), full frames, batch 16, 150 epochs.
* ``tiny``: widths 8/16/32, for tests (seconds).
"""
from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch


from polar_detect.models.sfp import store
from polar_detect.models.sfp.store import CKPT_FILE, CKPT_FORMAT, MODEL_FILE, MODEL_FORMAT
from polar_detect.models.sfp.data import Sample, SfPSamples, crop, crop_box, dofp_observe, flip, network_input
from polar_detect.models.sfp.model import INPUTS, NetConfig, SfPNet, n_parameters

LOG_FILE = "train.json"
LOSSES = ("angle", "cosine")
# settings that do not change the result (left out of the digest)
RUNTIME_KEYS = ("device", "cache")


class TrainError(ValueError):
    """Bad training setup or a stale checkpoint (message names file / option)."""


@dataclass
class TrainConfig:
    """Every setting of a training run (module docstring)."""

    widths: tuple[int, ...] = (16, 32, 64, 128)
    epochs: int = 24
    batch_size: int = 8
    lr: float = 2e-3
    lr_min_ratio: float = 0.02
    warmup: float = 0.03
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    crop: tuple[int, int] | None = (128, 128)    # None: full frames
    flips: bool = True
    sensor_fraction: float = 0.5                  # share of samples seen through the DoFP sensor model
    exposure_range: tuple[float, float] = (0.25, 1.0)   # x auto exposure (lower: noisier)
    background_weight: float = 0.1
    loss: str = "angle"
    device: str = "cpu"
    cache: bool = True                            # keep decoded samples in memory

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        if self.crop is not None:
            self.crop = (int(self.crop[0]), int(self.crop[1]))
        self.exposure_range = (float(self.exposure_range[0]), float(self.exposure_range[1]))

    def validate(self) -> "TrainConfig":
        """Raise TrainError naming the option for out-of-range settings."""
        checks = [("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                  ("lr", math.isfinite(self.lr) and self.lr > 0, "> 0"),
                  ("lr_min_ratio", 0 <= self.lr_min_ratio <= 1, "in [0, 1]"),
                  ("warmup", 0 <= self.warmup < 1, "in [0, 1)"),
                  ("weight_decay", self.weight_decay >= 0, ">= 0"), ("grad_clip", self.grad_clip > 0, "> 0"),
                  ("sensor_fraction", 0 <= self.sensor_fraction <= 1, "in [0, 1]"),
                  ("exposure_range", 0 < self.exposure_range[0] <= self.exposure_range[1], "0 < lo <= hi"),
                  ("background_weight", 0 <= self.background_weight <= 1, "in [0, 1]"),
                  ("loss", self.loss in LOSSES, f"one of {', '.join(LOSSES)}"),
                  ("crop", self.crop is None or min(self.crop) >= 8, "None or >= 8 px each")]
        for name, ok, what in checks:
            if not ok:
                raise TrainError(f"--{name.replace('_', '-')}: must be {what}, got {getattr(self, name)!r}")
        try:
            NetConfig(widths=self.widths)
        except ValueError as exc:
            raise TrainError(f"--widths: {exc}") from None
        if self.device != "cpu" and not (self.device.startswith("cuda") and torch.cuda.is_available()):
            raise TrainError(f"--device {self.device}: not available here (torch.cuda.is_available() is "
                             f"{torch.cuda.is_available()})")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        d["crop"] = list(self.crop) if self.crop else None
        d["exposure_range"] = list(self.exposure_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


PRESETS = {
    "cpu": TrainConfig(),
    "gpu": TrainConfig(widths=(32, 64, 128, 256), epochs=150, batch_size=16, lr=1e-3, crop=None, device="cuda"),
    "tiny": TrainConfig(widths=(8, 16, 32), epochs=2, batch_size=4, crop=None, sensor_fraction=0.0),
}


def preset(name: str, **overrides) -> TrainConfig:
    """``PRESETS[name]`` with ``overrides`` (None values ignored), validated."""
    if name not in PRESETS:
        raise TrainError(f"--preset {name}: unknown; choose from {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}).validate()


# -- digest -----------------------------------------------------------------------------------
def result_config(config: TrainConfig) -> dict:
    """The settings that determine the trained weights (digest input)."""
    return {k: v for k, v in config.to_dict().items() if k not in RUNTIME_KEYS}


def data_record(samples: SfPSamples) -> dict:
    from polar_detect.dataset.manifest import sha256_file

    return {"manifest": str(samples.manifest_file.resolve()), "manifest_sha256": sha256_file(samples.manifest_file),
            "splits": list(samples.splits) if samples.splits != "all" else "all", "n_samples": len(samples),
            "ids_sha256": hashlib.sha256("\n".join(samples.ids).encode()).hexdigest()}


def digest(config: TrainConfig, data: dict) -> str:
    """sha256 of the result-determining configuration and the data identity."""
    payload = {"config": result_config(config),
               "data": {k: data[k] for k in ("manifest_sha256", "splits", "ids_sha256")}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _differences(old_meta: dict, config: TrainConfig, data: dict) -> list[str]:
    out = []
    old_cfg = old_meta.get("config") or {}
    for k, v in result_config(config).items():
        if old_cfg.get(k) != v:
            out.append(f"{k} {old_cfg.get(k)!r} -> {v!r}")
    old_data = old_meta.get("data") or {}
    for k in ("manifest_sha256", "splits", "ids_sha256"):
        if old_data.get(k) != data[k]:
            out.append(f"data {k} changed")
    return out or ["digest differs"]


# -- one step ---------------------------------------------------------------------------------
def angular_loss(pred: torch.Tensor, truth: torch.Tensor, weight: torch.Tensor, kind: str = "angle") -> torch.Tensor:
    """Weighted mean angular error (radians) or 1 - cos; pred/truth (B, 3, H, W), weight (B, H, W)."""
    dot = (pred * truth).sum(1)
    if kind == "cosine":
        per = 1.0 - dot
    else:
        cross = torch.linalg.cross(pred, truth, dim=1)
        per = torch.atan2(torch.sqrt((cross * cross).sum(1) + 1e-12), dot)
    return (per * weight).sum() / weight.sum().clamp_min(1.0)


def pixel_weights(s: Sample, background_weight: float) -> np.ndarray:
    """1 on part pixels, ``background_weight`` on other surface pixels, 0 where no surface."""
    surface = np.linalg.norm(s.normals, axis=0) > 0.5
    part = s.part & surface
    return np.where(part, 1.0, np.where(surface, background_weight, 0.0)).astype(np.float32)


def prepare(s: Sample, config: TrainConfig, epoch: int, index: int, scale: float, offset: float):
    """Augment one sample deterministically in (seed, epoch, index) -> (input, normals, weights)."""
    rng = np.random.default_rng([config.seed, epoch, index])
    u_h, u_v, u_s = rng.random(3)
    factor = rng.uniform(*config.exposure_range)
    if config.flips:
        s = flip(s, u_h < 0.5, u_v < 0.5)
    if u_s < config.sensor_fraction:
        s = dofp_observe(s, np.random.default_rng([config.seed, epoch, index, 1]), factor)
    if config.crop is not None:
        top, left = crop_box(s.part, s.shape, config.crop, rng)
        s = crop(s, top, left, config.crop)
    return (network_input(s, scale, offset), torch.from_numpy(np.ascontiguousarray(s.normals, np.float32)),
            torch.from_numpy(pixel_weights(s, config.background_weight)))


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    warm = max(1, int(round(config.warmup * total)))
    if step < warm:
        return config.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    lo = config.lr * config.lr_min_ratio
    return lo + 0.5 * (config.lr - lo) * (1.0 + math.cos(math.pi * min(t, 1.0)))


# -- files ------------------------------------------------------------------------------------
def model_tensors(model: SfPNet) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v for k, v in model.state_dict().items()}


def save_model(path: Path, model: SfPNet, meta: dict) -> Path:
    return store.save(path, model_tensors(model), {"format": MODEL_FORMAT, **meta})


def load_model(path: str | Path, device: str = "cpu") -> tuple[SfPNet, dict]:
    """(network in eval mode, metadata) of a model file or of a training directory."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    tensors, meta = store.read(path, MODEL_FORMAT)
    try:
        model = SfPNet(NetConfig.from_dict(meta["net"]))
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise store.ModelFileError(f"{path}: inconsistent SfP model file ({type(exc).__name__}: {exc})") from None
    meta["path"] = str(path)
    return model.to(device).eval(), meta


def _load_samples(samples: SfPSamples, cache: bool, progress: bool) -> list[Sample] | None:
    if not cache:
        return None
    from polar_render.progress import progress as progress_bar

    return [samples[i] for i in progress_bar(range(len(samples)), desc="sfp load", unit="sample",
                                             enabled=progress)]


# -- training ---------------------------------------------------------------------------------
def train(data: str | Path, out: str | Path, config: TrainConfig, restart: bool = False,
          stop_after: int | None = None, progress: bool = True, splits=("train",)) -> dict:
    """Train (or resume) into ``out``; returns a summary dict (``status``: trained | resumed |
    interrupted | up_to_date). Every check runs before anything is written; the run holds
    ``out``'s lock (``polar_render.run.lock``), so a second run into the same directory is
    refused instead of interleaving checkpoints."""
    config.validate()
    out = Path(out)
    samples = SfPSamples(data, splits, ground_truth=True)
    samples.require_parts()
    if len(samples) < 1:
        raise TrainError(f"{samples.manifest_file}: no training samples in split(s) {splits}")
    first = samples[0]
    if config.crop is not None and (config.crop[0] > first.shape[0] or config.crop[1] > first.shape[1]):
        raise TrainError(f"--crop {config.crop[0]}x{config.crop[1]}: larger than the images "
                         f"({first.shape[0]}x{first.shape[1]}) of {samples.manifest_file}")
    if config.sensor_fraction > 0 and (first.shape[0] % 2 or first.shape[1] % 2):
        raise TrainError(f"{samples.manifest_file}: images are {first.shape[0]}x{first.shape[1]}; the DoFP "
                         f"sensor simulation needs even sizes (or --sensor-fraction 0)")
    if stop_after is not None and stop_after < 1:
        raise TrainError(f"--stop-after: must be >= 1, got {stop_after}")
    drec = data_record(samples)
    dig = digest(config, drec)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out}: exists and is not a directory")
    if resume_state(out, config, dig, drec, restart).get("status") == "up_to_date":   # refuses a stale state
        return {"status": "up_to_date", "model": str(out / MODEL_FILE), "epochs": config.epochs}
    from polar_render.run.lock import hold

    with hold(out):
        state = resume_state(out, config, dig, drec, restart)
        if state.get("status") == "up_to_date":
            return state
        return _run(samples, out, config, dig, drec, state, stop_after, progress)


def resume_state(out: Path, config: TrainConfig, dig: str, drec: dict, restart: bool) -> dict:
    """What ``out`` holds: ``{"start": epoch, "history", "tensors", "meta"}`` to resume from,
    ``{"start": 0}`` for a fresh run, or ``{"status": "up_to_date"}``; raises StaleStateError for a
    checkpoint or model of another configuration/data (unless ``restart``)."""
    ckpt_path, model_path = out / CKPT_FILE, out / MODEL_FILE
    if restart:
        return {"start": 0, "history": []}
    up_to_date = {"status": "up_to_date", "model": str(model_path), "epochs": config.epochs}
    model_meta = store.read_meta(model_path, MODEL_FORMAT) if model_path.exists() else None
    trained = (model_meta or {}).get("train") or {}
    if ckpt_path.exists():
        tensors, meta = store.read(ckpt_path, CKPT_FORMAT)
        if meta.get("digest") != dig:
            raise store.stale_error([(ckpt_path, _differences(meta, config, drec))])
        start = int(meta["epoch"])
        if start >= config.epochs and trained.get("digest") == dig:
            return up_to_date
        return {"start": start, "history": list(meta.get("history", [])), "tensors": tensors, "meta": meta}
    if model_meta is not None:
        if trained.get("digest") != dig:
            raise store.stale_error([(model_path, _differences(trained, config, drec))])
        return up_to_date
    return {"start": 0, "history": []}


def _run(samples: SfPSamples, out: Path, config: TrainConfig, dig: str, drec: dict, state: dict,
         stop_after: int | None, progress: bool) -> dict:
    """The epochs from ``state["start"]`` on (the caller holds the output directory's lock)."""
    from polar_render.progress import progress as progress_bar

    ckpt_path, model_path = out / CKPT_FILE, out / MODEL_FILE
    start, history = state["start"], state["history"]
    torch.manual_seed(config.seed)
    net = SfPNet(NetConfig(colour=samples.colour, widths=config.widths)).to(config.device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if "tensors" in state:
        tensors, meta = state["tensors"], state["meta"]
        net.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        store.restore_optimizer(opt, tensors, meta, ckpt_path)
    cached = _load_samples(samples, config.cache, progress)
    get = (lambda i: cached[i]) if cached is not None else (lambda i: samples[i])
    n = len(samples)
    per_epoch = math.ceil(n / config.batch_size)
    total = per_epoch * config.epochs
    end = config.epochs if stop_after is None else min(config.epochs, start + stop_after)
    t_run = time.time()
    for epoch in range(start, end):
        t0 = time.time()
        net.train()
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        losses = []
        bar = progress_bar(range(per_epoch), desc=f"sfp epoch {epoch + 1}/{config.epochs}", unit="batch",
                           enabled=progress)
        for b in bar:
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            items = [prepare(get(int(i)), config, epoch, int(i), samples.scale, samples.offset) for i in idx]
            shapes = {tuple(x.shape[-2:]) for x, _, _ in items}
            if len(shapes) != 1:
                raise TrainError(f"{samples.manifest_file}: images of different sizes {sorted(shapes)} in one "
                                 f"batch; use --crop or --batch-size 1")
            x, y, w = (torch.stack(t).to(config.device) for t in zip(*items))
            for g in opt.param_groups:
                g["lr"] = learning_rate(config, epoch * per_epoch + b, total)
            loss = angular_loss(net(x), y, w, config.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        unit = "deg" if config.loss == "angle" else "1-cos"
        mean = float(np.mean(losses))
        history.append({"epoch": epoch + 1, "loss": mean, "loss_unit": "rad" if unit == "deg" else unit,
                        "mean_angle_deg": math.degrees(mean) if config.loss == "angle" else None,
                        "seconds": round(time.time() - t0, 2)})
        o_t, o_meta = store.optimizer_tensors(opt)
        store.save(ckpt_path, {**model_tensors(net), **o_t},
                   {"format": CKPT_FORMAT, "digest": dig, "epoch": epoch + 1, "config": result_config(config),
                    "data": drec, "optimizer": o_meta, "history": history})
    summary = {"model": str(model_path), "checkpoint": str(ckpt_path), "epochs_done": end,
               "epochs": config.epochs, "seconds_this_call": round(time.time() - t_run, 1),
               "parameters": n_parameters(net), "history": history}
    if end < config.epochs:
        return {"status": "interrupted", **summary}
    from polar_detect.dataset.manifest import normalisation_of, read_manifest

    meta = {"net": net.config.to_dict(), "inputs": list(INPUTS),
            "output": "unit normals (B, 3, H, W), OpenCV camera frame (x right, y down, z forward)",
            "normalisation": normalisation_of(read_manifest(samples.manifest_file), ["intensity"]),
            "train": {"digest": dig, "config": result_config(config), "data": drec, "history": history,
                      "seconds": round(sum(h["seconds"] for h in history), 1), "parameters": n_parameters(net),
                      "machine": {"platform": platform.platform(), "torch": torch.__version__,
                                  "threads": torch.get_num_threads(), "device": config.device}}}
    save_model(model_path, net.cpu(), meta)
    from polar_render.io import write_json
    write_json(out / LOG_FILE, {"model": str(model_path), **meta})
    return {"status": "resumed" if start else "trained", **summary}
