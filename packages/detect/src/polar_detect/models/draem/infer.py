"""DRÆM inference: anomaly map at input resolution and image score.

Map = softmax probability of the "anomalous" class from the discriminative network.
Score (paper Sec. 3.4) = max of the 21x21 mean-filtered map, computed at the network
resolution. Inputs whose size differs from the training size (or is not a multiple of
32) are resized bilinearly for the network and the map is resized back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from polar_render.progress import progress as progress_bar

from polar_detect.models.draem.model import DRAEM, SIZE_MULTIPLE, DRAEMScorer


def network_size(hw: tuple[int, int], trained: tuple[int, int] | None = None) -> tuple[int, int]:
    """Training size if known, else ``hw`` rounded to a multiple of 32."""
    if trained:
        return tuple(int(s) for s in trained)
    return tuple(max(SIZE_MULTIPLE, int(round(s / SIZE_MULTIPLE)) * SIZE_MULTIPLE) for s in hw)


@torch.no_grad()
def predict(model: DRAEM, images: torch.Tensor, trained_size: tuple[int, int] | None = None,
            out_size: tuple[int, int] | None = None, kernel: int = 21
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` (B,C,H,W) -> ``(maps (B,H',W') float32, scores (B,))``.

    ``H',W'`` = ``out_size`` or the input size.
    """
    model.eval()
    device = next(model.parameters()).device
    x = images.to(device, torch.float32)
    hw = tuple(x.shape[-2:])
    net = network_size(hw, trained_size)
    if net != hw:
        x = F.interpolate(x, size=net, mode="bilinear", align_corners=False)
    amap, score = DRAEMScorer(model, kernel)(x)
    target = tuple(out_size) if out_size else hw
    if tuple(amap.shape[-2:]) != target:
        amap = F.interpolate(amap[:, None], size=target, mode="bilinear",
                             align_corners=False)[:, 0]
    return amap.float().cpu(), score.float().cpu()


def predict_dataset(model: DRAEM, dataset, batch_size: int = 8,
                    trained_size: tuple[int, int] | None = None, progress: bool = False):
    """Yield ``(id, map (H,W), score)`` for every item of a contract dataset; a non-finite
    map or score raises ``ValueError`` naming the item."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         collate_fn=lambda b: b)
    loader = progress_bar(loader, desc="draem predict", unit="batch", enabled=progress)
    for batch in loader:
        maps, scores = predict(model, torch.stack([b["image"] for b in batch]), trained_size)
        for item, m, s in zip(batch, maps, scores):
            if not (bool(torch.isfinite(m).all()) and bool(torch.isfinite(s))):
                raise ValueError(f"item {item['id']}: non-finite anomaly map or score "
                                 f"(NaN/inf in the input or the model)")
            yield str(item["id"]), m, float(s)
