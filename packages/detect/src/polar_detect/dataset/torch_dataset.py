"""PyTorch Dataset over a ``polar_detect.dataset`` directory (contract section 3).

``PolarDataset(root, split, modalities, size=None, crop=None)[i]`` ->
``{"image": FloatTensor (C, H, W), "mask": FloatTensor (1, H, W) in {0, 1}, "label": int,
"id": str, "instance_mask": LongTensor (H, W)}``.

* ``image``: the chosen modalities concatenated in the given order, each normalised as the
  manifest states (``(x - offset) / scale``; ``normalise=False`` returns the stored values).
* Geometry, identical for every modality and both masks: first resize to ``size`` =
  (H, W) (images bilinear with antialiasing, align_corners=False; masks nearest-exact),
  then centre-crop to ``crop`` = (h, w) (an int means square). AoLP is stored as
  (cos 2phi, sin 2phi), so bilinear resizing never averages across the +-pi/2 wrap.
* The manifest is read once in ``__init__`` by ``dataset.samples.load_samples`` (the reader
  evaluation uses too; ``entries`` holds the chosen samples); items only open their own image files, so
  the dataset pickles cheaply into DataLoader worker processes.
* ``normalisation``: optional per-modality overrides ``{modality: {"scale": s, "offset": o}}``
  or a path to another dataset whose normalisation to use (e.g. apply the synthetic
  training set's intensity scale to real captures).
* Checks before any item is read (``polar_detect.dataset.integrity``): every path the chosen
  samples name stays inside the dataset directory, each file exists, its header is within
  ``POLAR_MAX_IMAGE_PIXELS``, its size matches the sample's ``size``, its sha256 matches the
  manifest, and float images hold no NaN/inf. Items check again what they decode (finite,
  size). Errors are :class:`~polar_detect.dataset.encodings.DatasetError` naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.images import read_png, read_tiff
from polar_detect.dataset.integrity import check_samples
from polar_detect.dataset.manifest import SPLITS, read_manifest
from polar_detect.dataset.samples import load_samples


def _pair(x) -> tuple[int, int] | None:
    if x is None:
        return None
    if isinstance(x, int):
        return (x, x)
    h, w = x
    return int(h), int(w)


def _override(modality: str, v: dict) -> tuple[float, float]:
    """(scale, offset) of a normalisation override; both finite, scale > 0."""
    scale, offset = float(v.get("scale", 1.0)), float(v.get("offset", 0.0))
    if not (np.isfinite(scale) and scale > 0 and np.isfinite(offset)):
        raise DatasetError(f"normalisation.{modality}: scale {scale!r} / offset {offset!r}: expected a finite "
                           f"scale > 0 and a finite offset")
    return scale, offset


class PolarDataset(torch.utils.data.Dataset):
    """Items of one split (or several: ``split=("val", "test")``; ``"all"`` for every split)."""

    def __init__(self, root, split="train", modalities=("intensity",), size=None, crop=None,
                 normalise: bool = True, normalisation=None):
        m, self.manifest_file, by_id = load_samples(root)
        self.root = self.manifest_file.parent
        splits = SPLITS if split == "all" else ((split,) if isinstance(split, str) else tuple(split))
        for s in splits:
            if s not in SPLITS:
                raise DatasetError(f"unknown split {s!r}; choose from {', '.join(SPLITS)} or 'all'")
        if isinstance(modalities, str):
            modalities = [x.strip() for x in modalities.split(",") if x.strip()]
        self.modalities = list(modalities)
        if not self.modalities:
            raise DatasetError("no modality selected")
        for mod in self.modalities:
            if mod not in m["modalities"]:
                raise DatasetError(f"{self.manifest_file}: unknown modality {mod!r}; this dataset has "
                                   f"{', '.join(m['modalities'])}")
        self.info = {k: dict(v) for k, v in m["modalities"].items()}
        if normalisation is not None:
            if isinstance(normalisation, (str, Path)):
                other = read_manifest(normalisation)["modalities"]
                normalisation = {k: other[k] for k in self.modalities if k in other}
            for k, v in normalisation.items():
                if k in self.info:
                    self.info[k]["scale"], self.info[k]["offset"] = _override(k, v)
        self.split = split
        self.size, self.crop = _pair(size), _pair(crop)
        self.normalise = normalise
        self.classes = dict(m["classes"])
        self.entries = [s for s in by_id.values() if s.split in splits]   # dataset.samples.Sample
        chosen = [(s.index, s.e) for s in self.entries]
        self.samples = [s for _, s in chosen]
        self.paths = check_samples(self.manifest_file, m, chosen, self.modalities, progress=True)
        self.name = m.get("name", "")

    def __len__(self) -> int:
        return len(self.samples)

    def channels(self, modality: str) -> int:
        return int(self.info[modality]["channels"])

    @property
    def n_channels(self) -> int:
        return sum(self.channels(m) for m in self.modalities)

    @property
    def labels(self) -> list[int]:
        return [int(s["label"]) for s in self.samples]

    def _geometry(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """(N, C, H, W) -> resized + centre-cropped."""
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            if mode == "bilinear":
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
            else:
                x = F.interpolate(x, size=self.size, mode="nearest-exact")
        if self.crop is not None:
            h, w = x.shape[-2:]
            ch, cw = self.crop
            if ch > h or cw > w:
                raise DatasetError(f"crop {self.crop} is larger than the image ({h}, {w})")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top:top + ch, left:left + cw]
        return x

    def _read_image(self, i: int) -> torch.Tensor:
        """The chosen modalities of item ``i``, normalised and concatenated: (C, H, W)."""
        s, paths = self.samples[i], self.paths[i]
        parts, size = [], tuple(s["size"]) if s.get("size") else None
        for mod in self.modalities:
            arr = read_tiff(paths[mod])
            if size is not None and arr.shape[:2] != size:
                raise DatasetError(f"{paths[mod]}: image is {arr.shape[0]}x{arr.shape[1]} (HxW), the sample's "
                                   f"other images (manifest size) {size[0]}x{size[1]}")
            size = arr.shape[:2]
            if arr.shape[2] != self.channels(mod):
                raise DatasetError(f"{paths[mod]}: image has {arr.shape[2]} channels, the manifest declares "
                                   f"{self.channels(mod)} for {mod}")
            t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
            if self.normalise:
                info = self.info[mod]
                if info.get("offset", 0.0):
                    t = t - float(info["offset"])
                if float(info.get("scale", 1.0)) != 1.0:
                    t = t / float(info["scale"])
            parts.append(t)
        return torch.cat(parts, 0)

    def _read_mask(self, i: int, key: str, hw) -> np.ndarray | None:
        path = self.paths[i][key]
        if path is None:
            return None
        mk = read_png(path)
        if mk.shape[:2] != hw:
            raise DatasetError(f"{path}: {key} is {mk.shape[:2]}, the sample's images are {hw}")
        return mk

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        image = self._read_image(i)
        h, w = image.shape[-2:]
        mask = torch.zeros(1, h, w)
        inst = torch.zeros(h, w, dtype=torch.long)
        mk = self._read_mask(i, "mask", (h, w))
        if mk is not None:
            mask = torch.from_numpy((mk > 0).astype(np.float32))[None]
        im = self._read_mask(i, "instance_mask", (h, w))
        if im is not None:
            inst = torch.from_numpy(im.astype(np.int64))
        image = self._geometry(image[None], "bilinear")[0]
        mask = self._geometry(mask[None], "nearest")[0]
        inst = self._geometry(inst[None, None].double(), "nearest")[0, 0].long()
        return {"image": image.float().contiguous(), "mask": mask.contiguous(), "label": int(s["label"]),
                "id": s["id"], "instance_mask": inst.contiguous()}
