"""The analytic SfP toy data (polar_detect.models.sfp.toy): exact normals, physically consistent
polarization, and a regular dataset on disk."""
import json

import numpy as np
import pytest

from polar_detect.models.sfp.toy import build_toy, toy_scene


def test_scene_normals_and_polarization_are_consistent():
    s = toy_scene(np.random.default_rng(2), 32, 40)
    n, part = s["normals"], s["part"]
    assert part.any() and not part.all()
    assert np.allclose(np.linalg.norm(n, axis=-1), 1, atol=1e-5)
    assert np.all(n[~part] == [0, 0, -1])                       # the ground faces the camera
    assert np.all(n[part][:, 2] < 0)                            # caps face the camera too
    assert np.all((s["dolp"] >= 0) & (s["dolp"] <= 1)) and np.all(s["intensity"] > 0)
    assert np.allclose(s["aolp"][..., 0] ** 2 + s["aolp"][..., 1] ** 2, 1, atol=1e-5)
    # AoLP is parallel (diffuse-dominated) or perpendicular (specular-dominated) to the azimuth
    alpha = np.arctan2(-n[..., 1], n[..., 0])
    theta = np.arccos(np.clip(-n[..., 2], -1, 1))
    ok = part & (s["dolp"] > 0.02) & (theta > np.radians(10))
    assert ok.sum() > 50
    dot = s["aolp"][..., 0] * np.cos(2 * alpha) + s["aolp"][..., 1] * np.sin(2 * alpha)
    assert np.all(np.abs(np.abs(dot[ok]) - 1) < 1e-3)


def test_scene_is_seeded():
    a, b = toy_scene(np.random.default_rng(5), 16, 16), toy_scene(np.random.default_rng(5), 16, 16)
    c = toy_scene(np.random.default_rng(6), 16, 16)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["intensity"], c["intensity"])


def test_build_writes_a_dataset_with_splits_and_part_masks(tmp_path):
    m = build_toy(tmp_path / "toy", n_train=3, n_test=2, seed=1, height=8, width=10)
    assert [s["split"] for s in m["samples"]] == ["train"] * 3 + ["test"] * 2
    assert set(m["modalities"]) == {"intensity", "dolp", "aolp", "normals"}
    assert all(s["object_mask"] and s["label"] == 0 for s in m["samples"])
    assert json.loads((tmp_path / "toy" / "manifest.json").read_text())["samples"] == m["samples"]
    from polar_detect.dataset.manifest import verify
    assert verify(tmp_path / "toy") == []
    with pytest.raises(ValueError, match="even sizes"):
        build_toy(tmp_path / "odd", height=9, width=10)
