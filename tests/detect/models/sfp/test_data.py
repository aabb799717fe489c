"""SfP training data (polar_detect.models.sfp.data): flips keep the physics, the DoFP observation model, network input."""
import numpy as np
import pytest

from polar_detect.models.sfp.data import Sample, SfPSamples, dofp_observe, flip, network_input
from polar_detect.models.sfp.toy import toy_scene


pytestmark = pytest.mark.usefixtures("one_thread")


def _expected_doubled_angle(normals, sign):
    alpha = np.arctan2(-normals[..., 1], normals[..., 0])
    return sign * np.cos(2 * alpha), sign * np.sin(2 * alpha)


@pytest.mark.parametrize("h,v", [(True, False), (False, True), (True, True)])
def test_flips_keep_the_physics(h, v):
    """A mirrored toy image is still a valid toy image: AoLP stays parallel (diffuse-dominated)
    or perpendicular (specular-dominated) to the mirrored normal's azimuth."""
    sc = toy_scene(np.random.default_rng(3))
    chw = lambda a: np.moveaxis(np.atleast_3d(a), -1, 0)  # noqa: E731
    s = Sample("x", chw(sc["intensity"]), chw(sc["dolp"]), chw(sc["aolp"]), chw(sc["normals"]), sc["part"])
    f = flip(s, h, v)
    n = np.moveaxis(f.normals, 0, -1)
    zen = np.degrees(np.arccos(np.clip(-n[..., 2], -1, 1)))
    ok = f.part & (f.dolp[0] > 0.02) & (zen > 10)
    assert ok.sum() > 50
    c, si = f.aolp[0][ok], f.aolp[1][ok]
    ec, es = _expected_doubled_angle(n[ok], 1.0)
    dot = c * ec + si * es                      # +1 diffuse-like, -1 specular-like, never in between
    assert np.all(np.abs(np.abs(dot) - 1) < 1e-4)
    # and the flip did something: the unflipped AoLP does not match the flipped normals
    c0, s0 = s.aolp[0][ok], s.aolp[1][ok]
    assert np.mean(np.abs(np.abs(c0 * ec + s0 * es) - 1) < 1e-4) < 0.9


def test_dofp_observation_is_unbiased_with_shot_noise():
    """Through the DoFP sensor model: mean intensity kept (bilinear demosaicing preserves
    it), noise on the flat ground ~ 1/sqrt(exposure) (shot noise), AoLP still a unit pair."""
    from scipy import ndimage

    sc = toy_scene(np.random.default_rng(4), 48, 64)
    chw = lambda a: np.moveaxis(np.atleast_3d(a), -1, 0)  # noqa: E731
    s = Sample("x", chw(sc["intensity"]), chw(sc["dolp"]), chw(sc["aolp"]), chw(sc["normals"]), sc["part"])
    inner = np.zeros(s.shape, bool)
    inner[2:-2, 2:-2] = True
    flat = inner & ~ndimage.binary_dilation(sc["part"], iterations=3)     # ground, away from edges
    assert flat.sum() > 200
    noise = {}
    for factor in (1.0, 0.25):
        o = dofp_observe(s, np.random.default_rng(0), factor)
        d = o.intensity[0] - s.intensity[0]
        assert abs(d[inner].mean()) < 0.01 * s.intensity[0][inner].mean()
        noise[factor] = np.std(d[flat] / s.intensity[0][flat])
        assert np.allclose(o.aolp[0] ** 2 + o.aolp[1] ** 2, 1, atol=1e-5)
        assert o.normals is s.normals and o.part is s.part
    assert noise[1.0] > 1e-3
    assert 1.6 < noise[0.25] / noise[1.0] < 2.4          # sqrt(4) = 2


def test_network_input_channels_and_normalisation(small_data):
    samples = SfPSamples(small_data, ("train",))
    s = samples[0]
    x = network_input(s, samples.scale).numpy()
    assert x.shape == (4, 16, 24)
    assert np.allclose(x[0], s.intensity[0] / samples.scale) and np.allclose(x[1], s.dolp[0])
    assert np.allclose(x[2] ** 2 + x[3] ** 2, 1, atol=1e-5)
