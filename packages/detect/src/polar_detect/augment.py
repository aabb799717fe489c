"""Training-time augmentation that knows what each modality is (plain torch, no torchvision).

Brightness/contrast, horizontal/vertical flips, 90-degree rotations, Gaussian blur,
Gaussian noise and masking a rectangle out, each with its own probability. Every operation
follows the modality's row in :data:`polar_detect.modalities.TABLE`:

* flips and rotations move the pixels *and* transform the values (AoLP: a mirror negates
  the angle, a 90 deg rotation adds 90 deg; normals: components change sign / swap; Stokes
  S1, S2 like AoLP); an op the modality cannot undergo alone (a flip of pol45, which becomes
  pol135) is disabled for it and listed by :meth:`Augment.describe`;
* brightness (a gain, 1 +- ``brightness``) and contrast (about the image mean) change only
  illumination-like inputs (intensity, pol*; Stokes: the gain only, so DoLP/AoLP keep);
  DoLP, AoLP and normals do not depend on the illumination level and are left alone;
* noise has a standard deviation relative to the image's own amplitude (its 99.5th
  percentile of |x|; AoLP and normals: 1, their unit length);
* the masked rectangle gets the modality's "no light / no surface" value (AoLP (1, 0));
* the result is clamped to the physical bounds of each channel (intensity >= 0, DoLP in
  [0, 1]); signed channels (AoLP, normals, Stokes S1..S3) are never clamped.

Images are (C, H, W) or (B, C, H, W) of one modality in the dataset's representation
(stored physical values, or manifest-normalised ones: offset 0, positive scale, so signs
and bounds at 0 are the same). PatchCore applies it *before* its input encoding
(``models/patchcore/trainer.py``). Deterministic given the seed; every random number is drawn
whether or not the modality uses it, so two ``Augment`` objects with the same seed apply
the same geometry to co-registered images of different modalities.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from polar_detect import modalities as mods


def gaussian_kernel1d(sigma: float, size: int | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian; ``size`` defaults to 2*ceil(4 sigma)+1. Even sizes are
    rounded up to the next odd size so the filter stays centred (no half-pixel shift)."""
    if size is None:
        size = 2 * int(4 * sigma + 0.5) + 1
    if size % 2 == 0:
        size += 1
    x = torch.arange(size, dtype=torch.float32) - size // 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(img: torch.Tensor, sigma: float, size: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (..., H, W) with reflect padding."""
    shape = img.shape
    x = img.reshape(-1, 1, *shape[-2:]).float()
    k = gaussian_kernel1d(sigma, size).to(x.device)
    p = len(k) // 2
    mode = "reflect" if min(shape[-2:]) > p else "replicate"
    x = F.conv2d(F.pad(x, (p, p, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, p, p), mode=mode), k.view(1, 1, -1, 1))
    return x.reshape(shape)


@dataclass
class AugmentConfig:
    brightness: float = 0.15      # gain, uniform in [1-b, 1+b] (illumination-like inputs)
    contrast: float = 0.15        # multiplicative about the mean, uniform in [1-c, 1+c]
    p_color: float = 0.8
    p_hflip: float = 0.5
    p_vflip: float = 0.5
    p_rot90: float = 0.0          # square images only
    p_blur: float = 0.3
    blur_sigma: tuple = (0.3, 1.5)
    p_noise: float = 0.3
    noise_std: tuple = (0.005, 0.03)   # relative to the image amplitude (see module docstring)
    p_mask: float = 0.2
    mask_frac: tuple = (0.05, 0.25)   # side of the masked rectangle relative to the image side

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def amplitude(x: torch.Tensor, modality: str) -> float:
    """Noise reference of one image: 1 for unit-length kinds (AoLP, normals), else the 99.5th
    percentile of |x| (Stokes: of S0), at least 1e-12."""
    m = mods.spec(modality)
    if m.kind in ("axial_angle", "unit_vector"):
        return 1.0
    if m.kind == "stokes":
        x = x[..., : x.shape[-3] // mods.stokes_components(x.shape[-3]), :, :]
    v = x.detach().abs().reshape(-1).float()
    if v.numel() > 1 << 22:
        v = v[:: v.numel() // (1 << 22) + 1]
    return max(float(torch.quantile(v, 0.995)), 1e-12)


class Augment:
    """``Augment(cfg, seed, modality)(img)``: see the module docstring."""

    def __init__(self, cfg: AugmentConfig | None = None, seed: int = 0, modality: str = "intensity"):
        self.cfg = cfg or AugmentConfig()
        self.modality = modality
        self.spec = mods.spec(modality)
        self.ops = mods.allowed_ops(modality)
        wanted = {"hflip": self.cfg.p_hflip, "vflip": self.cfg.p_vflip, "rot90": self.cfg.p_rot90}
        self.disabled = [op for op, p in wanted.items() if p > 0 and op not in self.ops]
        self.g = torch.Generator().manual_seed(seed)

    def describe(self) -> str:
        note = (f"; {', '.join(self.disabled)} left out: they turn {self.modality} into another "
                f"polarizer image" if self.disabled else "")
        return f"{self.modality} ({self.spec.kind}){note}"

    def to_dict(self) -> dict:
        return {"modality": self.modality, "kind": self.spec.kind, "disabled": list(self.disabled),
                **self.cfg.to_dict()}

    def _u(self, lo=0.0, hi=1.0):
        return lo + (hi - lo) * float(torch.rand((), generator=self.g))

    def _photometric(self, x: torch.Tensor, contrast: float, gain: float) -> torch.Tensor:
        if not self.spec.photometric:
            return x
        if self.spec.kind != "stokes":               # contrast would break S0 >= |(S1, S2)|
            mean = x.mean()
            x = (x - mean) * contrast + mean
        return x * gain

    def _geometry(self, x: torch.Tensor, draws: dict) -> torch.Tensor:
        c = self.cfg
        for op, p in (("hflip", c.p_hflip), ("vflip", c.p_vflip), ("rot90", c.p_rot90)):
            if draws[op] < p and op in self.ops:
                if op == "rot90" and x.shape[-1] != x.shape[-2]:
                    raise mods.ModalityError(f"p_rot90 > 0 needs square images, got {tuple(x.shape[-2:])}")
                x = mods.transform(x, self.modality, op)
        return x

    def one(self, img: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        x = img.clone().float()
        d = {k: self._u() for k in ("color", "hflip", "vflip", "rot90", "blur", "noise", "mask")}
        contrast, gain = self._u(1 - c.contrast, 1 + c.contrast), self._u(1 - c.brightness, 1 + c.brightness)
        sigma, std = self._u(*c.blur_sigma), self._u(*c.noise_std)
        mh, mw, my, mx = (self._u(*c.mask_frac), self._u(*c.mask_frac), self._u(), self._u())
        if d["color"] < c.p_color:
            x = self._photometric(x, contrast, gain)
        x = self._geometry(x, d)
        if d["blur"] < c.p_blur:
            x = gaussian_blur(x, sigma)
        if d["noise"] < c.p_noise:
            x = x + torch.randn(x.shape, generator=self.g) * (std * amplitude(x, self.modality))
        if d["mask"] < c.p_mask:
            H, W = x.shape[-2:]
            h, w = max(1, int(H * mh)), max(1, int(W * mw))
            y0, x0 = int(my * (H - h + 1)), int(mx * (W - w + 1))
            x[..., y0: y0 + h, x0: x0 + w] = mods.empty_value(x, self.modality)
        return mods.clamp_physical(x, self.modality)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() == 4:
            return torch.stack([self.one(i) for i in img])
        return self.one(img)
