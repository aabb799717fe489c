"""PatchCore training loops around a :class:`~.model.PatchCoreModel`: fit, finetune, meld,
calibration; batched prediction over a dataset.

* :class:`SequentialPatchCore` (issue 6): constant-memory online coreset of fixed size |M|
  (``coreset.SequentialCoreset``); epochs over the normal training images, early stop after
  an epoch that changed nothing; ``finetune`` continues from the saved coreset; ``meld``
  merges the memories of several models with the same rule.
* :class:`PatchCore` (the original): every patch feature of every normal image, then the
  greedy k-center coreset of ``ratio`` of them (``coreset.greedy_kcenter``).

Both first fit the input encoding's statistics on the normal training images (one pass,
constant memory) and hold the scorer in ``self.model`` (extractor + memory bank + map head).
``calibrate`` stores the pixel-F1-maximising threshold on a validation split
(``polar_detect.metrics.f1_optimal_threshold``). Data: any sequence of items, a dict with
``"image"`` (C, H, W) of stored values (+ ``"label"``, ``"mask"``, ``"id"``) or a bare tensor.
Progress: ``polar_render.progress.progress`` (stderr). Saving/loading: ``store.py``.
"""
from __future__ import annotations

import json
import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from polar_detect.augment import Augment
from polar_detect.backbones import FeatureConfig, FeatureExtractor
from polar_detect.metrics import f1_optimal_threshold
from polar_detect.models.patchcore.coreset import SequentialCoreset, greedy_kcenter, meld
from polar_detect.models.patchcore.encoding import InputEncoding
from polar_detect.models.patchcore.model import PatchCoreModel
from polar_render.progress import progress as progress_bar

TRAIN_DIST_BUDGET = 1 << 20  # max distances held at once while updating the sequential coreset


def as_image(item) -> torch.Tensor:
    """An item (dict with ``"image"`` or a tensor) -> float image (C, H, W)."""
    img = item["image"] if isinstance(item, dict) else item
    img = torch.as_tensor(img).float()
    return img[None] if img.dim() == 2 else img


def iter_batches(data: Sequence, batch_size: int, labels_only: int | None = None):
    """Yield (images (B, C, H, W), items) from a sequence of items (dicts or tensors);
    ``labels_only``: skip dict items whose ``"label"`` differs."""
    buf, items = [], []
    for i in range(len(data)):
        it = data[i]
        if labels_only is not None and isinstance(it, dict) and int(it.get("label", 0)) != labels_only:
            continue
        buf.append(as_image(it))
        items.append(it)
        if len(buf) == batch_size:
            yield torch.stack(buf), items
            buf, items = [], []
    if buf:
        yield torch.stack(buf), items


def _bar(data: Sequence, desc: str, enabled: bool):
    return progress_bar(total=len(data), desc=desc, unit="img", enabled=enabled, leave=False)


def flatten_patches(f: torch.Tensor) -> torch.Tensor:
    """Patch features (B, D, h, w) -> (B h w, D)."""
    return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])


