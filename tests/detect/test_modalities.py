"""The modality table (polar_detect.modalities): what each dataset modality is, its value
bounds, and how a flip / quarter turn transforms it.

The reference is geometry, not the code under test: the analytic scene of
tests/detect/analytic_scene.py is rendered into every dataset modality; the scene is then
mirrored / rotated *as geometry* (its parameters), rendered again, and must equal the image
transform applied to the first rendering.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polar_detect import modalities as mods
from polar_detect.dataset.encodings import MODALITIES, decode_aolp
from tests.detect.analytic_scene import SCENE, render, transformed_scene

SIGNED_KINDS = {"axial_angle", "unit_vector", "stokes"}


def test_every_dataset_modality_has_a_row():
    assert set(MODALITIES) | {"normals_learned"} == set(mods.TABLE)
    assert all(m.name == n for n, m in mods.TABLE.items())
    assert mods.SIGNED == {n for n, m in mods.TABLE.items() if m.kind in SIGNED_KINDS}
    for n, m in mods.TABLE.items():
        lo, hi = m.nominal
        assert (lo < 0) == m.signed and hi == 1.0, n
    # only what a brighter light scales is photometric
    assert {n for n, m in mods.TABLE.items() if m.photometric} == {"intensity", "stokes"} | {
        f"pol{a}" for a in (0, 45, 90, 135)}
    with pytest.raises(mods.ModalityError, match="unknown modality 'depth'.*intensity"):
        mods.spec("depth")


@pytest.mark.parametrize("name,channels,lo,hi", [
    ("intensity", 3, [0.0] * 3, [math.inf] * 3),
    ("dolp", 1, [0.0], [1.0]),
    ("aolp", 2, [-math.inf] * 2, [math.inf] * 2),
    ("normals", 3, [-math.inf] * 3, [math.inf] * 3),
    ("stokes", 9, [0.0] * 3 + [-math.inf] * 6, [math.inf] * 9),       # S0 (RGB) >= 0; S1, S2 signed
    ("stokes", 4, [0.0] + [-math.inf] * 3, [math.inf] * 4),           # mono S0..S3
])
def test_channel_bounds_follow_the_kind(name, channels, lo, hi):
    assert mods.channel_bounds(name, channels) == (lo, hi)


def test_clamping_touches_only_bounded_channels():
    x = torch.tensor([-2.0, 0.5, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0, 9.0]).view(9, 1, 1)
    y = mods.clamp_physical(x, "stokes").view(-1).tolist()
    assert y == [0.0, 0.5, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0, 9.0]
    assert mods.clamp_physical(torch.tensor([-0.5, 0.3, 1.5]).view(3, 1, 1), "dolp").view(-1).tolist() == \
        pytest.approx([0.0, 0.3, 1.0])
    with pytest.raises(mods.ModalityError, match="stokes: 5 channels"):
        mods.stokes_components(5)


def test_empty_value_is_no_light_and_no_surface():
    assert mods.empty_value(torch.zeros(6, 2, 2), "aolp").view(-1).tolist() == [1, 1, 1, 0, 0, 0]   # phi = 0
    assert mods.empty_value(torch.zeros(3, 2, 2), "normals").abs().sum() == 0


def test_polarizer_angles_transform_like_aolp():
    """A mirror maps a polarizer angle a to -a, a quarter turn to a + 90 (mod 180), and the
    image at the new angle is the one the transformed scene shows behind that polarizer."""
    assert [mods.transformed_polarizer(a, "hflip") for a in (0, 45, 90, 135)] == [0, 135, 90, 45]
    assert [mods.transformed_polarizer(a, "rot90") for a in (0, 45, 90, 135)] == [90, 135, 0, 45]
    img = render(SCENE, 10, 10)
    for op in mods.GEOMETRIC_OPS:
        after = render(transformed_scene(SCENE, op), 10, 10)
        for a in (0, 45, 90, 135):
            moved = mods.spatial(img[f"pol{a}"], op)
            assert torch.allclose(moved, after[f"pol{mods.transformed_polarizer(a, op)}"], atol=1e-6), (op, a)


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
