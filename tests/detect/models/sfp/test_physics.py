"""Shape-from-polarization physics (polar_detect.models.sfp.physics): Fresnel inversion, ambiguities, angular error."""
import numpy as np
import pytest

from polar_detect.models.sfp import physics


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_normals(rng, n, max_zenith_deg=85):
    t = np.radians(rng.uniform(0, max_zenith_deg, n))
    a = rng.uniform(-np.pi, np.pi, n)
    return physics.normal_from_angles(a, t), t, a


def test_physics_candidates_contain_the_true_normal_for_pure_reflection():
    """Forward Fresnel model -> inversion: diffuse light is explained by a diffuse candidate,
    specular light by a specular one, both exact to < 0.05 degrees (AoLP from the renderer's
    convention: s-polarization = ray x normal, angle atan2(-s_y, s_x))."""
    rng = np.random.default_rng(0)
    n, t, a = _random_normals(rng, 2000)
    ray = np.array([0.0, 0.0, 1.0])
    s_dir = np.cross(ray, n)
    phi_spec = np.arctan2(-s_dir[:, 1], s_dir[:, 0])          # tests/render/test_physics.py
    cands = physics.candidates(physics.specular_dolp(t, 1.5), phi_spec, 1.5)
    _, err = physics.oracle(cands, n, "specular")
    assert np.percentile(err, 99) < 0.05
    _, wrong = physics.oracle(cands, n, "diffuse")
    assert np.median(wrong) > 5                                 # the 90-degree azimuth shift matters
    cands = physics.candidates(physics.diffuse_dolp(t, 1.5), phi_spec + np.pi / 2, 1.5)
    _, err = physics.oracle(cands, n, "diffuse")
    assert np.percentile(err, 99) < 0.05


def test_physics_ambiguities_are_real():
    """Both diffuse candidates (pi azimuth ambiguity) and both specular zeniths fit the same
    (DoLP, AoLP): the forward model maps each candidate back to the measurement."""
    t_b = physics.brewster_angle(1.5)
    below, above = physics.zenith_specular(np.array([0.6]), 1.5)
    assert below[0] < t_b < above[0]
    assert np.allclose(physics.specular_dolp(below, 1.5), 0.6, atol=1e-4)
    assert np.allclose(physics.specular_dolp(above, 1.5), 0.6, atol=1e-4)
    c = physics.candidates(np.array([0.1]), np.array([0.3]), 1.5)
    assert np.allclose(c[0, 0, :2], -c[1, 0, :2]) and np.isclose(c[0, 0, 2], c[1, 0, 2])
    with pytest.raises(ValueError, match="refractive index"):
        physics.candidates(np.array([0.1]), np.array([0.3]), 0.8)


def test_angular_error_is_exact_near_zero_and_pi():
    a = np.array([[0.0, 0.0, -1.0]] * 3)
    b = np.array([[np.sin(1e-6), 0.0, -np.cos(1e-6)], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    e = physics.angular_error_deg(a, b)
    assert np.allclose(e, [np.degrees(1e-6), 180.0, 90.0], rtol=1e-6)
