"""The shape-from-polarization network: a compact U-Net from polarization to unit normals.

Input (why these four and not the four polarizer images): the datasets this toolkit builds
already store I_un = S0 (``intensity``), DoLP rho (``dolp``) and AoLP as (cos 2phi, sin 2phi)
(``aolp``, ``polar_detect.dataset.encodings``), with the intensity normalisation in the
manifest. The four polarizer images carry the same information (they are linear in S0, S1,
S2), but in them the geometry cue (AoLP, DoLP) is entangled with brightness, so the network
would first have to learn the division S1/S0; rho, cos 2phi and sin 2phi are brightness-free,
and the doubled-angle encoding has no wrap at phi = +-pi/2. Channels, for C colour
channels (C = 1 mono, 3 RGB), in this order::

    I_un / scale   (C)    intensity normalised as the dataset's manifest says
    rho            (C)    DoLP in [0, 1]
    cos 2phi       (C)    phi = AoLP from the image x axis, counter-clockwise on screen
    sin 2phi       (C)

The first layer appends rho cos 2phi and rho sin 2phi (= S1/S0, S2/S0): continuous where
rho -> 0 and phi becomes noise.

Output: (B, 3, H, W) unit normals in the OpenCV camera frame (x right, y down, z forward;
surfaces facing the camera have n_z < 0), the convention of ``normals.tiff``; the last
layer's 3-vector is divided by its length (``F.normalize``), so every pixel is unit norm.
The network predicts a normal for every pixel; "0 = no surface" is applied by the caller
from a mask where one is known.

Architecture: ``len(widths)`` levels; each level two 3x3 conv + GroupNorm + SiLU; stride-2
3x3 conv down, bilinear up to the skip's exact size (any H, W works, no padding rules),
concatenation skips, 1x1 head. GroupNorm (not BatchNorm): batch-size independent and the
same in train and eval mode. Plain ``torch.nn`` only, exportable to ONNX (``export.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

INPUTS = ("intensity", "dolp", "cos2phi", "sin2phi")


@dataclass(frozen=True)
class NetConfig:
    """Architecture: ``colour`` channels C of the data (1 mono, 3 RGB), ``widths`` per level."""

    colour: int = 1
    widths: tuple[int, ...] = (16, 32, 64, 128)

    def __post_init__(self):
        if self.colour < 1:
            raise ValueError(f"colour channels must be >= 1, got {self.colour}")
        if not self.widths or any(int(w) < 4 for w in self.widths):
            raise ValueError(f"widths must be a non-empty list of ints >= 4, got {self.widths}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def in_channels(self) -> int:
        return 4 * self.colour

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "NetConfig":
        return cls(colour=int(d["colour"]), widths=tuple(d["widths"]))


def _groups(ch: int) -> int:
    for g in (8, 4, 2):
        if ch % g == 0:
            return g
    return 1


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(_groups(cout), cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.GroupNorm(_groups(cout), cout), nn.SiLU())


class SfPNet(nn.Module):
    """(B, 4C, H, W) polarization input (module docstring) -> (B, 3, H, W) unit normals."""

    def __init__(self, config: NetConfig | None = None):
        super().__init__()
        self.config = config or NetConfig()
        w, c = self.config.widths, self.config.colour
        self.stem = _Block(6 * c, w[0])
        self.down = nn.ModuleList(_Block(w[k - 1], w[k], stride=2) for k in range(1, len(w)))
        self.up = nn.ModuleList(_Block(w[k] + w[k - 1], w[k - 1]) for k in range(len(w) - 1, 0, -1))
        self.head = nn.Conv2d(w[0], 3, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Append rho cos 2phi and rho sin 2phi to the input channels."""
        c = self.config.colour
        rho, cos, sin = x[:, c:2 * c], x[:, 2 * c:3 * c], x[:, 3 * c:4 * c]
        return torch.cat([x, rho * cos, rho * sin], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(self.features(x))
        skips = [h]
        for block in self.down:
            h = block(h)
            skips.append(h)
        skips.pop()
        for block in self.up:
            s = skips.pop()
            h = F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, s], dim=1))
        return F.normalize(self.head(h), dim=1, eps=1e-6)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