class PatchCoreDetector:
    """What both methods share: the scorer, encoding fit, prediction, calibration."""

    method = "base"
    default_pool = "seq"

    def __init__(self, feature_cfg: FeatureConfig | dict | None = None, k: int = 1,
                 blur_sigma: float = 2.0, blur_kernel: int = 16, batch_size: int = 8,
                 device: str = "cpu", download: bool = True,
                 extractor: FeatureExtractor | None = None,
                 encoding: InputEncoding | dict | str | None = None):
        if isinstance(feature_cfg, dict):
            feature_cfg = FeatureConfig.from_dict(feature_cfg)
        if feature_cfg is None:
            feature_cfg = FeatureConfig(pool=self.default_pool)
        self.device = torch.device(device)
        extractor = extractor or FeatureExtractor(feature_cfg, download=download)
        self.model = PatchCoreModel(extractor, None, encoding, k, blur_sigma, blur_kernel).to(self.device)
        self.batch_size = int(batch_size)
        self.threshold: float | None = None
        self.history: list[dict] = []
        self.info: dict = {}

    # ------------------------------------------------------------------ the scorer's parts
    @property
    def extractor(self) -> FeatureExtractor:
        return self.model.extractor

    @property
    def feature_cfg(self) -> FeatureConfig:
        return self.model.extractor.cfg

    @property
    def encoding(self) -> InputEncoding | None:
        return self.model.encoding

    @property
    def memory(self) -> torch.Tensor | None:
        """The memory bank (n, D), or None before training."""
        return self.model.memory if self.model.trained else None

    @memory.setter
    def memory(self, value: torch.Tensor) -> None:
        self.model.memory = value

    k = property(lambda self: self.model.k)
    blur_sigma = property(lambda self: self.model.blur_sigma)
    blur_kernel = property(lambda self: self.model.blur_kernel)

    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        """Stored values (B, C, H, W) -> backbone input (identity without an encoding)."""
        return self.model.encode(imgs)

    def patch_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Encoded images (B, C, H, W) -> (B, D, h, w)."""
        return self.model.patch_features(imgs)

    def extra_config(self) -> dict:
        """Method-specific fields of the saved configuration (``store.py``)."""
        return {}

    # ------------------------------------------------------------------ encoding
    def fit_encoding(self, data: Sequence, progress: bool = False) -> InputEncoding | None:
        """Fit the encoding's statistics on the normal images of ``data`` (one pass over
        the images, constant memory); a no-op without an encoding or when already fitted."""
        enc = self.encoding
        if enc is None or not enc.needs_fit:
            return enc
        with _bar(data, "encoding", progress) as bar:
            for imgs, items in iter_batches(data, self.batch_size, labels_only=0):
                enc.update(imgs)
                bar.update(len(items))
        return enc.finish()

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> image scores (B,), anomaly maps (B, H, W), on the CPU."""
        if imgs.dim() == 3:
            imgs = imgs[None]
        if not self.model.trained:
            raise RuntimeError("model is not trained")
        f = self.patch_features(self.encode(imgs))
        maps, _ = self.model.score_features(f, imgs.shape[-2:])
        maps = maps.cpu()
        return maps.flatten(1).max(1).values, maps

    def predict_dataset(self, data: Sequence, progress: bool = False):
        """Yield (item, score, map) over a dataset."""
        with _bar(data, "predict", progress) as bar:
            for imgs, items in iter_batches(data, self.batch_size):
                scores, maps = self.predict(imgs)
                for it, s, m in zip(items, scores, maps):
                    yield it, float(s), m
                bar.update(len(items))

    def calibrate(self, val: Sequence, progress: bool = False) -> float | None:
        """Store the pixel-F1-maximising threshold on a validation set (needs masks)."""
        maps, masks = [], []
        for it, _, m in self.predict_dataset(val, progress):
            if not isinstance(it, dict) or it.get("mask") is None:
                continue
            maps.append(m.numpy().ravel())
            masks.append(torch.as_tensor(it["mask"]).numpy().ravel() > 0.5)
        if not maps:
            self.threshold = None
            return None
        best = f1_optimal_threshold(np.concatenate(maps), np.concatenate(masks))
        self.threshold = best["threshold"]
        self.info["val_pixel_f1"] = float("nan") if best["f1"] is None else best["f1"]
        return self.threshold


