"""The BlenderProc compatibility layer (polar_render.layout.blenderproc.compat): the supported
versions are enforced, and every BlenderProc/bpy internal it relies on is checked by name."""
from __future__ import annotations

import inspect
import sys

import pytest

from polar_render.layout.blenderproc import compat as blenderproc_compat
from polar_render.layout.blenderproc.compat import BlenderProcUnavailable

from tests.render.layout.blenderproc.conftest import needs_extra


def test_wrong_version_is_refused(monkeypatch):
    monkeypatch.setattr(blenderproc_compat, "versions", lambda: {"blenderproc": "2.9.0", "bpy": "4.2.0"})
    with pytest.raises(BlenderProcUnavailable, match=r"blenderproc 2\.9\.0 \(supported: 2\.8\.0\)"):
        blenderproc_compat.check_available()


@needs_extra
def test_compat_layer_patch_points():
    """Everything blenderproc_compat relies on, by name: fails loudly on a BlenderProc/bpy upgrade."""
    assert blenderproc_compat.versions() == blenderproc_compat.SUPPORTED
    import importlib.util
    import os

    pkg = os.path.dirname(importlib.util.find_spec("blenderproc").origin)
    init_src = open(os.path.join(pkg, "__init__.py")).read()
    assert 'if "INSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT" in os.environ' in init_src
    assert "sys.path.remove(os.path.abspath(os.path.join(os.path.dirname(__file__), \"..\")))" in init_src
    assert "SetupUtility.setup([])" in init_src
    bproc = blenderproc_compat.import_blenderproc()
    from blenderproc.python.utility import Initializer
    from blenderproc.python.utility.SetupUtility import SetupUtility

    assert callable(SetupUtility.setup_utility_paths)
    assert 'preferences.view.language = "en_US"' in inspect.getsource(Initializer.init)
    assert Initializer.bpy is sys.modules["bpy"]
    for name in ("init", "clean_up"):
        assert callable(getattr(bproc, name))
    for api in ("loader.load_obj", "object.sample_poses", "object.simulate_physics_and_fix_final_poses",
                "object.compute_poi", "object.create_primitive", "object.create_bvh_tree_multi_objects",
                "sampler.shell", "sampler.uniformSO3", "camera.rotation_from_forward_vec",
                "camera.add_camera_pose", "camera.set_intrinsics_from_K_matrix", "camera.depth_via_raytracing",
                "math.build_transformation_mat", "math.change_source_coordinate_frame_of_transformation_matrix",
                "writer.write_bop", "utility.num_frames"):
        mod, fn = api.split(".")
        assert callable(getattr(getattr(bproc, mod), fn)), api
    # the patched installer refuses instead of pip-installing
    with pytest.raises(RuntimeError, match="pip install"):
        SetupUtility.setup_pip(["bop_toolkit"])
