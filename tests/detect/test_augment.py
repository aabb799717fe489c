"""Modality-aware augmentation (polar_detect.augment, polar_detect.modalities).

The reference is geometry, not the code under test: an analytic scene (a tilted plane with a
spherical bump, seen by an orthographic camera in the OpenCV frame) is rendered into every
dataset modality; the scene is then mirrored / rotated *as geometry* (its parameters), rendered
again, and must equal the image transform applied to the first rendering.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polar_detect import modalities as mods
from polar_detect.augment import Augment, AugmentConfig
from polar_detect.dataset.encodings import MODALITIES, decode_aolp, encode_aolp

ALBEDO = np.array([0.8, 0.5, 0.3])


def render(scene: dict, h: int, w: int) -> dict[str, torch.Tensor]:
    """Every dataset modality of ``scene`` as (C, H, W) float64 tensors.

    Orthographic camera looking along +z (OpenCV frame: x right, y down); pixel (v, u) sees the
    ray at x = u - (w-1)/2, y = v - (h-1)/2. Surfaces: plane depth z = z0 + a x + b y and a
    sphere of radius r centred on the plane at (cx, cy); the nearer one is seen. Diffuse
    polarization: AoLP = azimuth of the projected normal, counter-clockwise on screen
    (atan2(-ny, nx)); DoLP a function of the zenith angle; Lambertian S0 lit along the view axis.
    """
    a, b, z0, cx, cy, r = (scene[k] for k in ("a", "b", "z0", "cx", "cy", "r"))
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x -= (w - 1) / 2
    y -= (h - 1) / 2
    n = np.stack([np.full_like(x, a), np.full_like(x, b), -np.ones_like(x)])      # plane, faces camera
    zc = z0 + a * cx + b * cy
    d2 = (x - cx) ** 2 + (y - cy) ** 2
    inside = d2 < r * r
    zs = zc - np.sqrt(np.maximum(r * r - d2, 0.0))
    front = inside & (zs < z0 + a * x + b * y)
    sph = np.stack([x - cx, y - cy, zs - zc]) / r
    n = np.where(front[None], sph, n)
    n = n / np.linalg.norm(n, axis=0, keepdims=True)
    theta = np.arccos(np.clip(-n[2], -1, 1))
    rho = 0.4 * np.sin(theta) ** 2
    phi = np.arctan2(-n[1], n[0])                       # counter-clockwise on screen
    phi = (phi + np.pi / 2) % np.pi - np.pi / 2
    s0 = ALBEDO[:, None, None] * (-n[2])[None]          # (3, H, W)
    s1 = s0 * rho * np.cos(2 * phi)
    s2 = s0 * rho * np.sin(2 * phi)
    out = {"intensity": s0, "dolp": np.repeat(rho[None], 3, 0), "normals": n,
           "aolp": encode_aolp(np.repeat(phi[..., None], 3, -1)).transpose(2, 0, 1).astype(np.float64),
           "stokes": np.concatenate([s0, s1, s2])}
    for ang in (0, 45, 90, 135):
        t = math.radians(ang)
        out[f"pol{ang}"] = 0.5 * (s0 + s1 * math.cos(2 * t) + s2 * math.sin(2 * t))
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in out.items()}


SCENE = {"a": 0.35, "b": -0.2, "z0": 50.0, "cx": 3.3, "cy": -2.7, "r": 7.0}


def transformed_scene(scene: dict, op: str) -> dict:
    """The same scene mirrored / rotated as geometry (independent of polar_detect)."""
    s = dict(scene)
    if op == "hflip":                        # x -> -x
        s.update(a=-scene["a"], cx=-scene["cx"])
    elif op == "vflip":                      # y -> -y
        s.update(b=-scene["b"], cy=-scene["cy"])
    else:                                    # rot90 (counter-clockwise on screen): (x, y) -> (y, -x)
        # depth'(q) = depth(R^-1 q), R^-1 (x, y) = (-y, x): z0 + a(-y) + b x
        s.update(a=scene["b"], b=-scene["a"], cx=scene["cy"], cy=-scene["cx"])
    return s


@pytest.mark.parametrize("op", mods.GEOMETRIC_OPS)
@pytest.mark.parametrize("h,w", [(24, 24), (20, 28)])
def test_transforming_images_equals_rendering_the_transformed_scene(op, h, w):
    before = render(SCENE, h, w)
    hh, ww = (w, h) if op == "rot90" else (h, w)
    after = render(transformed_scene(SCENE, op), hh, ww)
    assert set(before) == set(MODALITIES)
    # the scene really changes under every op (no trivially symmetric reference)
    assert not torch.allclose(mods.spatial(before["normals"], op), after["normals"], atol=1e-3)
    for name, img in before.items():
        if op in mods.allowed_ops(name):
            got = mods.transform(img, name, op)
            assert got.shape == after[name].shape, name
            assert torch.allclose(got, after[name], atol=1e-6), (name, op, float((got - after[name]).abs().max()))
    moved = mods.transform_set({k: v for k, v in before.items()}, op)   # polarizer images as a set
    for name in after:
        assert torch.allclose(moved[name], after[name], atol=1e-6), (name, op)
    # AoLP in radians: a mirror negates it, a quarter turn adds 90 deg (mod 180)
    phi0 = decode_aolp(before["aolp"].numpy().transpose(1, 2, 0))[..., 0]
    phi1 = decode_aolp(after["aolp"].numpy().transpose(1, 2, 0))[..., 0]
    expect = -phi0 if op != "rot90" else phi0 + np.pi / 2
    diff = (mods.spatial(torch.from_numpy(expect), op).numpy() - phi1 + np.pi / 2) % np.pi - np.pi / 2
    assert np.abs(diff).max() < 1e-5


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


@pytest.mark.parametrize("name", MODALITIES)
def test_round_trips(name):
    x = render(SCENE, 12, 12)[name]
    for op in mods.allowed_ops(name):
        twice = mods.transform(mods.transform(x, name, op), name, op)
        if op == "rot90":
            four = x
            for _ in range(4):
                four = mods.transform(four, name, op)
            assert torch.equal(four, x)
            assert not torch.allclose(twice, x)      # a half turn is not the identity
        else:
            assert torch.equal(twice, x), (name, op)


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
    from polar_detect.draem.polar import SIGNED, modality_config
    from polar_detect.draem.train import TrainConfig
    assert SIGNED == {"aolp", "normals", "normals_learned", "stokes"} == mods.SIGNED
    for name in MODALITIES:
        cfg = modality_config(TrainConfig(), name)
        lo, hi = mods.nominal_range(name)
        assert cfg.ssim_max_val == hi - lo
        assert cfg.simulator.texture_range == ("unit" if (lo, hi) == (0.0, 1.0) else (lo, hi))


def test_patchcore_augments_stored_normals_before_its_encoding():
    """Sequential PatchCore hands the augmentation the stored normals (signed, in [-1, 1]),
    then encodes them; the encoded backbone input stays (n + 1) / 2 of a transformed normal."""
    from polar_detect.features import FeatureConfig, FeatureExtractor
    from polar_detect.patchcore import SequentialPatchCore
    from polar_detect.patchcore.encoding import InputEncoding

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
