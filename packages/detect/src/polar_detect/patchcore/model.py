"""SequentialPatchCore and PatchCore: shared extractor, scoring, threshold and save format.

Scoring (both): per patch, distance to the nearest memory point (k = 1) or mean of the k
nearest, computed in chunks of at most ``DIST_BUDGET`` distances; the (h, w) patch map is
upsampled (nearest) to the image size and blurred with a Gaussian (sigma 2; the paper's
kernel 16 is even, which cannot be centred on a pixel, so it is rounded up to 17 taps --
the extra tap weighs exp(-8) ~ 3e-4 of the centre); image score = map maximum.

Input encoding (``encoding.py``): with an :class:`InputEncoding` the model takes the
dataset's stored physical values and maps them into the backbone's input range itself,
with statistics fitted on its own training images (``fit``) and saved with it; without
one (``encoding=None``, models saved before issue 13) images go to the backbone as given.

Saved as safetensors: tensor ``memory`` + JSON metadata ``polar_detect`` holding the
extractor config, method, k, blur, coreset size, threshold, input encoding (with its
train-split statistics) and training history.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..augment import Augment, gaussian_blur
from ..coreset import SequentialCoreset, greedy_kcenter, meld, pairwise_dist
from ..features import FeatureConfig, FeatureExtractor
from .encoding import InputEncoding

FORMAT = "polar_detect.patchcore/1"
DIST_BUDGET = 1 << 22        # max distances held at once while scoring (16 MiB fp32)
TRAIN_DIST_BUDGET = 1 << 20  # ... while updating the sequential coreset (4 MiB fp32)


# ---------------------------------------------------------------------------- helpers
def as_image(item) -> torch.Tensor:
    img = item["image"] if isinstance(item, dict) else item
    img = torch.as_tensor(img).float()
    if img.dim() == 2:
        img = img[None]
    return img


def iter_batches(data: Sequence, batch_size: int, labels_only: int | None = None):
    """Yield (images (B, C, H, W), items) from a sequence of items (dicts or tensors)."""
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


def auroc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    ss = s[order]
    # average ranks over ties
    idx = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1], True])
    for a, b in zip(idx[:-1], idx[1:]):
        ranks[order[a:b]] = 0.5 * (a + b - 1) + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def best_f1_threshold(scores, labels) -> tuple[float | None, float]:
    """Threshold t maximising pixel F1 of (score >= t); (None, nan) without positives."""
    s = np.asarray(scores, dtype=np.float32).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    P = int(y.sum())
    if P == 0:
        return None, float("nan")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y, dtype=np.int64)
    fp = np.arange(1, len(s) + 1, dtype=np.int64) - tp
    last = np.r_[s[1:] != s[:-1], True]      # only cut between distinct scores
    f1 = np.where(last, 2 * tp / (tp + fp + P), -1.0)
    i = int(np.argmax(f1))
    return float(s[i]), float(f1[i])


class _Progress:
    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=desc, unit="img", leave=False)
            except ImportError:
                pass

    def update(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------- base
class _PatchCoreBase:
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
        self.extractor = (extractor or FeatureExtractor(feature_cfg, download=download)).to(self.device)
        self.k, self.blur_sigma, self.blur_kernel = int(k), float(blur_sigma), int(blur_kernel)
        self.batch_size = int(batch_size)
        self.memory: torch.Tensor | None = None
        self.threshold: float | None = None
        self.history: list[dict] = []
        self.info: dict = {}
        if isinstance(encoding, str):
            encoding = InputEncoding(encoding)
        elif isinstance(encoding, dict):
            encoding = InputEncoding.from_dict(encoding)
        self.encoding: InputEncoding | None = encoding

    @property
    def feature_cfg(self) -> FeatureConfig:
        return self.extractor.cfg

    # ------------------------------------------------------------------ encoding
    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        """Stored values (B, C, H, W) -> backbone input (identity without an encoding)."""
        return imgs if self.encoding is None else self.encoding(imgs)

    def fit_encoding(self, data: Sequence, progress: bool = False) -> InputEncoding | None:
        """Fit the encoding's statistics on the normal images of ``data`` (one pass over
        the images, constant memory); a no-op without an encoding or when already fitted."""
        enc = self.encoding
        if enc is None or not enc.needs_fit:
            return enc
        bar = _Progress(len(data), "encoding", progress)
        for imgs, items in iter_batches(data, self.batch_size, labels_only=0):
            enc.update(imgs)
            bar.update(len(items))
        bar.close()
        return enc.finish()

    # ------------------------------------------------------------------ features
    def patch_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, D, h, w)."""
        return self.extractor(imgs.to(self.device))

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def nn_distance(self, q: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n,): nearest-memory distance (mean over k nearest when k > 1)."""
        if self.memory is None:
            raise RuntimeError("model is not trained")
        mem = self.memory.to(q.device)
        k = min(self.k, len(mem))
        step = max(1, DIST_BUDGET // len(mem))
        out = torch.empty(len(q), device=q.device)
        for s in range(0, len(q), step):
            d = pairwise_dist(q[s: s + step], mem)
            out[s: s + step] = (d.min(1).values if k == 1
                                else d.topk(k, 1, largest=False).values.mean(1))
        return out

    @torch.no_grad()
    def predict(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> image scores (B,), anomaly maps (B, H, W)."""
        if imgs.dim() == 3:
            imgs = imgs[None]
        f = self.patch_features(self.encode(imgs))
        B, D, h, w = f.shape
        d = self.nn_distance(f.permute(0, 2, 3, 1).reshape(-1, D)).reshape(B, 1, h, w)
        m = F.interpolate(d, size=imgs.shape[-2:], mode="nearest")
        if self.blur_sigma > 0:
            m = gaussian_blur(m, self.blur_sigma, self.blur_kernel)
        m = m[:, 0].cpu()
        return m.flatten(1).max(1).values, m

    def predict_dataset(self, data: Sequence, progress: bool = False):
        """Yield (item, score, map) over a dataset."""
        bar = _Progress(len(data), "predict", progress)
        for imgs, items in iter_batches(data, self.batch_size):
            scores, maps = self.predict(imgs)
            for it, s, m in zip(items, scores, maps):
                yield it, float(s), m
            bar.update(len(items))
        bar.close()

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
        self.threshold, f1 = best_f1_threshold(np.concatenate(maps), np.concatenate(masks))
        self.info["val_pixel_f1"] = f1
        return self.threshold

    # ------------------------------------------------------------------ save / load
    def config(self) -> dict:
        return {"format": FORMAT, "method": self.method, "features": self.feature_cfg.to_dict(),
                "k": self.k, "blur_sigma": self.blur_sigma, "blur_kernel": self.blur_kernel,
                "batch_size": self.batch_size, "threshold": self.threshold,
                "memory_size": 0 if self.memory is None else len(self.memory),
                "encoding": None if self.encoding is None else self.encoding.to_dict(),
                "history": self.history, "info": self.info, **self._extra_config()}

    def _extra_config(self) -> dict:
        return {}

    def save(self, path: str | Path):
        from safetensors.torch import save_file
        if self.memory is None:
            raise RuntimeError("nothing to save: model is not trained")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"memory": self.memory.detach().cpu().contiguous()}, str(path),
                  metadata={"polar_detect": json.dumps(self.config())})
        return path


