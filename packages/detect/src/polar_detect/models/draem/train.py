"""DRÆM training loop (kept apart from the networks in :mod:`.model`).

Paper / reference settings: Adam, lr 1e-4, learning rate x0.2 at 80 % and 90 % of the
epochs, batch 8, 700 epochs. Presets (:data:`PRESETS`): ``paper``, ``polar_ano`` (Polar-Ano:
50 epochs, batch 4, paper widths) and ``small`` (16/8 widths for CPU work).

Reproducibility: the model is initialised from ``seed``; the epoch-``e`` shuffle uses a
generator seeded with ``(seed, e)`` and sample ``i`` is simulated from ``(seed, e, i)``,
so resuming from an end-of-epoch checkpoint reproduces the uninterrupted run exactly on
CPU. Mixed precision (float16 autocast + GradScaler) is used on CUDA only.

Files (:mod:`.store`: safetensors + JSON, never pickle): ``checkpoint.safetensors`` after
every epoch, ``model.safetensors`` at the end, ``train_config.json`` (readable copy of the
config). Both safetensors files record the run (config without runtime-only settings,
size, channels, input, preset) and the training set's content digest; training resumes
only a checkpoint of the same run and reports a finished model of the same run as up to
date. Batches: a trailing batch of one image is dropped (BatchNorm); a training set of one
image is refused. A non-finite loss stops training, naming the epoch, batch and samples.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from polar_render.io import write_json
from polar_render.progress import progress as progress_bar

from polar_detect import store as model_files
from polar_detect.models.draem import store
from polar_detect.models.draem.losses import draem_loss
from polar_detect.models.draem.model import DRAEM, WIDTHS
from polar_detect.models.draem.simulate import AnomalySimulator, SimulatedDataset, SimulatorConfig

CHECKPOINT = store.CHECKPOINT_FILE
FINAL = store.MODEL_FILE
#: TrainConfig fields that do not change what is learned (left out of the run digest).
RUNTIME_KEYS = ("device", "num_workers")


class TrainingError(ValueError):
    """Training cannot start (too few images, bad batch size) or diverged (non-finite loss)."""


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


def build(channels: int, config: TrainConfig):
    """Model, optimizer and scheduler for ``config`` (model initialised from the seed)."""
    seed_everything(config.seed)
    model = DRAEM(channels, config.recon_width, config.disc_width)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps = [max(1, int(round(f * config.epochs))) for f in config.milestones]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, steps, gamma=config.lr_gamma)
    return model, opt, sched


# ------------------------------------------------------------------ run identity
def digest(obj) -> str:
    """sha256 (hex) of ``obj`` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def run_record(config: TrainConfig, size, channels: int, extra: dict | None = None) -> dict:
    """What defines a training run's result: the config (without :data:`RUNTIME_KEYS`),
    network input size (H, W) and channels, plus ``extra`` (e.g. input name, preset)."""
    cfg = config.to_dict()
    for k in RUNTIME_KEYS:
        cfg.pop(k, None)
    rec = {"train_config": cfg, "size": [int(s) for s in size], "channels": int(channels),
           **(extra or {})}
    return json.loads(json.dumps(rec, allow_nan=False))      # tuples -> lists, as when read back


def _unwrap(dataset) -> tuple[object, list[int]]:
    """(innermost dataset, its indices) through ``torch.utils.data.Subset`` layers."""
    idx = list(range(len(dataset)))
    while isinstance(dataset, torch.utils.data.Subset):
        idx = [int(dataset.indices[i]) for i in idx]
        dataset = dataset.dataset
    return dataset, idx


def _is_polar(base) -> bool:
    return all(hasattr(base, a) for a in ("samples", "root", "modalities", "info", "manifest_file"))


def describe_dataset(dataset) -> str:
    """The manifest file of a PolarDataset (or Subset of one), else the class name."""
    base, _ = _unwrap(dataset)
    return str(base.manifest_file) if _is_polar(base) else type(base).__name__


