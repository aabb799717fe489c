"""Plain torch DRÆM networks (Zavrtanik et al., ICCV 2021, Sec. 3).

* :class:`ReconstructiveNet` - encoder-decoder without skip connections that maps a
  (possibly corrupted) image back to an anomaly-free reconstruction.
* :class:`DiscriminativeNet` - U-Net on ``concat(input, reconstruction)`` that outputs
  two-class logits (normal / anomalous) per pixel.
* :class:`DRAEM` - both together; ``forward`` returns ``(reconstruction, logits)``.

Widths are configurable: the paper uses 128 (reconstructive) and 64 (discriminative);
:data:`WIDTHS` also has a ``small`` preset for CPU work. The module holds no training
logic (see :mod:`polar_detect.models.draem.train`).
"""
from __future__ import annotations

import torch
from torch import nn

#: (reconstructive base width, discriminative base width) per preset name.
WIDTHS = {"paper": (128, 64), "small": (16, 8)}

#: Input sides must be a multiple of this (five 2x poolings in the discriminative net).
SIZE_MULTIPLE = 32


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _block(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU layers (``cin -> mid -> cout``)."""
    mid = cout if mid is None else mid
    return nn.Sequential(*_conv_bn_relu(cin, mid), *_conv_bn_relu(mid, cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    """Bilinear 2x upsampling followed by a conv-BN-ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         *_conv_bn_relu(cin, cout))


class ReconstructiveNet(nn.Module):
    """Encoder-decoder (4 poolings, no skips) reconstructing the anomaly-free image."""

    def __init__(self, in_channels: int = 3, out_channels: int | None = None, width: int = 128):
        super().__init__()
        b = width
        out_channels = in_channels if out_channels is None else out_channels
        widths = [b, 2 * b, 4 * b, 8 * b, 8 * b]
        enc, cin = [], in_channels
        for i, w in enumerate(widths):
            if i:
                enc.append(nn.MaxPool2d(2))
            enc.append(_block(cin, w))
            cin = w
        self.encoder = nn.Sequential(*enc)
        dec = []
        for w_in, w_out in [(8 * b, 4 * b), (4 * b, 2 * b), (2 * b, b), (b, b)]:
            dec += [_up(w_in, w_in), _block(w_in, w_out, mid=w_in)]
        self.decoder = nn.Sequential(*dec)
        self.head = nn.Conv2d(b, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))


class DiscriminativeNet(nn.Module):
    """U-Net (5 poolings, skip connections) returning per-pixel 2-class logits."""

    def __init__(self, in_channels: int = 6, out_channels: int = 2, width: int = 64):
        super().__init__()
        b = width
        widths = [b, 2 * b, 4 * b, 8 * b, 8 * b, 8 * b]
        self.enc = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.enc.append(_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        # decoder stage k: upsample from deeper level, concat skip, two convs
        self.ups = nn.ModuleList()
        self.dec = nn.ModuleList()
        for deep, skip in zip(widths[::-1][:-1], widths[::-1][1:]):
            self.ups.append(_up(deep, skip))
            self.dec.append(_block(2 * skip, skip))
        self.head = nn.Conv2d(b, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Reference-implementation init: conv weights ~ N(0, std), BN weights ~ N(1, std),
    BN biases 0 (conv biases keep PyTorch's default)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


class DRAEM(nn.Module):
    """Reconstructive + discriminative sub-networks for ``channels``-channel inputs."""

    def __init__(self, channels: int = 3, recon_width: int = 128, disc_width: int = 64):
        super().__init__()
        self.channels, self.recon_width, self.disc_width = channels, recon_width, disc_width
        self.reconstructive = ReconstructiveNet(channels, channels, recon_width)
        self.discriminative = DiscriminativeNet(2 * channels, 2, disc_width)
        init_weights(self)

    @classmethod
    def from_preset(cls, channels: int, preset: str = "paper") -> "DRAEM":
        """Build with the widths of ``preset`` (a key of :data:`WIDTHS`)."""
        return cls(channels, *WIDTHS[preset])

    def config(self) -> dict:
        """Constructor arguments, for checkpoints and export."""
        return {"channels": self.channels, "recon_width": self.recon_width,
                "disc_width": self.disc_width}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.reconstructive(x)
        return rec, self.discriminative(torch.cat([x, rec], dim=1))


class DRAEMScorer(nn.Module):
    """Inference head: image -> (anomaly map = softmax anomalous channel, image score).

    Score = max of the ``k x k`` mean-filtered map (paper: k = 21). Used by ``infer`` and
    ``export`` so the ONNX graph and the torch path share one definition.
    """

    def __init__(self, model: DRAEM, kernel: int = 21):
        super().__init__()
        self.model, self.kernel = model, kernel

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, logits = self.model(x)
        amap = torch.softmax(logits, dim=1)[:, 1:]
        smooth = nn.functional.avg_pool2d(amap, self.kernel, stride=1,
                                          padding=self.kernel // 2)
        return amap[:, 0], smooth.flatten(1).amax(dim=1)
