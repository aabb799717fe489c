"""Feature sources of the feature-level ensemble (and of SimpleNet, its one-source case).

Every source is an ``nn.Module`` mapping a batch of *stored* dataset values (B, C, H, W)
(``PolarDataset(normalise=False)``) to a feature map (B, C_s, h_s, w_s), and describes itself
as JSON (:meth:`config`) plus tensors (its ``state_dict`` minus :attr:`external` prefixes),
so an ensemble file is self-contained apart from the ImageNet weights, which come from the
installed weight packages (``polar_detect.backbones``).

* :class:`BackboneSource` -- a frozen ImageNet backbone (EfficientNet-Lite0/1/2, ...): the
  modality's backbone encoding (``patchcore.encoding.InputEncoding``, fitted on the training
  images), then ``features.FeatureExtractor`` (chosen stages, pooled, deeper stages upsampled
  to the first, concatenated). Pool ``local`` (3x3, stride 1) = SimpleNet's/PatchCore's
  neighbourhood aggregation, stride 8 for ``s8``.
* :class:`DraemSource` -- the reconstructive encoder of a trained DRÆM (``draem train``):
  the input normalised as that DRÆM was trained ((x - offset) / scale of its training
  manifest), resized bilinearly to its training size, encoder run up to ``level`` (``s1``,
  ``s2``, ``s4``, ``s8``, ``s16``: widths b, 2b, 4b, 8b, 8b).
* :class:`PatchCoreSource` -- a trained (Sequential) PatchCore's nearest-neighbour distance
  map (1 channel, at its feature resolution, before its upsampling and blur): its own
  input encoding and extractor, distance to the nearest memory point (mean of the k nearest
  for k > 1), minus the image's median distance (``center="median"``, the default; ``none``
  keeps the raw distance). Why: on the ensemble's *training* images the distance is biased
  low (the memory was drawn from them; coreset members are at 0): on the station data the
  mean patch distance is 16.6 on training images and 18.6 on new normal images, a shift
  of about 7 noise standard deviations of the discriminator along this channel, so every
  new image looked anomalous. The median of an image is dominated by its normal patches,
  so subtracting it removes that level shift and keeps the local contrast of an anomaly
  (an anomaly covering most of an image would lose its level; the backbone sources still
  carry it).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from polar_detect.backbones import BACKBONES, FeatureConfig, FeatureExtractor
from polar_detect.models.patchcore.encoding import InputEncoding
from polar_detect.models.patchcore.model import knn_distance

DRAEM_LEVELS = {"s1": (0, 1), "s2": (2, 2), "s4": (4, 4), "s8": (6, 8), "s16": (8, 8)}  # index, width x
KINDS = ("backbone", "draem", "patchcore")


class SourceError(ValueError):
    """A source that cannot be built (bad spec, model file, or config)."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _encode(enc: InputEncoding | None, x: torch.Tensor) -> torch.Tensor:
    return x if enc is None else enc(x)


class BackboneSource(nn.Module):
    """Frozen ImageNet backbone features of the encoded input (see module docstring)."""

    kind = "backbone"
    external = ("extractor.backbone.",)

    def __init__(self, backbone: str = "efficientnet_lite0", stages=("s8", "s16"), pool: str = "local",
                 weights: str = "imagenet", encoding: InputEncoding | dict | None = None,
                 download: bool = False):
        super().__init__()
        if backbone not in BACKBONES:
            raise SourceError(f"unknown backbone {backbone!r}; choose from {', '.join(sorted(BACKBONES))}")
        known = BACKBONES[backbone][0].STAGES
        bad = [s for s in stages if s not in known]
        if bad or not stages:
            raise SourceError(f"backbone {backbone}: stages {list(stages)}: choose from {', '.join(known)}")
        if pool not in ("local", "seq"):
            raise SourceError(f"pool {pool!r}: choose local or seq")
        self.extractor = FeatureExtractor(FeatureConfig(backbone=backbone, stages=tuple(stages), pool=pool,
                                                        weights=weights), download=download)
        self.encoding = InputEncoding.from_dict(encoding) if isinstance(encoding, dict) else encoding

    @property
    def out_channels(self) -> int:
        return self.extractor.dim

    def config(self) -> dict:
        c = self.extractor.cfg
        return {"kind": self.kind, "backbone": c.backbone, "stages": list(c.stages), "pool": c.pool,
                "weights": c.weights, "encoding": None if self.encoding is None else self.encoding.to_dict()}

    @classmethod
    def from_config(cls, cfg: dict, download: bool = False) -> "BackboneSource":
        return cls(cfg["backbone"], tuple(cfg["stages"]), cfg["pool"], cfg.get("weights", "imagenet"),
                   cfg.get("encoding"), download)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(_encode(self.encoding, x))


