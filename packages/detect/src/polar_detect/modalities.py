"""What each dataset modality *is*: the one table augmentation and value ranges read.

The dataset stores physical values (``dataset/encodings.py``); this module says what
those values mean geometrically, so that code which moves pixels around or picks a value
range treats every modality by its nature instead of as a grey image in [0, 1]:

===========  ============  ======================================================================
modality     kind          stored values, sign, and what an image flip / rotation does to them
===========  ============  ======================================================================
intensity    intensity     radiance S0 >= 0 (C channels); pixels move, values stay
pol0..pol135 polarizer     intensity behind a polarizer at angle a >= 0 (C channels); the
                           *polarizer angle* transforms like AoLP: a flip turns pol45 into
                           pol135 (pol0, pol90 stay), a 90 deg rotation swaps pol0 <-> pol90 and
                           pol45 <-> pol135; alone (without its partner image) such an image
                           cannot be flipped/rotated correctly (:class:`ModalityError`)
dolp         ratio         DoLP in [0, 1] (C channels); pixels move, values stay
aolp         axial_angle   AoLP phi, an orientation with period 180 deg, stored as
                           (cos 2phi, sin 2phi) (2C channels: every cos, then every sin), phi
                           from the image x axis (right), counter-clockwise *on screen* (towards
                           image up; the renderer's convention, ``polar_render.physics.polarization``).
                           A mirror negates phi: (c, s) -> (c, -s); a 90 deg rotation adds
                           90 deg: (c, s) -> (-c, -s) (either direction: the period is 180 deg)
normals      unit_vector   unit surface normals (3 channels x, y, z), OpenCV camera frame:
                           x right, y down, z forward (into the scene); visible surfaces have
                           z < 0; 0 = no surface. A horizontal flip negates x, a vertical flip
                           negates y, a 90 deg rotation (:func:`spatial` ``rot90``,
                           counter-clockwise on screen) maps (x, y) -> (y, -x); z stays
stokes       stokes        linear Stokes S0, S1, S2 (3C channels, component-major; S3 when
                           4C): S0 >= 0; S1 = S0 rho cos 2phi and S2 = S0 rho sin 2phi are
                           signed and transform like (cos 2phi, sin 2phi); S3 (circular) is
                           negated by a mirror and kept by a rotation
===========  ============  ======================================================================

Signed channels (AoLP's cos/sin, normals, Stokes S1..S3) are never clamped; non-negative
ones are clamped below at 0 and DoLP above at 1 (the physical bounds of the stored values).
``nominal`` is the range after the manifest normalisation (intensity-like: divided by the
train split's 99.5th percentile, so ~[0, 1]; DoLP, AoLP, normals unscaled); DRÆM uses it
for its anomaly textures and SSIM data range.

Image operations (``GEOMETRIC_OPS``): ``hflip`` mirrors the columns (``x.flip(-1)``),
``vflip`` the rows (``x.flip(-2)``), ``rot90`` is ``torch.rot90(x, 1, (-2, -1))``, which
turns the picture 90 deg counter-clockwise as displayed (row 0 on top); a scene point at
centred image coordinates (x, y) (x right, y down) moves to (y, -x).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GEOMETRIC_OPS = ("hflip", "vflip", "rot90")


class ModalityError(ValueError):
    """A modality this module does not know, or a transform it cannot apply to it."""


@dataclass(frozen=True)
class Modality:
    """One row of :data:`TABLE` (see the module docstring)."""

    name: str
    kind: str                       # intensity | polarizer | ratio | axial_angle | unit_vector | stokes
    signed: bool                    # holds signed channels (never clamped)
    nominal: tuple[float, float]    # value range after the manifest normalisation
    empty: str                      # the value of a pixel with no light / no surface
    photometric: bool               # a gain/contrast change is a physical illumination change


TABLE: dict[str, Modality] = {
    "intensity": Modality("intensity", "intensity", False, (0.0, 1.0), "0", True),
    **{f"pol{a}": Modality(f"pol{a}", "polarizer", False, (0.0, 1.0), "0", True) for a in (0, 45, 90, 135)},
    "dolp": Modality("dolp", "ratio", False, (0.0, 1.0), "0", False),
    "aolp": Modality("aolp", "axial_angle", True, (-1.0, 1.0), "(cos, sin) = (1, 0)", False),
    "normals": Modality("normals", "unit_vector", True, (-1.0, 1.0), "(0, 0, 0)", False),
    # normals predicted by the SfP network (polar_detect.models.sfp predict): same encoding as normals
    "normals_learned": Modality("normals_learned", "unit_vector", True, (-1.0, 1.0), "(0, 0, 0)", False),
    "stokes": Modality("stokes", "stokes", True, (-1.0, 1.0), "0", True),
}
SIGNED = frozenset(n for n, m in TABLE.items() if m.signed)


def spec(modality: str) -> Modality:
    """The table row of ``modality``; :class:`ModalityError` names the known ones."""
    try:
        return TABLE[modality]
    except KeyError:
        raise ModalityError(f"unknown modality {modality!r}; known: {', '.join(TABLE)}") from None


def nominal_range(modality: str) -> tuple[float, float]:
    """(lo, hi) of the manifest-normalised values (DRÆM texture range, SSIM data range)."""
    return spec(modality).nominal


# ------------------------------------------------------------------ channel layouts
def stokes_components(channels: int) -> int:
    """Number of Stokes components in a stokes image of ``channels`` channels (C = 1 or 3)."""
    if channels in (3, 9):
        return 3
    if channels in (4, 12):
        return 4
    raise ModalityError(f"stokes: {channels} channels is not 3 or 4 components of 1 or 3 colours")


def _groups(x: torch.Tensor, n: int, what: str) -> list[torch.Tensor]:
    """Split the channel axis (-3) into ``n`` equal component groups (views)."""
    c = x.shape[-3]
    if c % n:
        raise ModalityError(f"{what}: {c} channels do not split into {n} components")
    return list(x.split(c // n, dim=-3))


def channel_bounds(modality: str, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel physical (lo, hi) of the stored values; +-inf = unbounded (signed)."""
    kind = spec(modality).kind
    inf = math.inf
    if kind in ("intensity", "polarizer"):
        return [0.0] * channels, [inf] * channels
    if kind == "ratio":
        return [0.0] * channels, [1.0] * channels
    if kind == "stokes":
        per = channels // stokes_components(channels)
        return [0.0] * per + [-inf] * (channels - per), [inf] * channels
    return [-inf] * channels, [inf] * channels


