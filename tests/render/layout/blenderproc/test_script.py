"""The script ``blenderproc run`` executes inside Blender (polar_render.layout.blenderproc.script):
it passes BlenderProc's start-up check, imports nothing of polar_render, and converts azimuth
ranges to BlenderProc's convention."""
from __future__ import annotations

import subprocess
import sys

import pytest

from polar_render.layout.blenderproc import backend as layout_blenderproc

from tests.render.layout.blenderproc.conftest import HAVE_EXTRA


def test_script_passes_blenderproc_startup_check():
    """`blenderproc run` refuses scripts whose first import is not blenderproc; and the script
    must not import polar_render (Blender's Python does not have it)."""
    if not HAVE_EXTRA:
        pytest.skip("blenderproc not installed")
    text = layout_blenderproc.SCRIPT.read_text()
    code = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert code[0].startswith("import blenderproc as bproc")
    assert "polar_render" not in "\n".join(ln for ln in code if ln.startswith(("import", "from")))
    # BlenderProc's own check (command_line.py runs it before starting Blender)
    src = subprocess.run([sys.executable, "-c", (
        "import importlib.util, os, sys, types\n"
        "spec = importlib.util.find_spec('blenderproc')\n"
        "bare = types.ModuleType('blenderproc'); bare.__path__ = [os.path.dirname(spec.origin)]\n"
        "sys.modules['blenderproc'] = bare\n"
        "from blenderproc.python.utility.SetupUtility import SetupUtility\n"
        f"SetupUtility.check_if_setup_utilities_are_at_the_top({str(layout_blenderproc.SCRIPT)!r})\n"
        "print('ok')")], capture_output=True, text=True)
    assert src.returncode == 0 and src.stdout.strip() == "ok", src.stderr


def test_azimuth_conversion():
    """BlenderProc's shell takes azimuth in [-180, 180]; ranges map to the same directions."""
    import importlib.util

    real = sys.modules.get("blenderproc")
    if real is None:     # the script's first line imports blenderproc; a stand-in is enough here
        sys.modules["blenderproc"] = type(sys)("blenderproc")
    spec = importlib.util.spec_from_file_location("_bp_script", layout_blenderproc.SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        if real is None:
            del sys.modules["blenderproc"]
    assert mod.blenderproc_azimuth(0, 360) == (-180, 180)
    assert mod.blenderproc_azimuth(200, 300) == (-160, -60)
    assert mod.blenderproc_azimuth(-90, 90) == (-90, 90)
    with pytest.raises(ValueError, match="crosses 180"):
        mod.blenderproc_azimuth(90, 270)
