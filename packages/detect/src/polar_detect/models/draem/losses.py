"""DRÆM training loss (paper eq. 1-3): ``L2(I, I_r) + L_SSIM(I, I_r) + Focal(M_a, M)``.

Maintained implementations from kornia (pure torch, no torchvision import):

* SSIM: :func:`kornia.losses.ssim_loss` (11x11 Gaussian window, sigma 1.5, 'same' = reflect
  padding). kornia returns ``(1 - SSIM) / 2``; we multiply by 2 to get the paper's
  ``1 - SSIM`` (eq. 2 with lambda = 1, as in the reference implementation).
* Focal loss: :func:`kornia.losses.focal_loss` on the 2-class logits, gamma = 2,
  no alpha weighting (reference implementation: gamma 2, alpha None), averaged over pixels
  as the reference does. kornia's ``reduction="mean"`` also divides by the number of classes
  (it averages its one-hot-weighted (B, C, H, W) tensor), which halved the focal term before
  2026-11-30; we sum over classes (one non-zero term per pixel) and average over pixels.
"""
from __future__ import annotations

import torch
from kornia.losses import focal_loss, ssim_loss


def reconstruction_loss(rec: torch.Tensor, target: torch.Tensor, max_val: float = 1.0,
                        window: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L2, 1 - SSIM)`` between reconstruction and anomaly-free target."""
    l2 = torch.mean((rec - target) ** 2)
    ssim = 2.0 * ssim_loss(rec, target, window_size=window, max_val=max_val)
    return l2, ssim


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0
                      ) -> torch.Tensor:
    """Per-pixel mean focal loss ``-(1 - p_t)^gamma log p_t`` of 2-class ``logits`` (B,2,H,W)
    against a {0,1} ``mask`` (B,1,H,W) (``p_t``: softmax probability of the true class)."""
    target = (mask[:, 0] > 0.5).long()
    per_class = focal_loss(logits.float(), target, alpha=None, gamma=gamma, reduction="none")
    return per_class.sum(1).mean()


def draem_loss(rec: torch.Tensor, logits: torch.Tensor, image: torch.Tensor,
               mask: torch.Tensor, max_val: float = 1.0) -> dict[str, torch.Tensor]:
    """All terms and their sum (``"total"``)."""
    l2, ssim = reconstruction_loss(rec.float(), image.float(), max_val)
    focal = segmentation_loss(logits, mask)
    return {"l2": l2, "ssim": ssim, "focal": focal, "total": l2 + ssim + focal}
