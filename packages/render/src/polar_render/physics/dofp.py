"""The only DoFP code: the division-of-focal-plane polarizer layout, mosaic, demosaic
(super-pixel binning and bilinear) and the optional sensor simulation (off by default).
``polar_detect`` imports it for real captures (``dataset.polar_capture``) and for
``--from-mosaic`` builds, so render and detect agree on the layout by construction.

A DoFP sensor (Sony IMX250MZR / IMX264MZR, as in Lucid Phoenix/Triton or FLIR Blackfly S
"Polarsens" cameras) puts a wire-grid linear polarizer on every pixel; the orientations
repeat in a 2x2 super-pixel. ``SensorModel.layout[r][c]`` is the polarizer angle in degrees
(reference = image x axis, counter-clockwise on screen, as ``polarization.py``) of every pixel
(y, x) with ``y % 2 == r`` and ``x % 2 == c``. The default ``((90, 45), (135, 0))``, written
``"90,45,135,0"`` (row-major, :data:`DEFAULT_LAYOUT_TEXT`, the CLIs' ``--layout`` default),
is the Sony layout::

        col:   0    1
    row 0:    90   45
    row 1:   135    0

Signal chain of one pixel with polarizer angle theta (radiance in scene units)::

    I_theta   = 0.5 * (S0 + S1 cos 2theta + S2 sin 2theta)      # ideal polarizer (halves
                                                              # unpolarized light already)
    mu_e      = max(I_theta, 0) * polarizer_transmission * exposure_e_per_radiance
    e         = min(Poisson(mu_e), full_well_e)                # shot noise, full-well clip
              (= min(mu_e, full_well_e) when shot_noise is False)
    e        += Normal(0, read_noise_e)                        # read noise
    DN        = clip(round(e * gain_dn_per_e), 0, 2**bit_depth - 1)   -> uint16

so in the linear (unclipped) range ``E[DN] = I_theta * dn_per_radiance`` with
``dn_per_radiance = polarizer_transmission * exposure_e_per_radiance * gain_dn_per_e``
(stored in the ``info`` dict of :func:`simulate`, with its inverse ``radiance_per_dn``).
Not modelled: finite extinction ratio / crosstalk between neighbouring pixels, dark current,
PRNU/DSNU, black level offset, colour (Bayer x polarizer) DoFP sensors.

Defaults (IMX250MZR-like): full well 10500 e-, read noise 2.3 e-, 12-bit ADC, gain chosen so
that the full well maps onto the largest code (4095 / 10500 = 0.39 DN/e-).
``exposure_e_per_radiance`` defaults to 5000 e- per radiance unit: a polarizer image value
I_theta = 1 (e.g. S0 = 2 unpolarized, or a fully polarized S0 = 1 aligned with the pixel)
collects 5000 e- (48 % of the well, shot-noise SNR ~ 70), leaving ~2x headroom for specular
highlights at the renderer's unit-intensity lights; use :func:`auto_exposure` to meter a
specific image instead (same idea as ``render.exposure_scale``).

Demosaicing (:func:`demosaic`): bilinear per angle, as normalised convolution. Each angle
is sampled on a lattice of pitch 2; the zero-filled lattice is convolved with the tent
kernel [1, 2, 1]^T [1, 2, 1] / 4 and divided by the same convolution of the lattice's
indicator, so samples are kept exactly, in-between pixels are the mean of their 2 or 4
lattice neighbours, and the border (where neighbours are missing) averages those present
instead of darkening. Exact for images linear in x, y away from the 1-px border; for a
smooth image the interior error is at most 0.5 * (max|f_xx| + max|f_yy|) (second
differences in px), i.e. about 2 pi^2 A / P^2 for a sinusoid of amplitude A and period P px
(< 1 % of the range for P >= 48 px). On the last row/column, where one neighbour is
missing, the value is the nearest sample's: off by at most one pixel step in x plus one in
y. Each angle is interpolated at its own 1-px offset (instantaneous field of view error):
fine detail near edges shows false polarization, as with every per-channel DoFP
interpolation. :func:`superpixel_images` is the simplest alternative (2x2 binning, half
resolution, no interpolation).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any, Optional

import cv2
import numpy as np
from pydantic import Field, PlainValidator, ValidationError

from polar_render.config.fields import Bounds, Flag, Number, _Section, format_errors
from polar_render.physics.polarization import POLARIZER_ANGLES_DEG, polarizer_images

DEFAULT_LAYOUT: tuple[tuple[int, int], tuple[int, int]] = ((90, 45), (135, 0))
DEFAULT_LAYOUT_TEXT = "90,45,135,0"   # DEFAULT_LAYOUT row-major, as the CLIs take it
_TENT = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 4.0


def parse_layout(value) -> tuple[tuple[int, int], tuple[int, int]]:
    """"90,45,135,0" (row-major) or [[90, 45], [135, 0]] -> ((90, 45), (135, 0))."""
    if isinstance(value, str):
        vals = [int(v) for v in value.replace(" ", "").split(",") if v]
    else:
        vals = [int(v) for v in np.asarray(value).ravel()]
    if sorted(vals) != sorted(POLARIZER_ANGLES_DEG):
        raise ValueError(f"layout must be the four angles 0,45,90,135 in row-major 2x2 order, got {value!r}")
    return (vals[0], vals[1]), (vals[2], vals[3])


def format_layout(layout) -> str:
    """((90, 45), (135, 0)) -> "90,45,135,0" (the inverse of :func:`parse_layout`)."""
    return ",".join(str(a) for row in parse_layout(layout) for a in row)


def layout_offsets(layout=DEFAULT_LAYOUT) -> dict[int, tuple[int, int]]:
    """{angle: (row, col) inside the 2x2 super-pixel}."""
    lay = parse_layout(layout)
    return {lay[r][c]: (r, c) for r in range(2) for c in range(2)}


@dataclass
class SensorModel:
    """Parameters of the simulated DoFP sensor (see the module docstring for the chain).

    layout                  polarizer angle (degrees) of each pixel of the 2x2 super-pixel,
                            ``layout[row % 2][col % 2]``; default Sony IMX250MZR.
    full_well_e             full-well capacity, electrons.
    read_noise_e            Gaussian read noise, electrons RMS (0 disables it).
    bit_depth               ADC bits (1..16; output is uint16).
    gain_dn_per_e           conversion gain, DN per electron; None -> (2**bit_depth - 1) / full_well_e
                            (the full well lands on the largest code).
    polarizer_transmission  extra transmittance of the pixel polarizer for light along its axis
                            (1 = ideal). The factor 1/2 for unpolarized light is already in I_theta.
    exposure_e_per_radiance expected electrons per radiance unit of I_theta per pixel
                            (integration time x aperture x QE folded into one number).
    shot_noise              False: the expected electron count is used (for tests/debugging).
    """

    layout: tuple[tuple[int, int], tuple[int, int]] = DEFAULT_LAYOUT
    full_well_e: float = 10500.0
    read_noise_e: float = 2.3
    bit_depth: int = 12
    gain_dn_per_e: float | None = None
    polarizer_transmission: float = 1.0
    exposure_e_per_radiance: float = 5000.0
    shot_noise: bool = True

    def __post_init__(self):
        check_sensor_model({f.name: getattr(self, f.name) for f in fields(self)})
        self.layout = parse_layout(self.layout)

    @property
    def max_dn(self) -> int:
        return (1 << self.bit_depth) - 1

    @property
    def gain(self) -> float:
        """Effective conversion gain, DN per electron."""
        if self.gain_dn_per_e is not None:
            return float(self.gain_dn_per_e)
        return self.max_dn / float(self.full_well_e)

    @property
    def dn_per_radiance(self) -> float:
        """Mean DN per radiance unit of I_theta in the linear range."""
        return self.polarizer_transmission * self.exposure_e_per_radiance * self.gain

    @classmethod
    def from_dict(cls, d: dict | None) -> "SensorModel":
        """Build from a (YAML) mapping with the field names; unknown keys and bad values are
        a ValueError naming the key."""
        d = dict(d or {})
        check_sensor_model(d)
        return cls(**d)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["layout"] = [list(r) for r in self.layout]
        return out


_SM = {f.name: f.default for f in fields(SensorModel)}


def _dofp_layout(v):
    try:
        parse_layout(v)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{exc}") from None
    return v


class Dofp(_Section):
    """Scene key ``sensor.dofp``: the bounds of every :class:`SensorModel` field (the scene schema
    embeds this section; :func:`check_sensor_model` validates a model with it)."""
    enabled: Flag = Field(False, description="write raw_mosaic.png (off: exact data only)")
    layout: Annotated[Any, Bounds(kind="2x2 angles"), PlainValidator(_dofp_layout)] = Field(
        [list(r) for r in _SM["layout"]], description="polarizer angles of the 2x2 super-pixel, row-major "
                                                      "('90,45,135,0' or [[90, 45], [135, 0]])")
    full_well_e: Number(0.0, lo_open=True) = Field(_SM["full_well_e"], description="full-well capacity (e-)")
    read_noise_e: Number(0.0) = Field(_SM["read_noise_e"], description="read noise (e- RMS)")
    bit_depth: Number(1, 16, integer=True) = Field(_SM["bit_depth"], description="ADC bits")
    gain_dn_per_e: Optional[Number(0.0, lo_open=True)] = Field(_SM["gain_dn_per_e"],
                                                              description="DN per e- (default: full well -> top code)")
    polarizer_transmission: Number(0.0, 1.0, lo_open=True) = Field(_SM["polarizer_transmission"],
                                                                   description="pixel polarizer transmittance")
    exposure_e_per_radiance: Number(0.0, lo_open=True) = Field(_SM["exposure_e_per_radiance"],
                                                               description="e- per radiance unit")
    shot_noise: Flag = Field(_SM["shot_noise"], description="Poisson shot noise (false: expected counts)")



def check_sensor_model(values: dict) -> None:
    """Validate ``SensorModel`` field values (the bounds live in :class:`Dofp`); ValueError."""
    if "enabled" in values:
        raise ValueError("SensorModel: enabled: a scene-file switch (sensor.dofp.enabled), not a model parameter")
    try:
        Dofp.model_validate(values)
    except ValidationError as exc:
        raise ValueError(format_errors(exc, "SensorModel", Dofp)) from None


def mosaic(pol: dict[int, np.ndarray], layout=DEFAULT_LAYOUT) -> np.ndarray:
    """Four noiseless polarizer images {0: I0, 45: I45, 90: I90, 135: I135}, each (H, W) or
    (H, W, C), -> one mosaic of the same shape whose pixel (y, x) is taken from the image of
    angle ``layout[y % 2][x % 2]``. H and W need not be even."""
    shapes = {np.shape(pol[a]) for a in POLARIZER_ANGLES_DEG}
    if len(shapes) != 1:
        raise ValueError(f"polarizer images differ in shape: {shapes}")
    first = np.asarray(pol[POLARIZER_ANGLES_DEG[0]])
    if first.ndim not in (2, 3):
        raise ValueError(f"polarizer images must be (H, W) or (H, W, C), got {first.shape}")
    dtype = np.result_type(*(np.asarray(pol[a]).dtype for a in POLARIZER_ANGLES_DEG))
    raw = np.empty(first.shape, dtype=dtype)
    for angle, (r, c) in layout_offsets(layout).items():
        raw[r::2, c::2] = np.asarray(pol[angle])[r::2, c::2]
    return raw


def superpixel_images(raw: np.ndarray, layout=DEFAULT_LAYOUT) -> dict[int, np.ndarray]:
    """Simplest demosaic: 2x2 super-pixel binning. (H, W[, C]) mosaic -> {angle: (H//2, W//2[, C])}
    float64 (a trailing odd row/column is dropped)."""
    h, w = raw.shape[0] // 2 * 2, raw.shape[1] // 2 * 2
    raw = np.asarray(raw)[:h, :w].astype(np.float64)
    return {angle: raw[r::2, c::2] for angle, (r, c) in layout_offsets(layout).items()}


def demosaic(raw: np.ndarray, layout=DEFAULT_LAYOUT) -> dict[int, np.ndarray]:
    """(H, W) mono mosaic, H and W even -> {0: I0, 45: I45, 90: I90, 135: I135}, each
    float32 (H, W), bilinear (module docstring). ValueError for a colour or odd-sized input."""
    raw = np.asarray(raw)
    if raw.ndim != 2:
        raise ValueError(f"a DoFP mosaic is single-channel, got shape {raw.shape} (colour DoFP is not supported)")
    h, w = raw.shape
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise ValueError(f"a DoFP mosaic needs even height and width, got {raw.shape}")
    x = raw.astype(np.float64)
    out = {}
    for angle, (r, c) in layout_offsets(layout).items():
        ind = np.zeros((h, w), np.float64)
        ind[r::2, c::2] = 1.0
        num = cv2.filter2D(x * ind, -1, _TENT, borderType=cv2.BORDER_CONSTANT)
        den = cv2.filter2D(ind, -1, _TENT, borderType=cv2.BORDER_CONSTANT)
        out[angle] = (num / den).astype(np.float32)
    return out


def demosaic_channels(raw: np.ndarray, layout=DEFAULT_LAYOUT) -> dict[int, np.ndarray]:
    """A mosaic from :func:`simulate`: (H, W) or (H, W, C), one independent mono mosaic per
    channel -> {angle: float32 (H, W, C)}, each channel demosaiced by :func:`demosaic`."""
    raw = np.asarray(raw)
    planes = [raw] if raw.ndim == 2 else [raw[..., k] for k in range(raw.shape[-1])]
    per_channel = [demosaic(p, layout) for p in planes]
    return {a: np.stack([pc[a] for pc in per_channel], axis=-1) for a in POLARIZER_ANGLES_DEG}


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def expose(mosaic_radiance: np.ndarray, model: SensorModel | None = None, rng=None) -> np.ndarray:
    """Radiance mosaic (I_theta per pixel) -> raw DN, uint16, in [0, 2**bit_depth - 1].
    ``rng``: np.random.Generator or seed (None: fresh entropy, i.e. not reproducible)."""
    model = model or SensorModel()
    gen = _rng(rng)
    rad = np.nan_to_num(np.asarray(mosaic_radiance, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    mu = np.maximum(rad, 0.0) * (model.polarizer_transmission * model.exposure_e_per_radiance)
    # Cap the Poisson mean well above the full well (avoids overflow for absurd radiance);
    # anything above full well is clipped right after anyway.
    mu = np.minimum(mu, 4.0 * model.full_well_e + 1000.0)
    electrons = gen.poisson(mu).astype(np.float64) if model.shot_noise else mu
    electrons = np.minimum(electrons, model.full_well_e)
    if model.read_noise_e > 0:
        electrons = electrons + gen.normal(0.0, model.read_noise_e, size=electrons.shape)
    dn = np.rint(electrons * model.gain)
    return np.clip(dn, 0, model.max_dn).astype(np.uint16)


def auto_exposure(stokes: np.ndarray, model: SensorModel | None = None, percentile: float = 99.5,
                  fill: float = 0.9) -> float:
    """exposure_e_per_radiance that puts the ``percentile`` of the brightest polarizer image at
    ``fill`` x full well (analogue of ``render.exposure_scale``). Returns the model's value when
    the image is dark."""
    model = model or SensorModel()
    st = np.asarray(stokes, dtype=np.float64)
    i_max = 0.5 * (st[0] + np.hypot(st[1], st[2]))  # brightest polarizer orientation per pixel
    ref = float(np.percentile(i_max, percentile)) if i_max.size else 0.0
    if not ref > 1e-12:
        return model.exposure_e_per_radiance
    return fill * model.full_well_e / (ref * model.polarizer_transmission)


def simulate(stokes: np.ndarray, model: SensorModel | None = None, rng=None) -> tuple[np.ndarray, dict]:
    """Stokes (4, H, W, C) (or (4, H, W)) radiance -> (raw uint16 mosaic, info).

    The raw mosaic is (H, W) for C == 1 or a (4, H, W) input (a real mono DoFP frame), else
    (H, W, C) (one independent DoFP mosaic per channel, an idealisation of colour DoFP).
    ``info`` holds the model parameters and the conversion
    ``radiance ~= DN * radiance_per_dn`` (linear range, mean), i.e. ``DN ~= I_theta * dn_per_radiance``.
    """
    model = model or SensorModel()
    st = np.asarray(stokes)
    if st.ndim not in (3, 4) or st.shape[0] < 3:
        raise ValueError(f"stokes must be (4, H, W, C) or (4, H, W), got {st.shape}")
    pol = polarizer_images(st.astype(np.float64))
    raw = expose(mosaic(pol, model.layout), model, rng)
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    dn_per_rad = model.dn_per_radiance
    info = {
        **model.to_dict(),
        "gain_dn_per_e": model.gain,
        "max_dn": model.max_dn,
        "dn_per_radiance": dn_per_rad,
        "radiance_per_dn": 1.0 / dn_per_rad,
        "saturation_radiance": min(model.full_well_e, (model.max_dn + 0.5) / model.gain)
                               / (model.polarizer_transmission * model.exposure_e_per_radiance),
        "shape": list(raw.shape),
        "dtype": "uint16",
        "formula": "DN = clip(round((min(Poisson(I_theta*polarizer_transmission*exposure_e_per_radiance), "
                   "full_well_e) + N(0, read_noise_e)) * gain_dn_per_e), 0, 2**bit_depth-1); "
                   "pixel (y, x) has polarizer angle layout[y%2][x%2] degrees",
    }
    return raw, info