def _sample_path(base, i: int, modality: str) -> Path:
    """Resolved file of ``modality`` of sample ``i`` of a PolarDataset (its own checked
    ``paths`` when it has them), refused if it leaves the dataset directory."""
    paths = getattr(base, "paths", None)
    if paths is not None:
        return Path(paths[i][modality])
    from polar_render.paths import contained
    s = base.samples[i]
    return contained(base.root, s["files"][modality], source=base.manifest_file,
                     key=f"samples.{s['id']}.files.{modality}")


def sample_names(dataset, indices) -> list[str]:
    """Files of the items ``indices`` of ``dataset`` (PolarDataset, or any dataset with a
    ``source(i)`` method), else their ids."""
    base, idx = _unwrap(dataset)
    if _is_polar(base):
        return [", ".join(str(_sample_path(base, idx[i], m)) for m in base.modalities)
                for i in indices]
    if callable(getattr(base, "source", None)):
        return [str(base.source(idx[i])) for i in indices]
    return [f"id {dataset[i].get('id', i)}" for i in indices]


def dataset_digest(dataset) -> str:
    """Content digest of a training set.

    PolarDataset (or a Subset of one): sha256 over the modalities' channels and
    normalisation, resize/crop, and per used sample its id and the sha256 of each file's
    bytes (the manifest's checksums are not trusted for this: a file edited in place
    changes the digest). Anything else: sha256 over the
    ids and float32 image tensors of all items.
    """
    from polar_detect.dataset.integrity import file_sha256   # memoised per file version
    base, idx = _unwrap(dataset)
    h = hashlib.sha256()
    if _is_polar(base):
        head = {"modalities": [[m, base.info[m].get("channels"), base.info[m].get("scale", 1.0),
                                base.info[m].get("offset", 0.0)] for m in base.modalities],
                "size": base.size, "crop": base.crop, "normalise": getattr(base, "normalise", True)}
        h.update(json.dumps(head, sort_keys=True).encode())
        for i in idx:
            s = base.samples[i]
            for m in base.modalities:
                h.update(f"{s['id']}\0{m}\0{file_sha256(_sample_path(base, i, m))}\n".encode())
        return h.hexdigest()
    for i in range(len(dataset)):
        item = dataset[i]
        img = torch.as_tensor(item["image"], dtype=torch.float32).contiguous()
        h.update(f"{item.get('id', i)}\0{tuple(img.shape)}\n".encode())
        h.update(img.numpy().tobytes())
    return h.hexdigest()


def _differences(meta: dict, record: dict, config_digest: str, data_digest: str) -> list[str]:
    """Human-readable list of what differs between a saved run and the requested one."""
    return model_files.run_differences(meta, record, config_digest, data_digest,
                                       unrecorded=" (converted from a legacy file)")


def inspect_run(out_dir: str | Path, record: dict, data_digest: str, restart: bool = False
                ) -> tuple[str, dict | None]:
    """What ``out_dir`` holds for the requested run: ``("done", model meta)`` (finished,
    config and dataset match), ``("resume", checkpoint meta)``, or ``("fresh", None)``.

    A model or checkpoint of a different run raises :class:`StaleStateError` naming what
    differs (``restart`` ignores it: the new run replaces it); an old pickled ``model.pt``
    / ``checkpoint.pt`` alone raises :class:`store.LegacyFormatError`. Only file headers
    are read.
    """
    out = Path(out_dir)
    model_p, ck_p = out / FINAL, out / CHECKPOINT
    if restart:
        return "fresh", None
    if not model_p.exists() and not ck_p.exists():
        for p in (model_p, ck_p):
            store.check_not_legacy(p)
        return "fresh", None
    cdig = digest(record)
    candidates = ((model_p, store.MODEL_FORMAT, "done"), (ck_p, store.CHECKPOINT_FORMAT, "resume"))
    return model_files.inspect_run(candidates, store.read_meta,
                                   lambda meta: _differences(meta, record, cdig, data_digest),
                                   restart="--restart (make train: RESTART=1)")