class SequentialPatchCore(PatchCoreDetector):
    """Online coreset of fixed size |M|: memory O(|M|^2 + |M| D + chunk |M|), not O(N P)."""

    method = "sequential"
    default_pool = "seq"

    def __init__(self, feature_cfg=None, coreset_size: int = 1000, chunk_size: int = 4096, **kw):
        super().__init__(feature_cfg, **kw)
        self.coreset_size, self.chunk_size = int(coreset_size), int(chunk_size)
        self.coreset: SequentialCoreset | None = None

    def extra_config(self):
        return {"coreset_size": self.coreset_size, "chunk_size": self.chunk_size}

    def _chunk(self) -> int:
        return max(1, min(self.chunk_size, TRAIN_DIST_BUDGET // self.coreset_size))

    def _epoch(self, data: Sequence, augment: Augment | None, progress: bool) -> dict:
        """One pass of the coreset rule over the normal items; returns the history record."""
        t0 = time.perf_counter()
        self.coreset.reset_changes()
        with _bar(data, f"epoch {len(self.history)}", progress) as bar:
            for imgs, items in iter_batches(data, self.batch_size, labels_only=0):
                if augment is not None:               # stored values, modality-aware
                    imgs = augment(imgs)              # (polar_detect.augment), then encode
                self.coreset.update(flatten_patches(self.patch_features(self.encode(imgs))))
                bar.update(len(items))
        return {"epoch": len(self.history), "changes": self.coreset.changes,
                "min_pairwise": self.coreset.min_pairwise(), "points": self.coreset.n,
                "augmented": augment is not None, "seconds": round(time.perf_counter() - t0, 3)}

    def fit(self, data: Sequence, epochs: int = 1, early_stop: bool = True,
            augment: Augment | None = None, progress: bool = False,
            on_epoch: Callable[[dict], None] | None = None):
        """Epochs over ``data`` (normal items only); epoch 0 sees the images as they are,
        later epochs are augmented when ``augment`` is given. Stops early after an epoch
        that changed nothing."""
        if self.coreset is None:
            self.coreset = SequentialCoreset(self.coreset_size, self.extractor.dim, self._chunk(), self.device)
        self.fit_encoding(data, progress)
        for e in range(int(epochs)):
            rec = self._epoch(data, augment if e > 0 else None, progress)
            self.history.append(rec)
            if on_epoch:
                on_epoch(rec)
            if early_stop and rec["changes"] == 0:
                break
        self.memory = self.coreset.points.clone()
        return self

    def finetune(self, data: Sequence, epochs: int = 1, **kw):
        """Continue from the saved coreset with new data (same rule)."""
        if self.memory is None:
            raise RuntimeError("finetune needs a trained model")
        self.coreset = SequentialCoreset.from_points(self.memory.to(self.device), self.coreset_size,
                                                     chunk_size=self._chunk())
        return self.fit(data, epochs, **kw)

    @classmethod
    def meld(cls, models: list[PatchCoreDetector], coreset_size: int | None = None,
             epochs: int = 1) -> "SequentialPatchCore":
        """Meld the memories of several models (same extractor config) with the same rule.

        The models must encode the same modality the same way (or all have no encoding);
        the melded model keeps the first model's encoding statistics (its scale is the one
        predict applies), and the history records every model's."""
        cfgs = {json.dumps(m.feature_cfg.to_dict(), sort_keys=True) for m in models}
        if len(cfgs) != 1:
            raise ValueError(f"cannot meld models with different extractors: {sorted(cfgs)}")
        kinds = {None if m.encoding is None else (m.encoding.modality, m.encoding.kind, m.encoding.clip)
                 for m in models}
        if len(kinds) != 1:
            raise ValueError(f"cannot meld models with different input encodings: {sorted(map(str, kinds))}")
        m0 = models[0]
        size = int(coreset_size or max(len(m.memory) for m in models))
        out = cls(m0.feature_cfg, coreset_size=size, k=m0.k, blur_sigma=m0.blur_sigma,
                  blur_kernel=m0.blur_kernel, batch_size=m0.batch_size, device=str(m0.device),
                  extractor=m0.extractor,
                  encoding=None if m0.encoding is None else m0.encoding.to_dict())
        out.memory = meld([m.memory for m in models], size, epochs=epochs)
        out.history = [{"meld": [len(m.memory) for m in models], "size": size,
                        "encoding_scales": [None if m.encoding is None else m.encoding.scale
                                            for m in models]}]
        return out


class PatchCore(PatchCoreDetector):
    """Original PatchCore: every patch feature of every image, then greedy k-center."""

    method = "original"
    default_pool = "local"

    def __init__(self, feature_cfg=None, ratio: float = 0.01, proj_dim: int | None = 128,
                 seed: int = 0, **kw):
        super().__init__(feature_cfg, **kw)
        self.ratio, self.proj_dim, self.seed = float(ratio), proj_dim, seed

    def extra_config(self):
        return {"ratio": self.ratio}

    def fit(self, data: Sequence, progress: bool = False, **_):
        t0 = time.perf_counter()
        self.fit_encoding(data, progress)
        bank = []
        with _bar(data, "features", progress) as bar:
            for imgs, items in iter_batches(data, self.batch_size, labels_only=0):
                bank.append(flatten_patches(self.patch_features(self.encode(imgs))))
                bar.update(len(items))
        bank = torch.cat(bank)
        n = max(1, int(math.ceil(self.ratio * len(bank))))
        sel = greedy_kcenter(bank, n, self.proj_dim, self.seed)
        self.memory = bank[sel].clone()
        self.history.append({"patches": len(bank), "coreset": n,
                             "seconds": round(time.perf_counter() - t0, 3)})
        return self
