"""Shared render fixtures: small runs rendered once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from polar_render.pipeline import RenderRequest, load_sample, run

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
    from polar_render.config import write_scene_variant

    return write_scene_variant(tmp_path / f"{name}_variant.yaml", name, **overrides)
