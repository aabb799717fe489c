"""Shared render fixtures: small runs rendered once per test session, a scenes home for
``new-scene`` (``home``, ``new_scene_file``), and Mitsuba variant
fixtures (`mi_variant`: one test per polarized variant, the process-global variant restored)."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from polar_render.outputs import load_sample
from polar_render.run.request import RenderRequest
from polar_render.run.runner import run

DATA = Path(__file__).parent / "data"
PLAIN_SCENE = DATA / "plain" / "scene.yaml"


def render_dir(out: Path, **kw) -> Path:
    kw.setdefault("progress", False)
    summary = run(RenderRequest(out=out, **kw))
    assert not summary.failed, summary.failed
    return out


@pytest.fixture(scope="session")
def fixture_render(tmp_path_factory, bop_fixture_dir):
    """The BlenderProc fixture layout rendered at its native 640x480 (1 spp: geometry only)."""
    out = tmp_path_factory.mktemp("bproc_render")
    return render_dir(out, scene=PLAIN_SCENE, layout=bop_fixture_dir, spp=1)


@pytest.fixture(scope="session")
def usb_brick_render(tmp_path_factory):
    """Our own sampled usb_brick layout, 4 samples at 320x240."""
    out = tmp_path_factory.mktemp("usb_render")
    return render_dir(out, scene="usb_brick", n=4, res=(320, 240), spp=4, seed=7)


def samples(run_dir: Path):
    return [load_sample(p) for p in sorted((run_dir / "samples").iterdir())]


def copy_layout(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def scene_variant(tmp_path: Path, name: str = "usb_brick", **overrides) -> Path:
    """A copy of a repo scene file with top-level keys replaced (mesh paths made absolute)."""
    from polar_render.config.scenes import write_scene_variant

    return write_scene_variant(tmp_path / f"{name}_variant.yaml", name, **overrides)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Scenes and the mesh cache in tmp_path (scenes/ of the repo stays untouched)."""
    monkeypatch.setenv("POLAR_SCENES_DIR", str(tmp_path / "scenes"))
    monkeypatch.setenv("POLAR_MESH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "scenes").mkdir()
    (tmp_path / "src").mkdir()
    return tmp_path


def new_scene_file(home: Path, name: str, *args) -> Path:
    """``polar-render new-scene NAME ARGS`` in ``home`` (the ``home`` fixture); its scene.yaml."""
    from polar_render.cli import main

    rc = main(["new-scene", name, *map(str, args)])
    assert rc == 0
    return home / "scenes" / name / "scene.yaml"


# ----------------------------------------------------------------------------- Mitsuba variants
# Every polarized variant a render may run on (polar_render.mitsuba.variants). A test that
# takes ``mi_variant`` runs once per variant (mitsuba3's own test style); variants this
# machine cannot run are skipped with the reason, never silently dropped.
POLARIZED_VARIANTS = ("scalar_spectral_polarized", "llvm_ad_spectral_polarized", "llvm_ad_mono_polarized",
                      "cuda_ad_spectral_polarized", "cuda_ad_mono_polarized")


def variant_skip_reason(variant: str) -> str | None:
    """Why ``variant`` cannot run here, or None."""
    from polar_render.mitsuba.variants import cuda_visible, find_libllvm

    if variant.startswith("cuda") and not cuda_visible():
        return f"{variant}: no NVIDIA GPU visible"
    if variant.startswith("llvm") and find_libllvm() is None:
        return f"{variant}: no libLLVM >= 17 (apt-get install libllvm19, or set DRJIT_LIBLLVM_PATH)"
    return None


# Known failures, per variant, of MitsubaScene (the product's scene build), found by these
# fixtures: strict xfails, so a fix turns them into errors until the entry is removed.
SCENE_XFAIL: dict[str, str] = {}   # none today: scalar variants build since shape ids and stain centres are variant-aware


def variant_params(variants=POLARIZED_VARIANTS, xfail: dict | None = None) -> list:
    """``pytest.param`` per variant: cuda ones carry the ``cuda`` marker, unusable ones a skip,
    those named in ``xfail`` a strict xfail with its reason."""
    params = []
    for v in variants:
        marks = [pytest.mark.cuda] if v.startswith("cuda") else []
        reason = variant_skip_reason(v)
        if reason:
            marks.append(pytest.mark.skip(reason=reason))
        if xfail and v in xfail:
            marks.append(pytest.mark.xfail(reason=xfail[v], strict=True))
        params.append(pytest.param(v, id=v, marks=marks))
    return params


@contextmanager
def mitsuba_variant(variant: str):
    """The ``mitsuba`` module with ``variant`` active for the block. Mitsuba's variant is
    process-global: the one active before (if any) and ``DRJIT_LIBLLVM_PATH`` are restored
    afterwards, so tests that do not ask for a variant see no change."""
    import sys

    from polar_render.mitsuba.variants import activate

    before = sys.modules.get("mitsuba")
    previous = before.variant() if before is not None else None
    env = os.environ.get("DRJIT_LIBLLVM_PATH")
    try:
        mi = activate(variant)
        assert mi.variant() == variant
        yield mi
    finally:
        mi = sys.modules.get("mitsuba")
        if previous is not None and mi is not None and mi.variant() != previous:
            mi.set_variant(previous)
        if env is None:
            os.environ.pop("DRJIT_LIBLLVM_PATH", None)
        else:
            os.environ["DRJIT_LIBLLVM_PATH"] = env


@pytest.fixture(params=variant_params())
def mi_variant(request):
    """``mitsuba`` with one polarized variant active (parametrised over POLARIZED_VARIANTS)."""
    with mitsuba_variant(request.param) as mi:
        yield mi


@pytest.fixture(params=variant_params(xfail=SCENE_XFAIL))
def mi_scene_variant(request):
    """Like ``mi_variant``, for tests of ``MitsubaScene`` (known failures: ``SCENE_XFAIL``)."""
    with mitsuba_variant(request.param) as mi:
        yield mi


def stokes_planes(img) -> np.ndarray:
    """(4, H, W) float64 S0..S3 from a ``stokes`` integrator image, colours averaged.

    The integrator writes the nested integrator's colour first, then S0..S3 with three
    channels each (spectral variants: R, G, B; mono variants: three equal copies)."""
    s = np.asarray(img, np.float64)[..., -12:]
    return s.reshape(*s.shape[:2], 4, 3).mean(-1).transpose(2, 0, 1)


def dolp(s: np.ndarray) -> np.ndarray:
    """DoLP sqrt(S1^2 + S2^2) / S0 of (4, ...) Stokes planes (0 where S0 = 0)."""
    lin = np.hypot(s[1], s[2])
    return np.divide(lin, s[0], out=np.zeros_like(lin), where=s[0] > 0)
