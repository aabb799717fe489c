"""Modality-aware augmentation (polar_detect.augment): each operation follows the modality's
row of polar_detect.modalities (tested on its own in tests/detect/test_modalities.py).

Images come from the analytic scene of tests/detect/analytic_scene.py (every dataset
modality of a plane with a spherical bump), so signs, bounds and co-registration are known.
"""
from __future__ import annotations

import math

import pytest
import torch

from polar_detect import modalities as mods
from polar_detect.augment import Augment, AugmentConfig, amplitude, gaussian_blur
from polar_detect.dataset.encodings import MODALITIES
from tests.detect.analytic_scene import SCENE, render


def test_polarizer_images_alone_refuse_ops_that_relabel_them():
    img = render(SCENE, 8, 8)
    assert mods.allowed_ops("pol0") == ("hflip", "vflip") == mods.allowed_ops("pol90")
    assert mods.allowed_ops("pol45") == () == mods.allowed_ops("pol135")
    with pytest.raises(mods.ModalityError, match="pol45: hflip turns it into pol135"):
        mods.transform(img["pol45"], "pol45", "hflip")
    with pytest.raises(mods.ModalityError, match="pol90, which is not in the set"):
        mods.transform_set({"pol0": img["pol0"]}, "rot90")
    aug = Augment(AugmentConfig(p_hflip=1, p_vflip=1, p_color=0, p_blur=0, p_noise=0, p_mask=0),
                  modality="pol45")
    assert aug.disabled == ["hflip", "vflip"] and "left out" in aug.describe()
    x = img["pol45"].float()
    assert torch.equal(aug(x), x)                    # nothing it cannot do correctly


def _full(**kw):
    base = dict(p_color=0, p_hflip=0, p_vflip=0, p_rot90=0, p_blur=0, p_noise=0, p_mask=0)
    return AugmentConfig(**{**base, **kw})


@pytest.mark.parametrize("name", ["aolp", "normals", "stokes"])
def test_signed_modalities_are_never_clamped(name):
    x = render(SCENE, 16, 16)[name].float()
    assert (x < 0).any()
    aug = Augment(AugmentConfig(p_color=1, p_hflip=0.5, p_vflip=0.5, p_rot90=0.5, p_blur=0.5,
                                p_noise=1, p_mask=0), seed=3, modality=name)
    ys = torch.stack([aug(x) for _ in range(6)])
    assert (ys < -0.05).any()                        # negative values survive
    lo, hi = mods.channel_bounds(name, x.shape[0])
    signed = [i for i, v in enumerate(lo) if v == -math.inf]
    assert signed and (ys[:, signed] < 0).any()
    if name == "normals":                            # noise free: a flip is exact, values unchanged in size
        y = Augment(_full(p_hflip=1), modality=name)(x)
        assert torch.allclose(y, mods.transform(x, name, "hflip"))


def test_non_negative_modalities_stay_in_their_physical_bounds():
    img = render(SCENE, 16, 16)
    aug = Augment(AugmentConfig(p_noise=1, noise_std=(0.5, 0.5), p_color=1), seed=1, modality="dolp")
    y = aug(img["dolp"].float() * 4)                 # push above 1
    assert float(y.min()) == 0.0 and float(y.max()) == 1.0
    y = Augment(AugmentConfig(p_noise=1, noise_std=(0.5, 0.5)), seed=1, modality="intensity")(img["intensity"].float() * 5)
    assert float(y.min()) == 0.0 and float(y.max()) > 1.0      # intensity: bounded below only
    st = Augment(AugmentConfig(p_noise=1, noise_std=(0.5, 0.5)), seed=1, modality="stokes")(img["stokes"].float())
    assert float(st[:3].min()) >= 0.0 and float(st[3:].min()) < 0.0   # S0 >= 0, S1, S2 signed


