"""DRÆM anomaly simulator (paper Sec. 3.3, Fig. 4).

A sample is corrupted as ``I_a = (1 - M) * I + (1 - beta) * M * I + beta * M * A`` where

* ``M`` is a binarised Perlin-noise mask (random scale ``2**k`` per axis, random rotation),
* ``A`` is a texture image from an anomaly source, randomly cropped, resized and passed
  through 3 random augmentations out of 10 (as in the authors' implementation),
* ``beta`` is the texture opacity, uniform in ``beta_range``.

With probability ``anomaly_free`` the sample is returned unchanged with an empty mask.
All randomness comes from the ``numpy.random.Generator`` the caller passes in, so a
sample is a pure function of ``(seed, epoch, index)`` in :class:`SimulatedDataset`.

Texture sources: a user folder (any images, e.g. DTD) or, offline, the texture-like images
bundled with scikit-image plus procedurally generated textures; nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from polar_render.io import read_image
from scipy import ndimage

#: scikit-image images that ship inside the wheel (no download); texture-like first.
SKIMAGE_TEXTURES = ("brick", "grass", "gravel", "immunohistochemistry", "hubble_deep_field",
                    "retina", "coffee", "moon", "coins", "rocket")
PROCEDURAL = ("fractal", "stripes", "checker", "speckle")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


# --------------------------------------------------------------------------- Perlin noise
def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator
                 ) -> np.ndarray:
    """2-D gradient (Perlin) noise of ``shape`` with ``res`` lattice cells per axis.

    Values lie roughly in [-1, 1] (scaled by sqrt(2) as in the DRÆM reference code, so the
    paper's threshold 0.5 keeps its meaning). Any ``shape`` works (no divisibility needed).
    """
    h, w = shape
    ry, rx = res
    ang = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    gy, gx = np.sin(ang), np.cos(ang)
    y = np.arange(h) * (ry / h)
    x = np.arange(w) * (rx / w)
    iy, ix = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - iy)[:, None], (x - ix)[None, :]
    iy, ix = iy[:, None], ix[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        return gy[iy + dy, ix + dx] * (fy - dy) + gx[iy + dy, ix + dx] * (fx - dx)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bot = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return (np.sqrt(2) * (top * (1 - v) + bot * v)).astype(np.float32)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, min_exp: int = 0,
                max_exp: int = 6, threshold: float = 0.5, rotate: float = 90.0) -> np.ndarray:
    """Binary {0, 1} float32 mask: thresholded, randomly rotated Perlin noise.

    Scales are ``2**k`` with ``k`` uniform in ``[min_exp, max_exp)`` independently per axis;
    rotation uniform in ``[-rotate, rotate]`` degrees (paper/reference: 6 octaves, 90 deg).
    """
    sy, sx = (2 ** int(rng.integers(min_exp, max_exp)) for _ in range(2))
    noise = perlin_noise(shape, (sy, sx), rng)
    if rotate:
        noise = ndimage.rotate(noise, rng.uniform(-rotate, rotate), reshape=False, order=1,
                               mode="constant", cval=0.0)
    return (noise > threshold).astype(np.float32)


# --------------------------------------------------------------------------- textures
def procedural_texture(kind: str, shape: tuple[int, int], rng: np.random.Generator
                       ) -> np.ndarray:
    """An RGB uint8 texture of ``shape`` generated from ``rng`` (one of :data:`PROCEDURAL`)."""
    h, w = shape
    if kind == "fractal":                          # multi-octave coloured Perlin noise
        img = np.zeros((h, w, 3), np.float32)
        for c in range(3):
            amp, res = 1.0, int(rng.integers(1, 5))
            for _ in range(4):
                img[..., c] += amp * perlin_noise(shape, (res, res), rng)
                amp, res = amp / 2, res * 2
        img -= img.min((0, 1))
        img /= np.maximum(img.max((0, 1)), 1e-6)
    elif kind == "stripes":
        ang, freq = rng.uniform(0, np.pi), rng.uniform(2, 40) / max(h, w)
        yy, xx = np.mgrid[0:h, 0:w]
        t = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(ang) + yy * np.sin(ang)))
        c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        img = t[..., None] * c0 + (1 - t[..., None]) * c1
    elif kind == "checker":
        cell = int(rng.integers(4, max(5, min(h, w) // 4)))
        yy, xx = np.mgrid[0:h, 0:w]
        t = ((yy // cell + xx // cell) % 2).astype(np.float32)
        c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        img = t[..., None] * c0 + (1 - t[..., None]) * c1
    elif kind == "speckle":
        img = rng.uniform(0, 1, 3) + rng.normal(0, rng.uniform(0.05, 0.3), (h, w, 3))
    else:
        raise ValueError(f"unknown procedural texture {kind!r}")
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _to_rgb(a: np.ndarray) -> np.ndarray:
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        a = (255 * (a - a.min()) / max(a.max() - a.min(), 1e-12)).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return np.ascontiguousarray(a[..., :3])


@lru_cache(maxsize=1)
def _skimage_textures() -> tuple[np.ndarray, ...]:
    """The bundled scikit-image images (read once per process, then shared)."""
    import skimage.data
    return tuple(_to_rgb(getattr(skimage.data, n)()) for n in SKIMAGE_TEXTURES)


class TextureBank:
    """Anomaly-source images: a folder of images, or the offline default.

    The default is the scikit-image bundled images in :data:`SKIMAGE_TEXTURES` plus the
    procedural kinds in :data:`PROCEDURAL` (each source equally likely).
    """

    def __init__(self, folder: str | Path | None = None, procedural: bool | None = None):
        self.images: list[np.ndarray] = []
        if folder is not None:
            files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FileNotFoundError(f"no images in texture folder {folder}")
            self.files = files                      # loaded lazily (DTD has 5640 images)
        else:
            self.files = []
            self.images = list(_skimage_textures())
        self.procedural = PROCEDURAL if (procedural if procedural is not None
                                         else folder is None) else ()

    def __len__(self) -> int:
        return len(self.files) + len(self.images) + len(self.procedural)

    def sample(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """A random texture, random-cropped (side 50-100 %) and resized to ``shape``."""
        k = int(rng.integers(len(self)))
        if k >= len(self.files) + len(self.images):
            return procedural_texture(self.procedural[k - len(self.files) - len(self.images)],
                                      shape, rng)
        if k < len(self.files):
            src = _to_rgb(read_image(self.files[k]))
        else:
            src = self.images[k - len(self.files)]
        sh, sw = src.shape[:2]
        s = rng.uniform(0.5, 1.0)
        ch, cw = max(8, int(sh * s)), max(8, int(sw * s))
        y0, x0 = int(rng.integers(0, sh - ch + 1)), int(rng.integers(0, sw - cw + 1))
        crop = Image.fromarray(src[y0:y0 + ch, x0:x0 + cw])
        return np.asarray(crop.resize((shape[1], shape[0]), Image.BILINEAR))


# --------------------------------------------------------------------------- augmentations
def _gamma(im, rng):
    a = np.asarray(im) / 255.0
    g = rng.uniform(0.5, 2.0, 3)                    # per channel
    return Image.fromarray((a ** g * 255).astype(np.uint8))


def _brightness(im, rng):
    a = np.asarray(im).astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-30, 30)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def _sharpness(im, rng):
    return ImageEnhance.Sharpness(im).enhance(rng.uniform(0.0, 2.0))


def _hue_saturation(im, rng):
    hsv = np.asarray(im.convert("HSV")).astype(np.int16)
    hsv[..., 0] = (hsv[..., 0] + rng.integers(-50, 51)) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] + rng.integers(-50, 51), 0, 255)
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def _solarize(im, rng):
    return ImageOps.solarize(im, int(rng.integers(32, 129)))


def _posterize(im, rng):
    return ImageOps.posterize(im, int(rng.integers(1, 9)))


def _invert(im, rng):
    return ImageOps.invert(im)


def _autocontrast(im, rng):
    return ImageOps.autocontrast(im)


def _equalize(im, rng):
    return ImageOps.equalize(im)


def _rotate(im, rng):
    return im.rotate(rng.uniform(-45, 45), resample=Image.BILINEAR)


AUGMENTATIONS = (_gamma, _brightness, _sharpness, _hue_saturation, _solarize, _posterize,
                 _invert, _autocontrast, _equalize, _rotate)


def augment_texture(tex: np.ndarray, rng: np.random.Generator, n: int = 3) -> np.ndarray:
    """Apply ``n`` distinct random augmentations (reference code: 3 of these 10)."""
    im = Image.fromarray(tex)
    for i in rng.choice(len(AUGMENTATIONS), size=n, replace=False):
        im = AUGMENTATIONS[i](im, rng)
    return np.asarray(im.convert("RGB"))


def texture_channels(tex: np.ndarray, channels: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (C, H, W) in [0, 1]: RGB, luminance, or cycled RGB."""
    t = tex.astype(np.float32).transpose(2, 0, 1) / 255.0
    if channels == 3:
        return t
    if channels == 1:
        return (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])[None]
    return t[np.arange(channels) % 3]


