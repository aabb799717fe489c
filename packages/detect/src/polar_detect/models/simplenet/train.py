"""Training glue for :class:`~.model.FeatureDetector` (SimpleNet and the feature ensemble).

1. *Encoding*: the backbone sources' input encoding (``patchcore.encoding``) is fitted on the
   training images (one pass, constant memory).
2. *Transform and patch bank*: one pass over the training images accumulates the moments of
   the concatenated source features (``ensemble.transform.MomentAccumulator``: O(D^2)
   memory) and keeps the raw features of at most ``max_patches`` patches (the same number
   of random patches from every image, seeded); the standardise/balance/PCA block is
   fitted on the moments and then applied to the kept patches (it maps every patch on its
   own), so memory is bounded by ``max_patches x D`` floats whatever the training-set size.
4. *Head*: ``epochs`` passes over the bank in shuffled batches of ``batch_patches`` patches;
   Adam with weight decay 1e-5 (the paper's); learning rates 1e-3 (adaptor) and 2e-3
   (discriminator), ten times the paper's 1e-4 / 2e-4, because a CPU run affords ~150 steps
   where the paper takes thousands (160 epochs of 8-image batches); SimpleNet's truncated
   L1 loss on real vs Gaussian-noise patches.

Reproducibility: the head is initialised from ``seed``; epoch e shuffles with a generator
seeded from (seed, e) and draws its noise from (seed, e, 1); the bank's patches from (seed,
image index). On CPU a run resumed from a checkpoint therefore ends bitwise equal to an
uninterrupted one.

Files (``simplenet.store``): ``checkpoint.safetensors`` after every epoch,
``model.safetensors`` at the end; both record the run (config, sources, modality) and the
training data's content digest (``draem.train.dataset_digest``). A finished model of the same
run is reported as up to date, a checkpoint of the same run is resumed, anything else is
refused (:class:`~.store.StaleStateError`) unless ``restart``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from polar_detect import store as _store
from polar_detect.models.draem.train import dataset_digest
from polar_detect.models.ensemble.transform import GlobalTransform, MomentAccumulator, flatten_patches
from polar_detect.models.simplenet import store
from polar_detect.models.simplenet.model import (DEFAULT_BLUR_SIGMA, DEFAULT_HIDDEN, DEFAULT_MARGIN, DEFAULT_NOISE_STD, FeatureDetector,
                    SimpleNetHead, truncated_l1)

#: TrainConfig fields that do not change what is learned (left out of the run digest).
RUNTIME_KEYS = ("batch_images",)


class TrainingError(ValueError):
    """Training cannot start (bad setting, no data) or diverged (non-finite loss)."""


@dataclass
class TrainConfig:
    """Training settings; field ``x_y`` is the CLI option ``--x-y``."""

    pca_dim: int | None = None        # None: keep all channels
    balance: str = "source"
    whiten: bool = False              # PCA outputs scaled to unit variance
    hidden: int = DEFAULT_HIDDEN
    noise_std: float = DEFAULT_NOISE_STD
    margin: float = DEFAULT_MARGIN
    epochs: int = 12
    batch_patches: int = 4096
    max_patches: int = 50_000
    lr_adaptor: float = 1e-3
    lr_discriminator: float = 2e-3
    weight_decay: float = 1e-5
    blur_sigma: float = DEFAULT_BLUR_SIGMA
    seed: int = 0
    batch_images: int = 8

    def record(self) -> dict:
        d = asdict(self)
        for k in RUNTIME_KEYS:
            d.pop(k)
        return d


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def check_config(c: TrainConfig) -> None:
    """Every setting checked before anything is read or written; messages name the option."""
    checks = [("pca_dim", c.pca_dim is None or (isinstance(c.pca_dim, int) and c.pca_dim >= 1), "must be >= 1 (or 'all')"),
              ("balance", c.balance in ("source", "channel"), "choose source or channel"),
              ("hidden", c.hidden >= 1, "must be >= 1"),
              ("noise_std", _finite(c.noise_std) and c.noise_std > 0, "must be a finite number > 0"),
              ("margin", _finite(c.margin) and c.margin > 0, "must be a finite number > 0"),
              ("epochs", c.epochs >= 1, "must be >= 1"),
              ("batch_patches", c.batch_patches >= 2, "must be >= 2 (the discriminator's batch norm)"),
              ("max_patches", c.max_patches >= 2, "must be >= 2"),
              ("lr_adaptor", _finite(c.lr_adaptor) and c.lr_adaptor > 0, "must be a finite number > 0"),
              ("lr_discriminator", _finite(c.lr_discriminator) and c.lr_discriminator > 0, "must be a finite number > 0"),
              ("weight_decay", _finite(c.weight_decay) and c.weight_decay >= 0, "must be a finite number >= 0"),
              ("blur_sigma", _finite(c.blur_sigma) and 0 <= c.blur_sigma <= 64, "must be in 0..64 (0 = no blur)"),
              ("seed", c.seed >= 0, "must be >= 0"),
              ("batch_images", c.batch_images >= 1, "must be >= 1")]
    for key, ok, problem in checks:
        if not ok:
            raise TrainingError(f"--{key.replace('_', '-')} {getattr(c, key)}: {problem}")


def iter_images(dataset, batch: int, progress: bool = False, desc: str = ""):
    """Yield (images (B, C, H, W), items) in dataset order; a batch never mixes image sizes."""
    from polar_render.progress import progress as progress_bar
    buf, items = [], []
    bar = progress_bar(total=len(dataset), desc=desc, unit="img", leave=False, enabled=progress)
    for i in range(len(dataset)):
        it = dataset[i]
        img = it["image"].float()
        if buf and (len(buf) == batch or img.shape != buf[0].shape):
            yield torch.stack(buf), items
            bar.update(len(items))
            buf, items = [], []
        buf.append(img)
        items.append(it)
    if buf:
        yield torch.stack(buf), items
        bar.update(len(items))
    bar.close()


def source_specs(sources) -> list[dict]:
    """What defines each source for the run digest (before any fitting)."""
    return [s.config() for s in sources]


def fit_encodings(sources, dataset, batch: int, progress: bool) -> None:
    """Fit the (shared) input encoding of the backbone sources on the training images."""
    encs = [s.encoding for s in sources if getattr(s, "kind", "") == "backbone"
            and s.encoding is not None and s.encoding.needs_fit]
    if not encs:
        return
    first = encs[0]
    for imgs, _ in iter_images(dataset, batch, progress, "encoding"):
        first.update(imgs)
    first.finish(source="training images")
    for e in encs[1:]:
        e.scale, e.source, e.n_images, e.n_values = first.scale, first.source, first.n_images, first.n_values


def _keep(cfg: TrainConfig, n_images: int, i: int, hw: int) -> torch.Tensor:
    """Indices of the patches of training image ``i`` that go into the bank (seeded by image)."""
    per_image = max(1, math.ceil(cfg.max_patches / n_images))
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
    return torch.randperm(hw, generator=g)[:min(per_image, hw)].sort().values


@torch.no_grad()
def collect(sources, dataset, cfg: TrainConfig, progress: bool, moments: bool = True):
    """One pass over the training images: the moments of every concatenated source patch
    (when ``moments``) and the raw features of the bank's patches, the same number from every
    image -> (MomentAccumulator or None, (P, D) with P <= ``max_patches``)."""
    from polar_detect.models.ensemble.transform import resize_concat
    acc = MomentAccumulator(sum(s.out_channels for s in sources)) if moments else None
    kept, i = [], 0
    for imgs, _ in iter_images(dataset, cfg.batch_images, progress, "features"):
        f = resize_concat([s(imgs) for s in sources])
        if acc is not None:
            acc.update(flatten_patches(f))
        hw = f.shape[-2] * f.shape[-1]
        for b in range(len(f)):
            kept.append(f[b].reshape(f.shape[1], -1)[:, _keep(cfg, len(dataset), i, hw)].T.contiguous())
            i += 1
    return acc, torch.cat(kept)[:cfg.max_patches]


def make_optimizer(head: SimpleNetHead, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam([{"params": head.adaptor.parameters(), "lr": cfg.lr_adaptor},
                             {"params": head.discriminator.parameters(), "lr": cfg.lr_discriminator}],
                            weight_decay=cfg.weight_decay)


def run_epoch(head: SimpleNetHead, opt, bank: torch.Tensor, cfg: TrainConfig, epoch: int, out: Path,
              bar=None) -> dict:
    """One shuffled pass over the patch bank; returns the epoch's mean loss and accuracies."""
    head.train()
    order = torch.randperm(len(bank), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
    noise = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 7_919 * 1_000_033)
    steps = [order[s:s + cfg.batch_patches] for s in range(0, len(order), cfg.batch_patches)]
    if len(steps) > 1 and len(steps[-1]) < 2:
        steps.pop()
    sums = {"loss": 0.0, "real_acc": 0.0, "fake_acc": 0.0}
    for k, idx in enumerate(steps):
        real, fake = head.real_fake_scores(bank[idx], noise)
        loss = truncated_l1(real, fake, head.margin)
        if not bool(torch.isfinite(loss)):
            raise TrainingError(f"{out}: epoch {epoch + 1}/{cfg.epochs}, step {k + 1}/{len(steps)}: non-finite "
                                f"loss ({float(loss)}); lower the learning rates. No model was written "
                                f"(the last checkpoint, if any, is kept)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums["loss"] += float(loss.detach())
        sums["real_acc"] += float((real.detach() > 0).float().mean())
        sums["fake_acc"] += float((fake.detach() < 0).float().mean())
        if bar is not None:
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.4f}")
    head.eval()
    return {"epoch": epoch + 1, **{k: v / max(1, len(steps)) for k, v in sums.items()}, "steps": len(steps)}


