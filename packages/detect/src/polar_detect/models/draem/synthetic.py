"""Small in-memory dataset with contract items (README section 3), for tests and bench.

Normal images are smooth gradients plus low-frequency sinusoids in [0.15, 0.85];
anomalous ones carry a bright or dark square (mask = the square).
"""
from __future__ import annotations

import numpy as np
import torch


class SyntheticDataset(torch.utils.data.Dataset):
    """``n`` items ``{"image", "mask", "label", "id", "instance_mask"}`` of size ``size``.

    ``anomalous`` is the fraction of items (the last ones) with a square anomaly.
    """

    def __init__(self, n: int = 32, size: int = 64, channels: int = 3, anomalous: float = 0.0,
                 seed: int = 0):
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:size, 0:size] / size
        self.items = []
        n_anom = int(round(n * anomalous))
        for i in range(n):
            img = np.empty((channels, size, size), np.float32)
            for c in range(channels):
                a, b = rng.uniform(-0.2, 0.2, 2)
                f1, f2 = rng.uniform(1, 3, 2)
                p1, p2 = rng.uniform(0, 2 * np.pi, 2)
                img[c] = (0.5 + a * (xx - 0.5) + b * (yy - 0.5)
                          + 0.1 * np.sin(2 * np.pi * f1 * xx + p1)
                          + 0.1 * np.sin(2 * np.pi * f2 * yy + p2))
            mask = np.zeros((1, size, size), np.float32)
            label = int(i >= n - n_anom)
            if label:
                s = int(rng.integers(size // 8, size // 4 + 1))
                y0, x0 = rng.integers(2, size - s - 2, 2)
                img[:, y0:y0 + s, x0:x0 + s] = 0.95 if rng.uniform() < 0.5 else 0.05
                mask[:, y0:y0 + s, x0:x0 + s] = 1
            img = np.clip(img, 0.0, 1.0)
            self.items.append({"image": torch.from_numpy(img), "mask": torch.from_numpy(mask),
                               "label": label, "id": f"{i:06d}",
                               "instance_mask": torch.from_numpy(mask[0].astype(np.int64))})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]