# --------------------------------------------------------------------------- simulator
@dataclass
class SimulatorConfig:
    """Settings of :class:`AnomalySimulator` (defaults = paper / reference code)."""

    anomaly_free: float = 0.5                    # probability of an unchanged sample
    beta_range: tuple[float, float] = (0.1, 1.0)  # texture opacity (paper Sec. 3.3)
    perlin_min_exp: int = 0
    perlin_max_exp: int = 6
    threshold: float = 0.5
    rotate: float = 90.0
    n_augment: int = 3
    texture_range: str | tuple[float, float] = "unit"  # "unit" = (0, 1); (lo, hi); or
    #                                    "image": per-channel [min, max] of the input image
    texture_dir: str | None = None
    max_mask_tries: int = 20
    extra: dict = field(default_factory=dict)


class AnomalySimulator:
    """Callable ``(image (C,H,W), rng) -> dict(image, mask (1,H,W), label, beta)``."""

    def __init__(self, config: SimulatorConfig | None = None, bank: TextureBank | None = None):
        self.config = config or SimulatorConfig()
        self.bank = bank or TextureBank(self.config.texture_dir)

    def mask(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """A non-empty Perlin mask (redrawn up to ``max_mask_tries`` times)."""
        c = self.config
        for _ in range(c.max_mask_tries):
            m = perlin_mask(shape, rng, c.perlin_min_exp, c.perlin_max_exp, c.threshold,
                            c.rotate)
            if m.any():
                return m
        return m

    def __call__(self, image, rng: np.random.Generator) -> dict:
        img = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
        img = img.astype(np.float32)
        c, h, w = img.shape
        cfg = self.config
        if rng.uniform() < cfg.anomaly_free:
            return {"image": img.copy(), "mask": np.zeros((1, h, w), np.float32), "label": 0,
                    "beta": 0.0}
        m = self.mask((h, w), rng)
        tex = texture_channels(augment_texture(self.bank.sample((h, w), rng), rng,
                                               cfg.n_augment), c)
        if cfg.texture_range == "image":
            lo = img.reshape(c, -1).min(1)[:, None, None]
            hi = img.reshape(c, -1).max(1)[:, None, None]
            tex = lo + tex * np.maximum(hi - lo, 1e-6)
        elif cfg.texture_range != "unit":
            lo, hi = cfg.texture_range
            tex = lo + tex * (hi - lo)
        beta = float(rng.uniform(*cfg.beta_range))
        out = img * (1 - m) + m * ((1 - beta) * img + beta * tex)
        return {"image": out.astype(np.float32), "mask": m[None], "label": int(m.any()),
                "beta": beta}


class SimulatedDataset(torch.utils.data.Dataset):
    """Wraps a dataset of contract items (``{"image": (C,H,W), ...}``) for DRÆM training.

    Item ``i`` of epoch ``e`` is simulated with ``default_rng([seed, e, i])``, so the
    stream does not depend on worker count or on resuming. Returns ``{"image": original,
    "augmented": corrupted, "mask": (1,H,W), "label": float, "index": i}`` (``index``
    names the samples of a batch in error messages)."""

    def __init__(self, base, simulator: AnomalySimulator, seed: int = 0):
        self.base, self.simulator, self.seed, self.epoch = base, simulator, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        image = torch.as_tensor(self.base[i]["image"], dtype=torch.float32)
        sim = self.simulator(image, np.random.default_rng([self.seed, self.epoch, i]))
        return {"image": image, "augmented": torch.from_numpy(sim["image"]),
                "mask": torch.from_numpy(sim["mask"]),
                "label": torch.tensor(float(sim["label"])), "index": i}