def test_photometric_changes_only_illumination_like_inputs():
    img = render(SCENE, 16, 16)
    cfg = _full(p_color=1, brightness=0.5, contrast=0.5)
    for name in ("dolp", "aolp", "normals"):
        x = img[name].float()
        assert torch.equal(Augment(cfg, seed=2, modality=name)(x), mods.clamp_physical(x, name))
    x = img["stokes"].float()
    y = Augment(cfg, seed=2, modality="stokes")(x)
    g = y[:3].sum() / x[:3].sum()
    assert not math.isclose(float(g), 1.0, abs_tol=1e-3)
    assert torch.allclose(y, x * g, atol=1e-6)        # a gain: DoLP and AoLP unchanged
    assert not torch.allclose(Augment(cfg, seed=2)(img["intensity"].float()), img["intensity"].float())


def test_mask_fills_the_no_light_value_and_same_seed_same_geometry():
    img = render(SCENE, 16, 16)
    y = Augment(_full(p_mask=1, mask_frac=(0.5, 0.5)), seed=0, modality="aolp")(img["aolp"].float())
    hole = (y[:3] == 1).all(0) & (y[3:] == 0).all(0)
    assert int(hole.sum()) == 64                      # an 8 x 8 rectangle of (cos, sin) = (1, 0)
    # co-registered modalities stay co-registered: one seed draws the same geometry for each
    cfg = _full(p_hflip=0.5, p_vflip=0.5, p_rot90=0.5)
    seqs = [[op for op, on in zip(mods.GEOMETRIC_OPS, bits) if on]
            for bits in ((i & 1, i & 2, i & 4) for i in range(8))]
    seen = set()
    for seed in range(12):
        outs = {n: Augment(cfg, seed=seed, modality=n)(img[n].float()) for n in ("normals", "intensity", "aolp")}
        match = []
        for seq in seqs:
            t = {n: img[n].float() for n in outs}
            for op in seq:
                t = {n: mods.transform(t[n], n, op) for n in t}
            if all(torch.equal(t[n], outs[n]) for n in outs):
                match.append(tuple(seq))
        assert match, seed
        seen.update(match)
    assert len(seen) >= 4                            # the draws do vary


def test_rot90_needs_square_images_and_unknown_modality():
    with pytest.raises(mods.ModalityError, match="square"):
        Augment(_full(p_rot90=1), modality="intensity")(torch.rand(3, 8, 12))
    with pytest.raises(mods.ModalityError, match="unknown modality 'depth'"):
        Augment(modality="depth")


def test_draem_and_patchcore_read_the_same_table():
    from polar_detect.models.draem.polar import SIGNED, modality_config
    from polar_detect.models.draem.train import TrainConfig
    assert SIGNED == {"aolp", "normals", "normals_learned", "stokes"} == mods.SIGNED
    for name in MODALITIES:
        cfg = modality_config(TrainConfig(), name)
        lo, hi = mods.nominal_range(name)
        assert cfg.ssim_max_val == hi - lo
        assert cfg.simulator.texture_range == ("unit" if (lo, hi) == (0.0, 1.0) else (lo, hi))


def test_patchcore_augments_stored_normals_before_its_encoding():
    """Sequential PatchCore hands the augmentation the stored normals (signed, in [-1, 1]),
    then encodes them; the encoded backbone input stays (n + 1) / 2 of a transformed normal."""
    from polar_detect.backbones import FeatureConfig, FeatureExtractor
    from polar_detect.models.patchcore import SequentialPatchCore
    from polar_detect.models.patchcore.encoding import InputEncoding

    normals = render(SCENE, 32, 32)["normals"].float()
    data = [{"image": normals, "label": 0, "id": str(i), "mask": torch.zeros(1, 32, 32)} for i in range(2)]
    seen, fed = [], []

    class Spy(Augment):
        def __call__(self, img):
            seen.append(img.clone())
            out = super().__call__(img)
            fed.append(out)
            return out

    model = SequentialPatchCore(coreset_size=20, extractor=FeatureExtractor(FeatureConfig(weights="random")),
                                encoding=InputEncoding("normals"))
    encoded = []
    orig = model.patch_features
    model.patch_features = lambda x: (encoded.append(x.clone()), orig(x))[1]
    model.fit(data, epochs=2, early_stop=False,
              augment=Spy(_full(p_hflip=1.0), modality="normals"))
    assert seen and float(torch.cat(seen).min()) < -0.5          # stored, signed values reach it
    assert all(torch.equal(x, normals.expand_as(x)) for x in seen)
    flipped = mods.transform(normals, "normals", "hflip")
    assert torch.allclose(encoded[-1], ((flipped + 1) / 2).expand_as(encoded[-1]))


