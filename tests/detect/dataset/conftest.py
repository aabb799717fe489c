"""Fixtures shared by the dataset tests: ``render`` (the real render of ``real_render``) and
``built`` (a dataset built from it: (dir, manifest, summary line))."""
import pytest

from polar_detect.dataset.build import build_from_renders

from tests.detect.dataset.real_render import render_dir


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    return render_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def built(render, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "usb_brick"
    manifest, line = build_from_renders([render], out, "intensity,aolp,dolp,normals,pol0,pol90,stokes",
                                        seed=0, progress=False)
    return out, manifest, line