# ------------------------------------------------------------------ training
def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled index batches of one epoch. A trailing batch of a single item is dropped
    when there are other batches (BatchNorm cannot normalise one value per channel); that
    item is trained on in other epochs, whose shuffles differ."""
    order = torch.randperm(n, generator=generator).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def check_trainable(dataset, config: TrainConfig) -> None:
    """Refuse settings that cannot train (before anything is written)."""
    where = describe_dataset(dataset)
    if config.epochs < 1:
        raise TrainingError(f"epochs {config.epochs}: must be >= 1")
    if config.batch_size < 2:
        raise TrainingError(f"batch size {config.batch_size}: must be >= 2 (DRÆM's BatchNorm "
                            f"layers need at least 2 images per training batch)")
    if len(dataset) == 0:
        raise TrainingError(f"{where}: the training set is empty")
    if len(dataset) == 1:
        raise TrainingError(f"{where}: the training set is a single image ({sample_names(dataset, [0])[0]}); "
                            f"DRÆM's BatchNorm layers need at least 2 images per training batch")


def _checkpoint(model, opt, sched, scaler, epoch, history, header) -> tuple[dict, dict]:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_t, opt_meta = store.flatten_optimizer(opt.state_dict())
    tensors.update(opt_t)
    meta = {"format": store.CHECKPOINT_FORMAT, "epoch": epoch, "history": history,
            "model_config": model.config(), "optimizer": opt_meta,
            "scheduler": store.scheduler_state(sched), "scaler": scaler.state_dict(), **header}
    return tensors, meta


def _restore(path: Path, model, opt, sched, scaler) -> tuple[int, list]:
    """Load a checkpoint of the same run into freshly built objects; ``(epoch, history)``."""
    tensors, meta = store.read(path, store.CHECKPOINT_FORMAT)   # CPU; load_state_dict moves them
    store.check_finite(tensors, path)
    if store.check_model_config(meta.get("model_config"), path) != model.config():
        raise store.ModelFileError(f"{path}: model_config {meta['model_config']} does not match "
                                   f"the config's {model.config()}")
    store.load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    opt.load_state_dict(store.unflatten_optimizer(tensors, meta.get("optimizer") or {},
                                                  opt.state_dict(), path))
    store.load_scheduler(sched, meta.get("scheduler"), path)
    if meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    return int(meta["epoch"]), list(meta.get("history", []))


def _nonfinite(losses: dict, out: Path, epoch: int, epochs: int, b: int, nb: int, names) -> TrainingError:
    terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
    return TrainingError(
        f"{out}: epoch {epoch + 1}/{epochs}, batch {b + 1}/{nb}: non-finite training loss "
        f"({terms}); samples of this batch: {'; '.join(names)}. Check them for NaN/inf or "
        f"extreme values; no model was written (the last checkpoint, if any, is kept)")


def train(dataset, out_dir: str | Path, config: TrainConfig | None = None, *,
          simulator: AnomalySimulator | None = None, restart: bool = False,
          stop_after_epoch: int | None = None, progress: bool = True,
          extra: dict | None = None, data_digest: str | None = None,
          log=None) -> DRAEM:
    """Train one DRÆM on ``dataset`` (items ``{"image": (C,H,W), ...}``, anomaly-free).

    Writes ``out_dir/checkpoint.safetensors`` after every epoch (weights, optimizer,
    scheduler and scaler state, epoch, loss history) and ``out_dir/model.safetensors``
    (weights + meta) at the end; both record :func:`run_record` (config, size, channels,
    ``extra``) and its digest and the dataset's content digest (``data_digest``, computed
    with :func:`dataset_digest` when not given). An existing model of the same run is
    returned as it is ("up to date"); a checkpoint of the same run is continued; state of
    a different run raises :class:`StaleStateError` unless ``restart``. A non-finite loss
    raises :class:`TrainingError` naming the epoch, batch and its samples.
    ``stop_after_epoch`` ends early (after that many epochs in total) without writing
    ``model.safetensors`` - used to test resume. ``log(str)`` receives status lines.
    """
    config = config or TrainConfig()
    log = log or (lambda msg: None)
    check_trainable(dataset, config)
    out = Path(out_dir)
    first = dataset[0]["image"]
    channels, size = int(first.shape[0]), tuple(int(s) for s in first.shape[-2:])
    record = run_record(config, size, channels, extra)
    data_digest = data_digest or dataset_digest(dataset)
    action, meta = inspect_run(out, record, data_digest, restart)
    device = resolve_device(config.device)
    if action == "done":
        log(f"{out}: up to date (config and dataset match {FINAL}); not retrained")
        return load_model(out / FINAL, str(device))[0]
    model, opt, sched = build(channels, config)
    model.to(device)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, history = 0, []
    if action == "resume":
        start, history = _restore(out / CHECKPOINT, model, opt, sched, scaler)
        log(f"{out}: resuming after epoch {start} of {config.epochs}")
    header = {"run": record, "config_digest": digest(record), "dataset_digest": data_digest}
    out.mkdir(parents=True, exist_ok=True)
    sim = SimulatedDataset(dataset, simulator or AnomalySimulator(config.simulator), config.seed)
    end = config.epochs if stop_after_epoch is None else min(stop_after_epoch, config.epochs)
    bar = progress_bar(total=(end - start) * -(-len(sim) // config.batch_size), desc=f"draem {out.name}",
                       unit="step", enabled=progress)
    try:
        for epoch in range(start, end):
            history.append(_epoch(model, opt, sched, scaler, sim, epoch, config, device, use_amp,
                                  out, bar))
            store.write(out / CHECKPOINT, *_checkpoint(model, opt, sched, scaler, epoch + 1,
                                                       history, header))
            write_json(out / "train_config.json", config.to_dict())
    finally:
        if bar is not None:
            bar.close()
    if stop_after_epoch is None or end == config.epochs:
        save_model(model, out / FINAL, {"size": list(size), "history": history,
                                        "train_config": config.to_dict(), **(extra or {})},
                   header)
        write_json(out / "train_config.json", config.to_dict())
    return model


def _epoch(model, opt, sched, scaler, sim, epoch, config, device, use_amp, out, bar) -> dict:
    """One epoch of training; returns its mean losses (``{"epoch": e + 1, ...}``)."""
    sim.set_epoch(epoch)
    gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    batches = epoch_batches(len(sim), config.batch_size, gen)
    loader = DataLoader(sim, batch_sampler=batches, num_workers=config.num_workers,
                        pin_memory=device.type == "cuda")
    model.train()
    sums, n = {}, 0
    for b, batch in enumerate(loader):
        x = batch["augmented"].to(device, non_blocking=True)
        target = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            rec, logits = model(x)
        losses = draem_loss(rec, logits, target, mask, config.ssim_max_val)
        if not bool(torch.isfinite(losses["total"])):
            raise _nonfinite(losses, out, epoch, config.epochs, b, len(batches),
                             sample_names(sim.base, batch["index"].tolist()))
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
    return {"epoch": epoch + 1, **{k: v / max(n, 1) for k, v in sums.items()}}


# ------------------------------------------------------------------ model files
def save_model(model: DRAEM, path: str | Path, meta: dict | None = None,
               header: dict | None = None) -> Path:
    """Weights (safetensors) + constructor config, ``meta`` and ``header`` (run record and
    digests, see :func:`train`) as JSON metadata; atomic."""
    return store.write(Path(path), model.state_dict(),
                       {"format": store.MODEL_FORMAT, "model_config": model.config(),
                        "meta": meta or {}, **(header or {})})


def read_model(path: str | Path, device: str = "cpu") -> tuple[DRAEM, dict]:
    """``(model in eval mode, full file metadata)``; never unpickles (see :mod:`.store`).

    Refused (:class:`store.ModelFileError`): missing, legacy pickle, not safetensors, wrong
    format, bad model_config, tensors that do not fit the network or are non-finite."""
    tensors, meta = store.read(path, store.MODEL_FORMAT)
    cfg = store.check_model_config(meta.get("model_config"), path)
    store.check_finite(tensors, path)
    model = DRAEM(**cfg)
    store.load_state(model, tensors, path)
    return model.to(device).eval(), meta


def load_model(path: str | Path, device: str = "cpu") -> tuple[DRAEM, dict]:
    """Inverse of :func:`save_model`: ``(model in eval mode, meta)``."""
    model, meta = read_model(path, device)
    return model, meta.get("meta", {})
