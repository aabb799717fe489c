"""Modalities of a dataset and their on-disk encodings (loss-free) and normalisations.

Every modality file in a dataset is a float32 TIFF ``(H, W, C)`` (channels last, zlib;
``(H, W)`` when C = 1),
holding the physical values below. Normalisation is *not* baked into the files: the
manifest states it per modality as ``x_norm = (x - offset) / scale`` and the loader
(``polar_detect.dataset.torch_dataset.PolarDataset``) applies it.

=============  ===========  ==============================================================
modality       channels     stored values (C = 3 for RGB renders, 1 for mono / real DoFP)
=============  ===========  ==============================================================
intensity      C            I_un = S0, radiance (renders) or DN (imports)
pol0..pol135   C            intensity behind a polarizer at 0/45/90/135 deg, same unit as
                            intensity (renders: the 16-bit PNG DN / exposure_scale)
stokes         3C           linear Stokes S0, S1, S2 (S0.c..., S1.c..., S2.c...); S3 is
                            dropped because polarization cameras cannot measure it
dolp           C            DoLP in [0, 1]
aolp           2C           (cos 2phi, sin 2phi) (cos for every colour channel first);
                            phi in radians from the image x axis, counter-clockwise
normals        3            unit normals, OpenCV camera frame (x right, y down, z forward)
=============  ===========  ==============================================================

Why (cos 2phi, sin 2phi) for AoLP: phi is an orientation with period pi; -pi/2 and +pi/2
are the same polarization, yet raw phi jumps from one to the other. On the doubled-angle
unit circle the two coincide, so interpolation (resizing), convolutions and distances
see no artificial edge. The map is invertible (phi = 0.5 * atan2(sin, cos)), so no
information is lost. Pixels without light (renderer: DoLP = AoLP = 0) encode (1, 0).

Intensity-like modalities (intensity, pol*, stokes) share one ``scale``: the 99.5th
percentile of S0 over the train split (or the bit depth maximum for 8/16-bit imports),
so that I0 + I90 = S0 still holds after normalisation. dolp, aolp, normals are already in
[-1, 1] and get scale 1.
"""
from __future__ import annotations

import numpy as np

from polar_detect.dataset.errors import DatasetError

POL_ANGLES = (0, 45, 90, 135)
MODALITIES = ("intensity", "aolp", "dolp", "normals", "pol0", "pol45", "pol90", "pol135", "stokes")
INTENSITY_LIKE = ("intensity", "pol0", "pol45", "pol90", "pol135", "stokes")
SCALE_PERCENTILE = 99.5

ENCODING_TEXT = {
    "intensity": "float32 TIFF (H, W, C): I_un = S0",
    "pol0": "float32 TIFF (H, W, C): intensity behind a linear polarizer at 0 deg (image x axis)",
    "pol45": "float32 TIFF (H, W, C): intensity behind a linear polarizer at 45 deg",
    "pol90": "float32 TIFF (H, W, C): intensity behind a linear polarizer at 90 deg",
    "pol135": "float32 TIFF (H, W, C): intensity behind a linear polarizer at 135 deg",
    "stokes": "float32 TIFF (H, W, 3C): linear Stokes S0, S1, S2 (S3 dropped: not measurable by DoFP cameras)",
    "dolp": "float32 TIFF (H, W, C): degree of linear polarization in [0, 1]",
    "aolp": ("float32 TIFF (H, W, 2C): (cos 2phi, sin 2phi), phi = AoLP in radians from the image x axis, "
             "counter-clockwise on screen; doubled-angle encoding removes the -pi/2 / +pi/2 wrap-around"),
    "normals": "float32 TIFF (H, W, 3): unit normals, OpenCV camera frame (x right, y down, z forward), 0 = no surface",
}


def check_modalities(names, available=MODALITIES) -> list[str]:
    """Validate a list (or comma-separated string) of modality names; keep order, drop duplicates."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out = []
    for n in names:
        if n not in available:
            raise DatasetError(f"unknown modality {n!r}; choose from {', '.join(available)}")
        if n not in out:
            out.append(n)
    if not out:
        raise DatasetError("no modality selected")
    return out


def as_hwc(x: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, C) unchanged; float32."""
    x = np.asarray(x, dtype=np.float32)
    return x[..., None] if x.ndim == 2 else x


def encode_aolp(phi: np.ndarray) -> np.ndarray:
    """AoLP (H, W[, C]) radians -> (H, W, 2C) float32 (cos 2phi for each channel, then sin 2phi)."""
    phi = as_hwc(phi)
    two = 2.0 * phi
    return np.concatenate([np.cos(two), np.sin(two)], axis=-1).astype(np.float32)


def decode_aolp(enc: np.ndarray) -> np.ndarray:
    """(H, W, 2C) (cos 2phi, sin 2phi) -> phi (H, W, C) in [-pi/2, pi/2]."""
    c = enc.shape[-1] // 2
    return (0.5 * np.arctan2(enc[..., c:], enc[..., :c])).astype(np.float32)


def stokes_linear(stokes_hwc: np.ndarray, n_components: int) -> np.ndarray:
    """Keep S0, S1, S2 of a (H, W, n_components*C) Stokes array stored component-major."""
    c = stokes_hwc.shape[-1] // n_components
    return np.ascontiguousarray(stokes_hwc[..., : 3 * c], dtype=np.float32)


def channel_names(modality: str, colour: list[str]) -> list[str]:
    """Names of the stored channels, e.g. ``cos2phi.R``."""
    if modality == "normals":
        return ["x", "y", "z"]
    if modality == "aolp":
        return [f"cos2phi.{c}" for c in colour] + [f"sin2phi.{c}" for c in colour]
    if modality == "stokes":
        return [f"S{k}.{c}" for k in range(3) for c in colour]
    return list(colour)


def modality_entry(modality: str, colour: list[str], scale: float = 1.0, scale_source: str = "",
                   units: str = "") -> dict:
    """Manifest description of one modality (contract section 2, plus machine-readable scale/offset)."""
    names = channel_names(modality, colour)
    if modality in INTENSITY_LIKE:
        scale = float(scale) if scale and np.isfinite(scale) and scale > 0 else 1.0
        text = f"x / {scale:.9g} ({scale_source or 'shared intensity scale'})"
    else:
        scale = 1.0
        text = {"dolp": "none (already in [0, 1])", "aolp": "none (cos/sin already in [-1, 1])",
                "normals": "none (unit vectors)"}[modality]
    return {"channels": len(names), "channel_names": names, "encoding": ENCODING_TEXT[modality],
            "normalisation": text, "scale": scale, "offset": 0.0, "units": units}


def robust_scale(values: np.ndarray, percentile: float = SCALE_PERCENTILE) -> float:
    """Percentile of a sample of intensity values; 1.0 if degenerate (all dark)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return 1.0
    s = float(np.percentile(v, percentile))
    return s if np.isfinite(s) and s > 0 else 1.0


def subsample(x: np.ndarray, max_values: int = 50_000) -> np.ndarray:
    """Deterministic strided subsample of an array's values (for the scale statistics)."""
    flat = np.asarray(x).ravel()
    step = max(1, flat.size // max_values)
    return flat[::step]
