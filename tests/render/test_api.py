"""The public API: polar_render.render / load_scene / load_sample."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import polar_render
from polar_render import cli
from polar_render.outputs import MODALITIES, sample_dir
from polar_render.run.request import RequestError

ARGS = dict(n=2, seed=3, spp=1, res=(64, 48))


def test_api_names():
    assert set(polar_render.__all__) >= {"render", "load_scene", "load_sample"}
    cfg = polar_render.load_scene("usb_brick")
    assert cfg.name == "usb_brick" and cfg.path.name == "scene.yaml"


def test_import_is_cheap():
    """``import polar_render`` loads neither Mitsuba nor the render modules."""
    code = ("import sys, polar_render; print(sorted(m for m in ('mitsuba', 'drjit', 'trimesh', 'polar_render.run', "
            "'polar_render.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_render_equals_the_cli(tmp_path, capsys):
    api = tmp_path / "api"
    summary = polar_render.render("usb_brick", api, progress=False, **ARGS)
    assert (summary.rendered, summary.failed) == (2, {})
    rc = cli.main(["render", "--scene", "usb_brick", "--out", str(tmp_path / "cli"), "--n", "2", "--seed", "3",
                   "--spp", "1", "--res", "64x48", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    for i in range(2):
        a = polar_render.load_sample(sample_dir(api, i))
        b = polar_render.load_sample(sample_dir(tmp_path / "cli", i))
        assert set(a) == set(b) and set(a) - {"meta"} <= set(MODALITIES)
        assert a["stokes"].dtype == np.float32 and a["stokes"].shape == (48, 64, 12)
        for name in set(a) - {"meta"}:
            assert np.array_equal(a[name], b[name]), name   # bit-identical
        for key in ("index", "seed", "sampled", "parts", "anomalies", "anomaly_events", "exposure_scale", "frame"):
            assert a["meta"][key] == b["meta"][key], key


@pytest.mark.parametrize("bad,option", [(dict(spp=0), "--spp"), (dict(n=-1), "--n"), (dict(seed=1.5), "--seed"),
                                        (dict(res="64x48"), "--res"), (dict(workers=0), "--workers"),
                                        (dict(denoise="fast"), "--denoise")])
def test_bad_arguments_name_the_argument(tmp_path, bad, option):
    with pytest.raises(RequestError, match=f"^{option}: "):
        polar_render.render("usb_brick", tmp_path / "out", **{**ARGS, **bad})
    assert not (tmp_path / "out").exists()   # refused before anything is written


def test_unknown_option_is_refused(tmp_path):
    with pytest.raises(TypeError, match="colour"):
        polar_render.render("usb_brick", tmp_path / "out", colour="red")
