"""Datasets for the SfP network: inputs, ground truth, augmentation (flips, DoFP sensor noise).

Data source: datasets built by ``python -m polar_detect.dataset build`` (or imported with
``import-polar``), not raw render directories, because a dataset already carries the
intensity normalisation (manifest ``scale``), the splits (train renders vs held-out
renders: ``--render DIR:train`` / ``DIR:eval``), per-file checksums, and the part mask
(``object_mask``); renders become datasets with one command. Needed modalities:
``intensity``, ``dolp``, ``aolp`` (input) and, for training/evaluation, ``normals``
(ground truth) plus the samples' ``object_mask`` (loss and metrics on part pixels).

:class:`SfPSamples` reads the stored *physical* values (``PolarDataset(normalise=False)``),
so the DoFP simulation sees radiance; :func:`network_input` normalises afterwards with
the dataset's intensity scale (``I_un / scale``; rho, cos 2phi, sin 2phi are unchanged).

DoFP sensor (:func:`dofp_observe`): the project's sensor model (``polar_render.physics.dofp``:
polarizer mosaic, Poisson shot noise, read noise, full well, 12-bit ADC) is applied to the
Stokes vectors (S0, S0 rho cos 2phi, S0 rho sin 2phi, 0), and the mosaic is demosaiced as a
real capture is (``polar_render.physics.dofp.demosaic``, bilinear per angle,
then ``polar_modalities``). Exposure: ``sensor.auto_exposure`` (99.5th percentile of the
brightest polarizer image at 90 % of the full well) times a factor (< 1: darker, noisier).

Flips (exact mirror symmetries of the physics): a horizontal flip maps phi -> pi - phi and
n_x -> -n_x; a vertical flip phi -> -phi and n_y -> -n_y; each keeps cos 2phi and negates
sin 2phi (both together, a half turn, keep phi). They are applied before the sensor simulation, so the mosaic layout stays that
of the sensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from polar_detect.dataset.encodings import DatasetError

INPUT_MODALITIES = ("intensity", "dolp", "aolp")


@dataclass
class Sample:
    """Physical arrays of one dataset sample, channels first."""

    id: str
    intensity: np.ndarray            # (C, H, W) radiance (renders) or DN (captures)
    dolp: np.ndarray                 # (C, H, W) in [0, 1]
    aolp: np.ndarray                 # (2C, H, W) cos 2phi (C), sin 2phi (C)
    normals: np.ndarray | None       # (3, H, W) unit, 0 = no surface
    part: np.ndarray | None          # (H, W) bool, object_mask > 0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.intensity.shape[-2:])


class SfPSamples:
    """Samples of some splits of a dataset (``splits``: names or "all")."""

    def __init__(self, root, splits=("train",), ground_truth: bool = True):
        from polar_detect.dataset.torch_dataset import PolarDataset
        from polar_detect.dataset.manifest import manifest_path, read_manifest

        mods = list(INPUT_MODALITIES) + (["normals"] if ground_truth else [])
        splits = "all" if splits == "all" else tuple(splits)
        have = read_manifest(root)["modalities"]
        missing = [m for m in mods if m not in have]
        if missing:
            raise DatasetError(f"{manifest_path(root)}: no {', '.join(repr(m) for m in missing)} modality; the SfP "
                               f"network needs {', '.join(mods)} (dataset build --modalities {','.join(mods)})")
        self.ds = PolarDataset(root, splits, mods, normalise=False)
        self.manifest_file = self.ds.manifest_file
        self.root = self.ds.root
        self.colour = self.ds.channels("intensity")
        want = {"dolp": self.colour, "aolp": 2 * self.colour, "normals": 3}
        for m in mods[1:]:
            if self.ds.channels(m) != want[m]:
                raise DatasetError(f"{self.manifest_file}: modalities.{m}.channels is {self.ds.channels(m)}, "
                                   f"expected {want[m]} for {self.colour} colour channel(s)")
        info = self.ds.info["intensity"]
        self.scale, self.offset = float(info.get("scale", 1.0)), float(info.get("offset", 0.0))
        if not np.isfinite(self.scale) or self.scale <= 0:
            raise DatasetError(f"{self.manifest_file}: modalities.intensity.scale must be > 0, got {self.scale}")
        self.ground_truth = ground_truth
        self.splits = splits

    def __len__(self) -> int:
        return len(self.ds)

    @property
    def ids(self) -> list[str]:
        return [s["id"] for s in self.ds.samples]

    def require_parts(self) -> None:
        """Refuse (before any work) samples without an object mask: loss and metrics need it."""
        bad = [s["id"] for s in self.ds.samples if not s.get("object_mask")]
        if bad:
            raise DatasetError(f"{self.manifest_file}: {len(bad)} sample(s) have no object_mask (e.g. "
                               f"{', '.join(bad[:3])}); build the dataset from renders that write object_mask")
        if not self.ds.samples:
            raise DatasetError(f"{self.manifest_file}: no samples in split(s) {self.splits}")

    def part_mask(self, i: int) -> np.ndarray | None:
        from polar_render.io import read_png
        from polar_render.paths import contained

        rel = self.ds.samples[i].get("object_mask")
        if not rel:
            return None
        path = contained(self.root, rel, source=self.manifest_file, key=f"samples[{i}].object_mask")
        try:
            m = read_png(path)
        except OSError as exc:
            raise DatasetError(str(exc)) from None
        return (m if m.ndim == 2 else m[..., 0]) > 0

    def __getitem__(self, i: int) -> Sample:
        item = self.ds[i]
        x = item["image"].numpy()
        c = self.colour
        normals = x[4 * c:4 * c + 3] if self.ground_truth else None
        part = self.part_mask(i)
        if part is not None and part.shape != x.shape[-2:]:
            raise DatasetError(f"{self.root / self.ds.samples[i]['object_mask']}: mask is {part.shape}, "
                               f"images are {x.shape[-2:]}")
        return Sample(item["id"], x[:c], x[c:2 * c], x[2 * c:4 * c], normals, part)


# -- inputs ---------------------------------------------------------------------------------
def network_input(s: Sample, scale: float, offset: float = 0.0) -> torch.Tensor:
    """(4C, H, W) float32: I_un normalised, rho, cos 2phi, sin 2phi (``model`` docstring)."""
    x = np.concatenate([(s.intensity - offset) / scale, s.dolp, s.aolp], axis=0)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def flip(s: Sample, horizontal: bool, vertical: bool) -> Sample:
    """Mirror a sample (module docstring): arrays flipped, sin 2phi and n_x / n_y negated."""
    if not (horizontal or vertical):
        return s
    axes = tuple(a for a, f in ((-1, horizontal), (-2, vertical)) if f)
    c = s.dolp.shape[0]
    aolp = np.flip(s.aolp, axes).copy()
    if horizontal != vertical:           # one mirror negates sin 2phi; two (a half turn) keep it
        aolp[c:] *= -1
    normals = None
    if s.normals is not None:
        normals = np.flip(s.normals, axes).copy()
        if horizontal:
            normals[0] *= -1
        if vertical:
            normals[1] *= -1
    part = None if s.part is None else np.flip(s.part, axes).copy()
    return Sample(s.id, np.flip(s.intensity, axes).copy(), np.flip(s.dolp, axes).copy(), aolp, normals, part)


def dofp_observe(s: Sample, rng: np.random.Generator, exposure_factor: float = 1.0) -> Sample:
    """The sample as a DoFP polarization camera would record it (module docstring): new
    intensity (radiance), dolp, aolp; normals and part mask unchanged."""
    from polar_render.physics import dofp as sensor
    from polar_render.physics.dofp import demosaic
    from polar_detect.dataset.polar_capture import polar_modalities

    h, w = s.shape
    if h % 2 or w % 2:
        raise DatasetError(f"sample {s.id}: the DoFP simulation needs even image sizes, got {h}x{w}")
    c = s.dolp.shape[0]
    i0 = s.intensity.astype(np.float64)
    lin = i0 * s.dolp
    st = np.stack([i0, lin * s.aolp[:c], lin * s.aolp[c:], np.zeros_like(i0)])      # (4, C, H, W)
    st = np.moveaxis(st, 1, -1)                                                       # (4, H, W, C)
    base = sensor.SensorModel()
    model = sensor.SensorModel(exposure_e_per_radiance=sensor.auto_exposure(st, base) * float(exposure_factor))
    raw, info = sensor.simulate(st, model, rng)
    planes = [raw] if raw.ndim == 2 else [raw[..., k] for k in range(raw.shape[-1])]
    per_channel = [demosaic(p, model.layout) for p in planes]
    per_dn = np.float32(info["radiance_per_dn"])
    pol = {a: np.stack([pc[a] for pc in per_channel], axis=-1) * per_dn for a in (0, 45, 90, 135)}
    mods = polar_modalities(pol, ["intensity", "dolp", "aolp"])
    chw = {k: np.ascontiguousarray(np.moveaxis(v, -1, 0)) for k, v in mods.items()}
    return Sample(s.id, chw["intensity"], chw["dolp"], chw["aolp"], s.normals, s.part)


def crop_box(part: np.ndarray | None, shape: tuple[int, int], size: tuple[int, int],
             rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a ``size`` crop centred on a random part pixel (uniform over the
    image when there is no part), kept inside the image."""
    h, w = shape
    ch, cw = size
    if ch > h or cw > w:
        raise DatasetError(f"crop {ch}x{cw} is larger than the images ({h}x{w})")
    if part is not None and part.any():
        ys, xs = np.nonzero(part)
        k = int(rng.integers(len(ys)))
        cy, cx = int(ys[k]), int(xs[k])
    else:
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top = int(np.clip(cy - ch // 2, 0, h - ch))
    left = int(np.clip(cx - cw // 2, 0, w - cw))
    return top, left


def crop(s: Sample, top: int, left: int, size: tuple[int, int]) -> Sample:
    ch, cw = size
    sl = (Ellipsis, slice(top, top + ch), slice(left, left + cw))
    return Sample(s.id, s.intensity[sl], s.dolp[sl], s.aolp[sl],
                  None if s.normals is None else s.normals[sl], None if s.part is None else s.part[sl])