def test_amplitude_is_the_noise_reference_of_each_kind():
    img = render(SCENE, 16, 16)
    assert amplitude(img["normals"] * 7, "normals") == 1.0 == amplitude(img["aolp"] * 7, "aolp")   # unit length
    x = torch.zeros(3, 20, 20)
    x.view(-1)[:3] = -50.0                                   # 0.25 % outliers: above the 99.5th percentile
    x.view(-1)[3:] = torch.linspace(0.0, 2.0, x.numel() - 3)
    assert amplitude(x, "intensity") == pytest.approx(float(torch.quantile(x.abs().view(-1), 0.995)))
    assert 1.9 < amplitude(x, "intensity") < 50.0
    s = img["stokes"].float()
    assert amplitude(s, "stokes") == amplitude(s[:3], "intensity")      # S0 only, not S1, S2
    assert amplitude(torch.zeros(1, 4, 4), "dolp") == 1e-12


def test_noise_is_relative_to_the_image_amplitude():
    """Gaussian noise of std ``noise_std`` x amplitude: the same relative noise on an image
    and on the image x 100 (a brighter render), so the noise does not depend on exposure."""
    x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) + 0.5
    cfg = _full(p_noise=1, noise_std=(0.02, 0.02))
    for gain in (1.0, 100.0):
        d = Augment(cfg, seed=4)(x * gain) - x * gain
        assert float(d.std() / amplitude(x * gain, "intensity")) == pytest.approx(0.02, rel=0.05)
        assert abs(float(d.mean())) < 0.002 * gain


def test_blur_smooths_and_keeps_the_mean_and_bounds():
    img = render(SCENE, 24, 24)
    x = img["intensity"].float()
    x = x + 0.2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))     # high-frequency detail
    y = Augment(_full(p_blur=1, blur_sigma=(1.0, 1.0)), seed=0)(x)
    assert torch.allclose(y, gaussian_blur(x, 1.0))
    assert y.diff(dim=-1).abs().mean() < 0.5 * x.diff(dim=-1).abs().mean()
    assert float(y.mean()) == pytest.approx(float(x.mean()), rel=0.02)
    flat = torch.full((1, 8, 8), 0.3)
    assert torch.allclose(Augment(_full(p_blur=1), seed=0)(flat), flat)           # a constant stays


def test_a_batch_is_augmented_image_by_image_with_one_stream():
    """(B, C, H, W): each image gets its own draws, in order, from the one generator; the
    same as calling the augmentation on the images one after the other."""
    img = render(SCENE, 16, 16)
    batch = torch.stack([img["normals"].float(), -img["normals"].float()])
    cfg = AugmentConfig(p_hflip=0.5, p_vflip=0.5, p_noise=1, p_mask=0.5)
    out = Augment(cfg, seed=9, modality="normals")(batch)
    one = Augment(cfg, seed=9, modality="normals")
    assert torch.equal(out, torch.stack([one(b) for b in batch]))
    same = Augment(_full(p_hflip=0.5, p_vflip=0.5), seed=9, modality="normals")(batch[:1].expand(8, -1, -1, -1))
    assert len({tuple(o.flatten()[:64].tolist()) for o in same}) > 1   # copies of one image: draws differ
    d = Augment(cfg, seed=9, modality="pol45").to_dict()
    assert d["modality"] == "pol45" and d["disabled"] == ["hflip", "vflip"] and d["blur_sigma"] == [0.3, 1.5]
