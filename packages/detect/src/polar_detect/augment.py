"""Training-time augmentation for Sequential PatchCore epochs (plain torch, no torchvision).

Brightness/contrast, horizontal/vertical flips, Gaussian blur, Gaussian noise and random
masking of a rectangle to black, each applied with its own probability. Images are
(C, H, W) or (B, C, H, W) floats, nominally in [0, 1]; output is clamped to [0, 1].
Deterministic given the generator. PatchCore applies it to the *encoded* image (after its
input encoding, ``patchcore/encoding.py``), i.e. in the backbone's range; note that flips
of normals/AoLP images do not transform the vectors/angles they encode.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


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
    brightness: float = 0.15      # additive, uniform in [-b, b]
    contrast: float = 0.15        # multiplicative about the mean, uniform in [1-c, 1+c]
    p_color: float = 0.8
    p_hflip: float = 0.5
    p_vflip: float = 0.5
    p_blur: float = 0.3
    blur_sigma: tuple = (0.3, 1.5)
    p_noise: float = 0.3
    noise_std: tuple = (0.005, 0.03)
    p_mask: float = 0.2
    mask_frac: tuple = (0.05, 0.25)   # side of the black rectangle relative to the image side

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Augment:
    def __init__(self, cfg: AugmentConfig | None = None, seed: int = 0):
        self.cfg = cfg or AugmentConfig()
        self.g = torch.Generator().manual_seed(seed)

    def _u(self, lo=0.0, hi=1.0):
        return lo + (hi - lo) * float(torch.rand((), generator=self.g))

    def one(self, img: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        x = img.clone().float()
        if self._u() < c.p_color:
            mean = x.mean()
            x = (x - mean) * self._u(1 - c.contrast, 1 + c.contrast) + mean
            x = x + self._u(-c.brightness, c.brightness)
        if self._u() < c.p_hflip:
            x = x.flip(-1)
        if self._u() < c.p_vflip:
            x = x.flip(-2)
        if self._u() < c.p_blur:
            x = gaussian_blur(x, self._u(*c.blur_sigma))
        if self._u() < c.p_noise:
            x = x + torch.randn(x.shape, generator=self.g) * self._u(*c.noise_std)
        if self._u() < c.p_mask:
            H, W = x.shape[-2:]
            h = max(1, int(H * self._u(*c.mask_frac)))
            w = max(1, int(W * self._u(*c.mask_frac)))
            y0 = int(self._u(0, H - h + 1))
            x0 = int(self._u(0, W - w + 1))
            x[..., y0: y0 + h, x0: x0 + w] = 0.0
        return x.clamp_(0.0, 1.0)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() == 4:
            return torch.stack([self.one(i) for i in img])
        return self.one(img)