class DraemSource(nn.Module):
    """Reconstructive-encoder features of a trained DRÆM (see module docstring)."""

    kind = "draem"
    external = ()

    def __init__(self, channels: int, width: int, level: str, size, scale: float, offset: float,
                 origin: dict | None = None):
        super().__init__()
        from polar_detect.models.draem.model import ReconstructiveNet
        if level not in DRAEM_LEVELS:
            raise SourceError(f"DRÆM level {level!r}: choose from {', '.join(DRAEM_LEVELS)}")
        idx, mult = DRAEM_LEVELS[level]
        net = ReconstructiveNet(channels, channels, width)
        self.encoder = nn.Sequential(*list(net.encoder.children())[:idx + 1])
        self.channels, self.width, self.level = int(channels), int(width), level
        self.size = tuple(int(s) for s in size)
        self.scale, self.offset = float(scale), float(offset)
        self._out = mult * self.width
        self.origin = origin or {}

    @property
    def out_channels(self) -> int:
        return self._out

    def config(self) -> dict:
        return {"kind": self.kind, "channels": self.channels, "width": self.width, "level": self.level,
                "size": list(self.size), "scale": self.scale, "offset": self.offset, "origin": self.origin}

    @classmethod
    def from_config(cls, cfg: dict, download: bool = False) -> "DraemSource":
        return cls(cfg["channels"], cfg["width"], cfg["level"], cfg["size"], cfg["scale"], cfg["offset"],
                   cfg.get("origin"))

    @classmethod
    def from_model_dir(cls, directory: str | Path, modality: str, level: str = "s8") -> "DraemSource":
        """The ``modality`` DRÆM of a ``draem train`` output directory (never unpickles)."""
        from polar_detect.models.draem.polar import CONFIG, PolarDRAEM, read_config
        d = Path(directory)
        cfg = read_config(d)
        if modality not in cfg["inputs"]:
            raise SourceError(f"{d / CONFIG}: has no DRÆM for {modality!r} (inputs {cfg['inputs']})")
        norm = (cfg.get("normalisation") or {}).get(modality)
        if not isinstance(norm, dict):
            raise SourceError(f"{d / CONFIG}: normalisation.{modality}: missing; the ensemble needs the scale "
                              f"and offset this DRÆM was trained with (retrain it with the current draem train)")
        model = PolarDRAEM.load(d, "cpu", [modality])
        net = model.models[modality]
        if model.size is None:
            raise SourceError(f"{d / CONFIG}: size: missing (the DRÆM's training size)")
        src = cls(net.channels, net.recon_width, level, model.size, float(norm.get("scale", 1.0)),
                  float(norm.get("offset", 0.0)),
                  origin={"model": str(d), "input": modality,
                          "models": (cfg.get("models") or {}).get(modality)})
        full = net.reconstructive.encoder.state_dict()
        src.encoder.load_state_dict({k: v for k, v in full.items() if k in src.encoder.state_dict()})
        return src.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.offset) / self.scale
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.encoder(x)


class PatchCoreSource(nn.Module):
    """Nearest-memory distance map of a trained PatchCore (see module docstring)."""

    kind = "patchcore"
    external = ("extractor.backbone.",)
    budget = 1 << 22   # distances held at once

    def __init__(self, features: dict, memory_size: int, dim: int, k: int = 1,
                 encoding: dict | None = None, origin: dict | None = None, download: bool = False,
                 center: str = "median"):
        super().__init__()
        if center not in ("median", "none"):
            raise SourceError(f"PatchCore source center {center!r}: choose median or none")
        self.center = center
        self.extractor = FeatureExtractor(FeatureConfig.from_dict(features), download=download)
        if self.extractor.dim != dim:
            raise SourceError(f"PatchCore memory has {dim} dims, its extractor gives {self.extractor.dim}")
        self.register_buffer("memory", torch.zeros(int(memory_size), int(dim)))
        self.k = int(k)
        self.encoding = InputEncoding.from_dict(encoding)
        self.origin = origin or {}

    @property
    def out_channels(self) -> int:
        return 1

    def config(self) -> dict:
        return {"kind": self.kind, "features": self.extractor.cfg.to_dict(), "memory_size": len(self.memory),
                "dim": int(self.memory.shape[1]), "k": self.k, "center": self.center,
                "encoding": None if self.encoding is None else self.encoding.to_dict(), "origin": self.origin}

    @classmethod
    def from_config(cls, cfg: dict, download: bool = False) -> "PatchCoreSource":
        return cls(cfg["features"], cfg["memory_size"], cfg["dim"], cfg.get("k", 1), cfg.get("encoding"),
                   cfg.get("origin"), download, cfg.get("center", "median"))

    @classmethod
    def from_model_file(cls, path: str | Path, download: bool = False, center: str = "median") -> "PatchCoreSource":
        from polar_detect.models.patchcore import load_model
        path = Path(path)
        model = load_model(path, "cpu", download=download)
        src = cls(model.feature_cfg.to_dict(), len(model.memory), model.memory.shape[1], model.k,
                  None if model.encoding is None else model.encoding.to_dict(),
                  origin={"model": str(path), "sha256": file_sha256(path), "method": model.method},
                  center=center)
        src.memory.copy_(model.memory.cpu())
        return src.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.extractor(_encode(self.encoding, x))
        b, d, h, w = f.shape
        q = f.permute(0, 2, 3, 1).reshape(-1, d)
        d = knn_distance(q, self.memory, self.k, self.budget).reshape(b, 1, h, w)
        if self.center == "median":   # lower median via sort (torch.median's definition; exports to ONNX)
            flat = d.flatten(1)
            d = d - flat.sort(1).values[:, (flat.shape[1] - 1) // 2].view(b, 1, 1, 1)
        return d


CLASSES = {"backbone": BackboneSource, "draem": DraemSource, "patchcore": PatchCoreSource}


def source_from_config(cfg: dict, download: bool = False) -> nn.Module:
    if not isinstance(cfg, dict) or cfg.get("kind") not in CLASSES:
        raise SourceError(f"source kind {cfg.get('kind') if isinstance(cfg, dict) else cfg!r}: "
                          f"expected one of {', '.join(KINDS)}")
    try:
        return CLASSES[cfg["kind"]].from_config(cfg, download)
    except (KeyError, TypeError) as e:
        raise SourceError(f"{cfg['kind']} source: incomplete config ({type(e).__name__}: {e})") from None
