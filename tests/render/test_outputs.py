"""Output files: formats, units and the mono sensor path."""
from __future__ import annotations

import numpy as np

from polar_render.config.scenes import load_scene
from polar_render.outputs import META_KEYS, MODALITIES, sample_bytes
from polar_render.physics.polarization import LUMA
from polar_render.run.request import RenderRequest
from polar_render.run.runner import run

from tests.render.conftest import PLAIN_SCENE, render_dir, samples, scene_variant


def test_output_contract(usb_brick_render):
    for s in samples(usb_brick_render):
        meta = s["meta"]
        h, w = s["object_mask"].shape
        assert set(META_KEYS) <= set(meta), set(META_KEYS) - set(meta)
        for name, e in meta["files"].items():   # every file as outputs.MODALITIES states it
            m = MODALITIES[name]
            assert (e["path"], e["dtype"], e["units"], list(s[name].shape)) == (m.file, m.dtype, m.units, e["shape"])
        assert s["stokes"].shape == (h, w, 12) and s["stokes"].dtype == np.float32
        assert meta["files"]["stokes"]["channels"][:4] == ["S0.R", "S0.G", "S0.B", "S1.R"]
        for a in (0, 45, 90, 135):
            assert s[f"pol{a}"].dtype == np.uint16 and s[f"pol{a}"].shape == (h, w, 3)
        assert np.all((s["dolp"] >= 0) & (s["dolp"] <= 1))
        assert np.all(np.abs(s["aolp"]) <= np.pi / 2 + 1e-6)
        hit = s["depth"] > 0
        n = np.linalg.norm(s["normals"], axis=-1)
        assert np.allclose(n[hit], 1, atol=1e-3) and np.all(n[~hit] == 0)
        # camera 0.40-0.49 m from the object: object depths must lie near that
        obj = s["object_mask"] > 0
        assert obj.any() and 0.3 < np.median(s["depth"][obj]) < 0.55
        # part ids map to the object that owns them
        for part in meta["parts"]:
            sel = s["part_mask"] == part["part_id"]
            assert np.all(s["object_mask"][sel] == part["instance"])
        assert set(np.unique(s["part_mask"])) <= {0} | {p["part_id"] for p in meta["parts"]}


def test_mono_sensor(tmp_path):
    cfg = load_scene("usb_brick")
    scene = scene_variant(tmp_path, sensor={**cfg.sensor, "mode": "mono"})
    # a mono sensor renders with the mono variant by default (test_radiance); asked for the
    # spectral variant, it takes the luminance of the RGB film instead
    from polar_render.mitsuba.variants import find_libllvm

    spectral = "llvm_ad_spectral_polarized" if find_libllvm() else "scalar_spectral_polarized"
    mono = samples(render_dir(tmp_path / "mono", scene=scene, n=1, res=(96, 72), spp=2, variant=spectral))[0]
    rgb = samples(render_dir(tmp_path / "rgb", scene="usb_brick", n=1, res=(96, 72), spp=2))[0]
    assert mono["stokes"].shape == (72, 96, 4) and mono["pol0"].shape == (72, 96)
    assert mono["meta"]["files"]["stokes"]["channels"] == ["S0.Y", "S1.Y", "S2.Y", "S3.Y"]
    # same seed, same scene otherwise: mono Stokes = Rec. 709 luminance of the RGB Stokes
    rgb_st = rgb["stokes"].reshape(72, 96, 4, 3)
    assert np.allclose(mono["stokes"], rgb_st @ LUMA, rtol=1e-5, atol=1e-7)


def test_sample_size_estimate_is_a_close_upper_bound(tmp_path, bop_fixture_dir):
    """The estimate must not be exceeded by a real sample, nor overstate it wildly."""
    out = tmp_path / "out"
    run(RenderRequest(scene=PLAIN_SCENE, out=out, layout=bop_fixture_dir, n=1, res=(96, 72), spp=1, progress=False))
    actual = sum(p.stat().st_size for p in (out / "samples" / "000000").iterdir())
    estimate = sample_bytes(96, 72, 3)
    assert actual <= estimate <= 1.5 * actual, (actual, estimate)
