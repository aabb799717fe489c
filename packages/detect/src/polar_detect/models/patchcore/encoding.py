"""Backbone-visible input encodings for PatchCore (issue 13).

PatchCore's features come from an ImageNet backbone, which expects a 3-channel image in
[0, 1] that :class:`polar_detect.backbones.FeatureExtractor` then standardises with the
ImageNet mean/std. The dataset stores *physical* values (``dataset/encodings.py``): DoLP
of a mostly diffuse part has a median of ~0.02 and a 99th percentile of ~0.04, so fed
as it is the backbone sees an almost black image (every channel ~2 standard deviations
below the ImageNet mean) and its features barely react to DoLP structure. Every modality
PatchCore reads is therefore encoded into the backbone's range first:

==============  ========  ===================================================================
modality        kind      encoding (input channels -> output channels)
==============  ========  ===================================================================
intensity,      scale     ``x / q``, q = the ``percentile`` (default 99.5) of all values
pol0..pol135                (pixels and colour channels) of the TRAIN split; not clipped, so
                            highlights above q keep their contrast (the same statistic the
                            dataset uses for its intensity normalisation). C -> C (1 or 3).
dolp            scale     ``clip(rho / q, 0, 1)``, q = the ``percentile`` of train-split DoLP:
                            the train DoLP range [0, q] fills the backbone's [0, 1]; rare
                            spikes (specular edges, DoLP up to ~0.8) saturate at 1 instead of
                            compressing everything else into a few grey levels. C -> C: mono
                            DoLP is replicated to 3 channels by the extractor, RGB DoLP keeps
                            its colour channels (one shared q).
aolp            wheel     doubled-angle colour wheel: ``(c, s)`` = the mean over colour
                            channels of the stored ``(cos 2phi, sin 2phi)``, then channel
                            ``k = 0, 1, 2`` is ``0.5 + 0.5 (c cos(2 pi k / 3) + s sin(2 pi k / 3))``
                            = ``0.5 + 0.5 r cos(2 phi - 2 pi k / 3)``: a hue wheel over the
                            AoLP's period pi. It is linear in (cos, sin), so it is continuous
                            across the +-pi/2 wrap and commutes with bilinear resizing, and
                            invertible (phi = 0.5 atan2 of two channel differences). Where the
                            colour channels disagree (r < 1) it fades to grey. No statistic.
                            2C -> 3. Not weighted by DoLP: the phi input stays AoLP alone, as in
                            Polar-Ano (unlit pixels, stored as phi = 0, show as one fixed hue).
normals         affine    ``(n + 1) / 2``: unit normals [-1, 1] -> [0, 1] (background 0 ->
                            0.5 grey). No statistic. 3 -> 3.
==============  ========  ===================================================================

The statistics are fitted on the images the model trains on (the train split, normal
images only) at the resolution the model sees, from the *stored physical values*
(``PolarDataset(normalise=False)``), and saved in the model file; ``predict`` applies the
model's statistics, so a test set built with another normalisation (its own scale or
``dataset build --norm-from``) changes nothing. The percentile is computed from a
fixed log-spaced histogram (``BINS_PER_DECADE`` bins per decade over ``1e-8 .. 1e8``):
memory does not grow with the number of training images (Sequential PatchCore's
constant-memory training stays constant), and the value is numpy's
``percentile(values, p, method="lower")`` to within ~0.12 % (half a bin).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

KINDS = ("scale", "wheel", "affine")
KIND_OF = {"intensity": "scale", "pol0": "scale", "pol45": "scale", "pol90": "scale",
           "pol135": "scale", "dolp": "scale", "aolp": "wheel", "normals": "affine",
           "normals_learned": "affine"}   # polar_detect.models.sfp predict: same encoding as normals
CLIP_OF = {"dolp": True}          # scale kinds clipped to [0, 1]; intensity-like are not
DEFAULT_PERCENTILE = 99.5
LOG_LO, LOG_HI, BINS_PER_DECADE = -8, 8, 1000
N_BINS = (LOG_HI - LOG_LO) * BINS_PER_DECADE + 2   # + underflow (<= 1e-8) and overflow bins


class EncodingError(ValueError):
    """A modality PatchCore cannot encode, or data that does not fit the encoding."""


@dataclass
class InputEncoding:
    """One modality's map from stored physical values to the backbone's input range.

    ``fit(batches)`` once on the train split (``scale`` kinds only), then ``encoding(x)``
    maps (B, C, H, W) -> (B, C', H, W) with C' in {1, 3}."""

    modality: str
    kind: str = ""
    percentile: float = DEFAULT_PERCENTILE
    clip: bool = False
    scale: float | None = None          # fitted q (scale kinds)
    n_images: int = 0
    n_values: int = 0
    source: str = ""
    _hist: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not self.kind:
            if self.modality not in KIND_OF:
                raise EncodingError(
                    f"no backbone encoding for modality {self.modality!r}; PatchCore takes "
                    f"{', '.join(KIND_OF)} (or --encoding none)")
            self.kind = KIND_OF[self.modality]
            self.clip = CLIP_OF.get(self.modality, False)
        if self.kind not in KINDS:
            raise EncodingError(f"unknown encoding kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if not 0 < float(self.percentile) <= 100:
            raise EncodingError(f"percentile must be in (0, 100], got {self.percentile}")

    # ------------------------------------------------------------------ statistics
    @property
    def needs_fit(self) -> bool:
        return self.kind == "scale" and self.scale is None

    def out_channels(self, c_in: int) -> int:
        if self.kind == "wheel":
            if c_in % 2:
                raise EncodingError(f"aolp needs (cos 2phi, sin 2phi) channel pairs, got {c_in} channels")
            return 3
        return c_in

    def update(self, x: torch.Tensor) -> None:
        """Add the values of a batch (any shape) to the running histogram."""
        if self.kind != "scale":
            return
        v = torch.as_tensor(x).detach().float().reshape(-1).cpu()
        v = v[torch.isfinite(v)]
        idx = torch.floor((torch.log10(v.clamp_min(1e-30)) - LOG_LO) * BINS_PER_DECADE).long() + 1
        idx = idx.clamp_(0, N_BINS - 1)
        h = torch.bincount(idx, minlength=N_BINS)
        self._hist = h if self._hist is None else self._hist + h
        self.n_images += int(x.shape[0]) if x.dim() == 4 else 1
        self.n_values += int(v.numel())

    def finish(self, source: str = "") -> "InputEncoding":
        """Percentile of the accumulated values -> ``scale`` (1.0 if degenerate: all ~0)."""
        if self.kind != "scale":
            return self
        if self._hist is None or self.n_values == 0:
            raise EncodingError(f"{self.modality}: no training values to fit the encoding on")
        cum = torch.cumsum(self._hist, 0)
        # numpy's percentile(method="lower"): the order statistic floor((N - 1) p) (0-based)
        rank = math.floor((int(cum[-1]) - 1) * self.percentile / 100.0) + 1
        b = int(torch.searchsorted(cum, torch.tensor([rank], dtype=cum.dtype)))
        b = min(b, N_BINS - 1)
        if b == 0:                                   # percentile inside the underflow bin
            q, note = 1.0, f"degenerate: {self.percentile}th percentile <= 1e-8, scale 1"
        else:
            # geometric centre of bin b (bin 1 starts at 10**LOG_LO)
            q = 10.0 ** (LOG_LO + (b - 1 + 0.5) / BINS_PER_DECADE)
            note = ""
        self.scale = float(q)
        self.source = "; ".join(x for x in (source, f"{self.percentile}th percentile of "
                                f"{self.n_values} values from {self.n_images} train images", note) if x)
        self._hist = None
        return self

    def fit(self, batches, source: str = "") -> "InputEncoding":
        """``batches``: iterable of (B, C, H, W) tensors of stored values (normal train images)."""
        for x in batches:
            self.update(x)
        return self.finish(source)

    # ------------------------------------------------------------------ mapping
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x).float()
        if x.dim() == 3:
            x = x[None]
        if self.kind == "scale":
            if self.scale is None:
                raise EncodingError(f"{self.modality}: encoding used before it was fitted")
            y = x / self.scale
            return y.clamp(0.0, 1.0) if self.clip else y
        if self.kind == "affine":
            return (x + 1.0) * 0.5
        # wheel
        c_in = x.shape[1]
        self.out_channels(c_in)
        h = c_in // 2
        c, s = x[:, :h].mean(1, keepdim=True), x[:, h:].mean(1, keepdim=True)
        ang = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=x.dtype, device=x.device)
        return 0.5 + 0.5 * (c * ang.cos().view(1, 3, 1, 1) + s * ang.sin().view(1, 3, 1, 1))

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_hist", None)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "InputEncoding | None":
        if d is None:
            return None
        d = {k: v for k, v in dict(d).items() if k in cls.__dataclass_fields__ and k != "_hist"}
        return cls(**d)

    def describe(self) -> str:
        if self.kind == "scale":
            return (f"{self.modality}: x / {self.scale:.6g}{' clipped to [0, 1]' if self.clip else ''} "
                    f"(q = {self.source or 'not fitted'})")
        if self.kind == "wheel":
            return f"{self.modality}: doubled-angle colour wheel 0.5 + 0.5 cos(2phi - 2 pi k / 3)"
        return f"{self.modality}: (n + 1) / 2"


def wheel_decode(y: torch.Tensor) -> torch.Tensor:
    """Inverse of the ``wheel`` encoding: (B, 3, H, W) -> phi (B, 1, H, W) in [-pi/2, pi/2]."""
    k = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3], dtype=y.dtype, device=y.device)
    z = 2.0 * (y - 0.5)                        # r cos(2phi - theta_k)
    c = (2.0 / 3.0) * (z * k.cos().view(1, 3, 1, 1)).sum(1, keepdim=True)
    s = (2.0 / 3.0) * (z * k.sin().view(1, 3, 1, 1)).sum(1, keepdim=True)
    return 0.5 * torch.atan2(s, c)