def clamp_physical(x: torch.Tensor, modality: str) -> torch.Tensor:
    """Clamp (…, C, H, W) to the physical bounds of each channel; signed channels untouched."""
    lo, hi = channel_bounds(modality, x.shape[-3])
    shape = (-1, 1, 1)
    lo_t = torch.tensor(lo, dtype=x.dtype, device=x.device).view(shape)
    hi_t = torch.tensor(hi, dtype=x.dtype, device=x.device).view(shape)
    return torch.maximum(torch.minimum(x, hi_t), lo_t)


def empty_value(x: torch.Tensor, modality: str) -> torch.Tensor:
    """(C, 1, 1) values of a pixel with no light / no surface, for masking out a region."""
    v = torch.zeros(x.shape[-3], 1, 1, dtype=x.dtype, device=x.device)
    if spec(modality).kind == "axial_angle":
        v[: x.shape[-3] // 2] = 1.0                  # (cos 2phi, sin 2phi) = (1, 0)
    return v


# ------------------------------------------------------------------ geometry
def spatial(x: torch.Tensor, op: str) -> torch.Tensor:
    """Move the pixels of (…, H, W) by ``op`` (module docstring); values untouched."""
    if op == "hflip":
        return x.flip(-1)
    if op == "vflip":
        return x.flip(-2)
    if op == "rot90":
        return torch.rot90(x, 1, (-2, -1))
    raise ModalityError(f"unknown image operation {op!r}; choose from {', '.join(GEOMETRIC_OPS)}")


def polarizer_angle(modality: str) -> int:
    return int(modality[3:])


def transformed_polarizer(angle: int, op: str) -> int:
    """Polarizer angle (deg, same reference as AoLP) after ``op``: mirror a -> -a, rotation
    a -> a + 90, modulo 180."""
    return (-angle) % 180 if op in ("hflip", "vflip") else (angle + 90) % 180


def _doubled_angle(c: torch.Tensor, s: torch.Tensor, op: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos 2phi, sin 2phi)-like pair after ``op``: mirror phi -> -phi, rotation phi -> phi + 90."""
    if op in ("hflip", "vflip"):
        return c, -s
    return -c, -s


def _values(x: torch.Tensor, modality: str, op: str) -> torch.Tensor:
    """The per-pixel value change of ``op`` (pixels already moved)."""
    kind = spec(modality).kind
    if kind in ("intensity", "ratio"):
        return x
    if kind == "polarizer":
        a = polarizer_angle(modality)
        if transformed_polarizer(a, op) != a:
            raise ModalityError(
                f"{modality}: {op} turns it into pol{transformed_polarizer(a, op)}; transform the "
                f"polarizer images together (transform_set) or leave {op} out for this input")
        return x
    if kind == "axial_angle":
        c, s = _groups(x, 2, modality)
        return torch.cat(_doubled_angle(c, s, op), dim=-3)
    if kind == "unit_vector":
        if x.shape[-3] != 3:
            raise ModalityError(f"{modality}: expected 3 channels (x, y, z), got {x.shape[-3]}")
        nx, ny, nz = _groups(x, 3, modality)
        if op == "hflip":
            nx = -nx
        elif op == "vflip":
            ny = -ny
        else:                                         # rot90: (x, y) -> (y, -x)
            nx, ny = ny, -nx
        return torch.cat([nx, ny, nz], dim=-3)
    # stokes
    comps = _groups(x, stokes_components(x.shape[-3]), modality)
    comps[1], comps[2] = _doubled_angle(comps[1], comps[2], op)
    if len(comps) == 4 and op in ("hflip", "vflip"):
        comps[3] = -comps[3]                          # a mirror reverses circular handedness
    return torch.cat(comps, dim=-3)


def transform(x: torch.Tensor, modality: str, op: str) -> torch.Tensor:
    """Image ``x`` (…, C, H, W) of ``modality`` as the camera would see the scene mirrored or
    rotated by ``op``: pixels moved (:func:`spatial`) and vector/angle values transformed."""
    return _values(spatial(x, op), modality, op)


def allowed_ops(modality: str) -> tuple[str, ...]:
    """The ops :func:`transform` can apply to ``modality`` on its own."""
    if spec(modality).kind != "polarizer":
        return GEOMETRIC_OPS
    a = polarizer_angle(modality)
    return tuple(op for op in GEOMETRIC_OPS if transformed_polarizer(a, op) == a)


def transform_set(images: dict, op: str) -> dict:
    """``{modality: (…, C, H, W)}`` after ``op``; polarizer images are relabelled with their
    transformed angle (pol45 <-> pol135 under a flip), so each needs its partner present."""
    out = {}
    for name, x in images.items():
        if spec(name).kind == "polarizer":
            new = f"pol{transformed_polarizer(polarizer_angle(name), op)}"
            if new not in images:
                raise ModalityError(f"{name}: {op} turns it into {new}, which is not in the set")
            out[new] = spatial(x, op)
        else:
            out[name] = transform(x, name, op)
    return out
