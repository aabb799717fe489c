"""PatchCoreModel: the PatchCore scorer as one ``torch.nn.Module`` (inference only).

``forward(images) -> (anomaly_map, image_score)``:

1. input encoding (``encoding.py``): the dataset's stored physical values (B, C, H, W) ->
   the backbone's input range, with the train-split statistics the model was fitted with;
   without one (``encoding=None``, models saved before issue 13) images go as given;
2. patch features (``polar_detect.backbones.FeatureExtractor``): (B, D, h, w);
3. per patch, the distance to the nearest memory point (k = 1) or the mean over the k
   nearest (Euclidean, feature units), computed in chunks of at most ``DIST_BUDGET``
   distances (one chunk while exporting to ONNX, so the graph does not depend on the batch);
4. the (h, w) patch map is upsampled (nearest) to the image size (H, W) and blurred with a
   Gaussian (sigma 2; the paper's kernel 16 is even, which cannot be centred on a pixel, so
   it is rounded up to 17 taps -- the extra tap weighs exp(-8) ~ 3e-4 of the centre);
5. image score = maximum of the map.

Outputs: ``anomaly_map`` (B, H, W) and ``image_score`` (B,), float32, on the model's device.
The memory bank is a registered buffer (moves with ``.to()``, is part of ``state_dict``);
an empty bank (0, D) means "not trained". No training loop, file IO or metrics here: see
``trainer.py``, ``store.py`` and ``polar_detect.metrics``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from polar_detect.augment import gaussian_blur
from polar_detect.backbones import FeatureExtractor
from polar_detect.models.patchcore.coreset import pairwise_dist
from polar_detect.models.patchcore.encoding import InputEncoding

DIST_BUDGET = 1 << 22        # max distances held at once while scoring (16 MiB fp32)


def as_encoding(encoding: InputEncoding | dict | str | None) -> InputEncoding | None:
    """An :class:`InputEncoding` from a modality name, its saved dict, or itself (None stays)."""
    if isinstance(encoding, str):
        return InputEncoding(encoding)
    if isinstance(encoding, dict):
        return InputEncoding.from_dict(encoding)
    return encoding


def knn_distance(q: torch.Tensor, memory: torch.Tensor, k: int = 1,
                 budget: int | None = DIST_BUDGET) -> torch.Tensor:
    """(n, D) queries -> (n,): distance to the nearest memory row (mean over the k nearest
    when k > 1), in chunks of at most ``budget`` distances (None: one chunk)."""
    k = min(int(k), len(memory))
    m2 = (memory * memory).sum(1)

    def nearest(chunk):
        d = pairwise_dist(chunk, memory, b2=m2)
        return d.min(1).values if k == 1 else d.topk(k, 1, largest=False).values.mean(1)

    if budget is None:                  # no slicing: the traced graph takes any number of rows
        return nearest(q)
    step = max(1, budget // len(memory))
    return torch.cat([nearest(q[s: s + step]) for s in range(0, len(q), step)])


class PatchCoreModel(nn.Module):
    """Extractor + memory bank + anomaly-map head (module docstring)."""

    def __init__(self, extractor: FeatureExtractor, memory: torch.Tensor | None = None,
                 encoding: InputEncoding | dict | str | None = None, k: int = 1,
                 blur_sigma: float = 2.0, blur_kernel: int = 16):
        super().__init__()
        self.extractor = extractor
        self.encoding = as_encoding(encoding)
        self.k, self.blur_sigma, self.blur_kernel = int(k), float(blur_sigma), int(blur_kernel)
        empty = torch.empty(0, extractor.dim)
        self.register_buffer("memory", empty if memory is None else memory.detach().clone())

    @property
    def trained(self) -> bool:
        return self.memory.numel() > 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Stored values (B, C, H, W) -> backbone input (identity without an encoding)."""
        return images if self.encoding is None else self.encoding(images)

    def patch_features(self, encoded: torch.Tensor) -> torch.Tensor:
        """Encoded images (B, C', H, W) -> patch features (B, D, h, w)."""
        return self.extractor(encoded.to(self.memory.device))

    def nn_distance(self, q: torch.Tensor) -> torch.Tensor:
        """(n, D) -> (n,): nearest-memory distance (mean over the k nearest when k > 1)."""
        if not self.trained:
            raise RuntimeError("model is not trained")
        budget = None if torch.onnx.is_in_onnx_export() else DIST_BUDGET
        return knn_distance(q, self.memory.to(q.device), self.k, budget)

    def score_features(self, f: torch.Tensor, size) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch features (B, D, h, w) -> (anomaly map (B, *size), image score (B,))."""
        b, d, h, w = f.shape
        dist = self.nn_distance(f.permute(0, 2, 3, 1).reshape(-1, d)).reshape(b, 1, h, w)
        m = F.interpolate(dist, size=tuple(size), mode="nearest")
        if self.blur_sigma > 0:
            m = gaussian_blur(m, self.blur_sigma, self.blur_kernel)
        m = m[:, 0]
        return m, m.flatten(1).max(1).values

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored values (B, C, H, W) (or (C, H, W)) -> (anomaly map (B, H, W), score (B,))."""
        if images.dim() == 3:
            images = images[None]
        f = self.patch_features(self.encode(images))
        return self.score_features(f, images.shape[-2:])
