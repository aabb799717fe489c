"""Tiny synthetic "brushed plate" dataset with obvious anomalies (tests and bench only).

Items follow the loader contract (README section 3): {"image": (3, H, W) in [0, 1],
"mask": (1, H, W) in {0, 1}, "label", "id", "instance_mask": (H, W)}. Each item is
generated on access from (seed, split, index), so the dataset itself holds no images and
cannot make training memory grow with its length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from polar_detect.augment import gaussian_blur


class SyntheticPlates:
    def __init__(self, n: int, size: int = 64, anomaly_fraction: float = 0.0, seed: int = 0,
                 split: str = "train"):
        self.n, self.size, self.frac, self.seed, self.split = n, size, anomaly_fraction, seed, split
        self._split_code = {"train": 1, "val": 2, "test": 3}.get(split, 4)

    def __len__(self):
        return self.n

    def _texture(self, g):
        s = self.size
        noise = torch.randn(1, 1, s, s + 32, generator=g)
        # brushed: strongly smoothed along x, a little along y
        k = torch.exp(-0.5 * (torch.arange(-12, 13) / 6.0) ** 2)
        streaks = F.conv2d(noise, (k / k.sum()).view(1, 1, 1, -1))[..., :s]
        streaks = gaussian_blur(streaks, 0.7)[0, 0]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        a = float(torch.rand((), generator=g)) * 2 * math.pi
        base = 0.55 + 0.05 * (math.cos(a) * xx + math.sin(a) * yy)
        return (base + 0.25 * streaks).clamp(0, 1)

    def __getitem__(self, i):
        if i < 0 or i >= self.n:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self._split_code * 100_003 + i)
        s = self.size
        img = self._texture(g)
        inst = torch.zeros(s, s, dtype=torch.long)
        label = int(float(torch.rand((), generator=g)) < self.frac)
        if label:
            yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
            cy, cx = (0.2 + 0.6 * torch.rand(2, generator=g)) * s
            r = s * (0.07 + 0.06 * float(torch.rand((), generator=g)))
            if float(torch.rand((), generator=g)) < 0.5:      # dark stain / dent
                blob = ((yy - cy) ** 2 + ((xx - cx) / 1.5) ** 2) < r * r
                img = torch.where(blob, img * 0.25, img)
            else:                                            # bright scratch across the grain
                ang = math.pi / 2 + (float(torch.rand((), generator=g)) - 0.5)
                d = (xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)
                along = -(xx - cx) * math.sin(ang) + (yy - cy) * math.cos(ang)
                blob = (d.abs() < max(1.5, s / 40)) & (along.abs() < 2.5 * r)
                img = torch.where(blob, torch.full_like(img, 0.97), img)
            inst[blob] = 1
        mask = (inst > 0).float()[None]
        return {"image": img[None].expand(3, s, s).clone(), "mask": mask, "label": label,
                "id": f"{self.split}_{i:05d}", "instance_mask": inst}


def write_dataset(out, n_train: int = 8, n_val: int = 4, n_test: int = 8, size: int = 64,
                  anomaly_fraction: float = 0.5, seed: int = 0):
    """Write the synthetic plates as a real dataset (``polar_detect.dataset`` format, one
    1-channel ``intensity`` modality, scale 1) through the dataset writer, so CLIs and
    loaders can be tested on the real on-disk contract. Returns the manifest."""
    from polar_detect.dataset.encodings import modality_entry
    from polar_detect.dataset.writer import DatasetWriter
    counts = {"train": (n_train, 0.0), "val": (n_val, anomaly_fraction), "test": (n_test, anomaly_fraction)}
    with DatasetWriter(out, "synthetic_plates", seed) as w:
        for split, (n, frac) in counts.items():
            plates = SyntheticPlates(n, size, frac, seed=seed, split=split)
            for i in range(n):
                it = plates[i]
                inst = it["instance_mask"].numpy().astype("uint16")
                w.add(it["id"], split, it["label"], "polar_detect.models.patchcore.synth",
                      {"intensity": it["image"][0].numpy()[..., None]},
                      mask=inst > 0 if it["label"] else None,
                      instance_mask=inst if it["label"] else None,
                      classes=["stain"] if it["label"] else [])
        return w.finish({"intensity": modality_entry("intensity", ["Y"])}, {"stain": "defect"})