def load_model(path: str | Path, device: str = "cpu", download: bool = True,
               extractor: FeatureExtractor | None = None):
    """Load a saved SequentialPatchCore / PatchCore (safetensors; no pickle)."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            cfg = json.loads(f.metadata()["polar_detect"])
            mem = f.get_tensor("memory")
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path}: not a polar_detect PatchCore model ({e})") from e
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {cfg.get('format')!r}")
    cls = {"sequential": SequentialPatchCore, "original": PatchCore}[cfg["method"]]
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


# ---------------------------------------------------------------------------- Sequential
class SequentialPatchCore(_PatchCoreBase):
    """Online coreset of fixed size |M|: memory O(|M|^2 + |M| D + chunk |M|), not O(N P)."""

    method = "sequential"
    default_pool = "seq"

    def __init__(self, feature_cfg=None, coreset_size: int = 1000, chunk_size: int = 4096, **kw):
        super().__init__(feature_cfg, **kw)
        self.coreset_size, self.chunk_size = int(coreset_size), int(chunk_size)
        self.coreset: SequentialCoreset | None = None

    def _extra_config(self):
        return {"coreset_size": self.coreset_size, "chunk_size": self.chunk_size}

    def _new_coreset(self):
        chunk = max(1, min(self.chunk_size, TRAIN_DIST_BUDGET // self.coreset_size))
        return SequentialCoreset(self.coreset_size, self.extractor.dim, chunk, self.device)

    def fit(self, data: Sequence, epochs: int = 1, early_stop: bool = True,
            augment: Augment | None = None, progress: bool = False,
            on_epoch: Callable[[dict], None] | None = None):
        """Epochs over ``data`` (normal items only); epoch 0 sees the images as they are,
        later epochs are augmented when ``augment`` is given. Stops early after an epoch
        that changed nothing."""
        if self.coreset is None:
            self.coreset = self._new_coreset()
        self.fit_encoding(data, progress)
        for e in range(int(epochs)):
            t0 = time.perf_counter()
            self.coreset.reset_changes()
            bar = _Progress(len(data), f"epoch {len(self.history)}", progress)
            for imgs, items in iter_batches(data, self.batch_size, labels_only=0):
                if augment is not None and e > 0:      # stored values, modality-aware
                    imgs = augment(imgs)               # (polar_detect.augment), then encode
                imgs = self.encode(imgs)
                f = self.patch_features(imgs)
                self.coreset.update(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
                bar.update(len(items))
            bar.close()
            rec = {"epoch": len(self.history), "changes": self.coreset.changes,
                   "min_pairwise": self.coreset.min_pairwise(), "points": self.coreset.n,
                   "augmented": augment is not None and e > 0,
                   "seconds": round(time.perf_counter() - t0, 3)}
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
                                                     chunk_size=max(1, min(self.chunk_size, TRAIN_DIST_BUDGET // self.coreset_size)))
        return self.fit(data, epochs, **kw)

    @classmethod
    def meld(cls, models: list["_PatchCoreBase"], coreset_size: int | None = None,
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


# ---------------------------------------------------------------------------- original
class PatchCore(_PatchCoreBase):
    """Original PatchCore: every patch feature of every image, then greedy k-center."""

    method = "original"
    default_pool = "local"

    def __init__(self, feature_cfg=None, ratio: float = 0.01, proj_dim: int | None = 128,
                 seed: int = 0, **kw):
        super().__init__(feature_cfg, **kw)
        self.ratio, self.proj_dim, self.seed = float(ratio), proj_dim, seed

    def _extra_config(self):
        return {"ratio": self.ratio}

    def fit(self, data: Sequence, progress: bool = False, **_):
        t0 = time.perf_counter()
        self.fit_encoding(data, progress)
        bank = []
        bar = _Progress(len(data), "features", progress)
        for imgs, items in iter_batches(data, self.batch_size, labels_only=0):
            f = self.patch_features(self.encode(imgs))
            bank.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
            bar.update(len(items))
        bar.close()
        bank = torch.cat(bank)
        n = max(1, int(math.ceil(self.ratio * len(bank))))
        sel = greedy_kcenter(bank, n, self.proj_dim, self.seed)
        self.memory = bank[sel].clone()
        self.history.append({"patches": len(bank), "coreset": n,
                             "seconds": round(time.perf_counter() - t0, 3)})
        return self