def _checkpoint(model, opt, epoch: int, history: list, kind: str, header: dict) -> tuple[dict, dict]:
    tensors = {f"model.{k}": v for k, v in model.stored_state().items()}
    opt_t, opt_meta = _store.flatten_optimizer(opt.state_dict())
    tensors.update(opt_t)
    return tensors, {"format": store.CHECKPOINT_FORMAT, "epoch": epoch, "history": history,
                     "detector": store.detector_config(kind, model), "optimizer": opt_meta, **header}


def _restore(path: Path, download: bool):
    """(model, optimizer state tensors/meta, epoch, history, seconds) of a checkpoint."""
    tensors, meta = store.read(path, store.CHECKPOINT_FORMAT)
    _store.check_finite(tensors, path)
    model = store.build_detector(meta.get("detector"), path, download)
    store.load_stored(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    return model, tensors, meta


def train(sources, dataset, out_dir, cfg: TrainConfig | None = None, *, kind: str = "simplenet",
          modality: str = "intensity", restart: bool = False, progress: bool = True,
          stop_after_epoch: int | None = None, meta: dict | None = None, log=None,
          download: bool = False) -> tuple[FeatureDetector, dict]:
    """Train a detector on ``dataset`` (normal training items ``{"image", "id", ...}``, stored
    values) with the given unfitted ``sources``; returns ``(model in eval mode, model meta)``.
    ``stop_after_epoch`` ends early without writing the model (tests resume)."""
    cfg = cfg or TrainConfig()
    log = log or (lambda m: None)
    check_config(cfg)
    if len(dataset) == 0:
        raise TrainingError(f"{_where(dataset)}: no anomaly-free training images")
    d = sum(s.out_channels for s in sources)
    if cfg.pca_dim is not None and cfg.pca_dim > d:
        raise TrainingError(f"--pca-dim {cfg.pca_dim}: larger than the {d} channels of the sources")
    t0 = time.perf_counter()
    out = Path(out_dir)
    record = {"kind": kind, "modality": modality, "train_config": cfg.record(), "sources": source_specs(sources)}
    record = json.loads(json.dumps(record, allow_nan=False))      # tuples -> lists, as when read back
    data_digest = dataset_digest(dataset)
    action, saved = store.inspect_run(out, record, data_digest, restart)
    if action == "done":
        log(f"{out}: up to date (config and data match {store.MODEL_FILE}); not retrained")
        return store.load_model(out, download=download)
    header = {"run": record, "config_digest": store.digest(record), "dataset_digest": data_digest}
    start, history, spent = 0, [], 0.0
    if action == "resume":
        model, tensors, ck = _restore(out / store.CHECKPOINT_FILE, download)
        opt = make_optimizer(model.head, cfg)
        opt.load_state_dict(_store.unflatten_optimizer(tensors, ck.get("optimizer") or {}, opt.state_dict(),
                                                      out / store.CHECKPOINT_FILE))
        start, history = int(ck["epoch"]), list(ck.get("history", []))
        spent = float(ck.get("seconds", 0.0))
        log(f"{out}: resuming after epoch {start} of {cfg.epochs}")
        model.eval()
        _, raw = collect(model.sources, dataset, cfg, progress, moments=False)
    else:
        fit_encodings(sources, dataset, cfg.batch_images, progress)
        acc, raw = collect(sources, dataset, cfg, progress)
        transform = GlobalTransform.fit(acc, [s.out_channels for s in sources], cfg.pca_dim, cfg.balance,
                                        cfg.whiten)
        torch.manual_seed(cfg.seed)
        head = SimpleNetHead(transform.out_dim, cfg.hidden, cfg.noise_std, cfg.margin)
        model = FeatureDetector(sources, transform, head, cfg.blur_sigma)
        opt = make_optimizer(head, cfg)
    model.eval()
    with torch.no_grad():
        bank = model.transform.rows(raw)
    del raw
    out.mkdir(parents=True, exist_ok=True)
    end = cfg.epochs if stop_after_epoch is None else min(stop_after_epoch, cfg.epochs)
    from polar_render.progress import progress as progress_bar
    per_epoch = max(1, math.ceil(len(bank) / cfg.batch_patches))
    bar = progress_bar(total=(end - start) * per_epoch, desc=f"{kind} {out.name}", unit="step", enabled=progress)
    try:
        for epoch in range(start, end):
            history.append(run_epoch(model.head, opt, bank, cfg, epoch, out, bar))
            tensors, ck = _checkpoint(model, opt, epoch + 1, history, kind, header)
            ck["seconds"] = spent + time.perf_counter() - t0
            _store.write(out / store.CHECKPOINT_FILE, tensors, ck)
    finally:
        bar.close()
    from polar_render.io import write_json
    write_json(out / "train_config.json", asdict(cfg))
    info = {"history": history, "train_seconds": round(spent + time.perf_counter() - t0, 3),
            "train_images": len(dataset), "bank_patches": len(bank), "modality": modality,
            "channels": int(dataset[0]["image"].shape[0]), "transform": model.transform.info, **(meta or {})}
    if stop_after_epoch is None or end == cfg.epochs:
        store.save_model(out / store.MODEL_FILE, model, kind, header, info)
    return model.eval(), {**header, "meta": info}


def _where(dataset) -> str:
    from polar_detect.models.draem.train import describe_dataset
    return describe_dataset(dataset)
