"""Run BlenderProc 2.8 in this Python process, with Blender as a module (``bpy==4.2.0``).

BlenderProc expects to be started by ``blenderproc run`` inside Blender's own Python.
Three things stop it from working with the ``bpy`` wheel, and this module (the only
place that touches BlenderProc internals) changes exactly those, nothing else:

1. ``import blenderproc`` raises ("This script can only be run by blenderproc run")
   unless ``INSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT`` is set. We set it.
2. With it set, the import calls ``SetupUtility.setup``, which pip-installs BlenderProc's
   pinned packages into "Blender's Python" (derived from ``sys.executable``) and parses
   Blender's ``--`` command line. We replace ``setup`` by a function that only sets
   BlenderProc's temporary directory, and ``setup_pip`` by one that raises (any later
   request to install packages, e.g. ``write_bop(calc_mask_info_coco=True)`` asking for
   the BOP toolkit, fails loudly instead of touching the environment). The import also
   removes BlenderProc's parent directory (our site-packages) from ``sys.path``; we put
   it there twice so that one copy survives.
3. ``bproc.init()`` sets ``preferences.view.language = "en_US"``; the module build of
   Blender ships no translations, so that enum value does not exist and the assignment
   raises. During ``init`` only, BlenderProc's initializer sees the language as already
   ``en_US``; every other attribute is Blender's own.

``tests/render/test_blenderproc_backend.py::test_compat_layer_patch_points`` checks each
patch point by name and version, so a BlenderProc or bpy upgrade that moves them fails
there with a message instead of deep inside a layout run.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import types

SUPPORTED = {"blenderproc": "2.8.0", "bpy": "4.2.0"}
INSTALL_HINT = ("the BlenderProc layout backend needs the optional extra: "
                "`make setup EXTRAS=blenderproc` (or `pip install -e 'packages/render[blenderproc]'`, "
                "which installs blenderproc==2.8.0 and bpy==4.2.0, Python 3.11 only); "
                "or give an installed Blender with BLENDER=/path/to/blender-4.2 (`blenderproc run` mode)")

_bproc = None


class BlenderProcUnavailable(RuntimeError):
    """The optional BlenderProc extra is missing or has an unsupported version."""


def versions() -> dict[str, str | None]:
    """Installed versions of blenderproc and bpy (None where absent), without importing them."""
    from importlib import metadata

    out = {}
    for name in SUPPORTED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_available() -> None:
    """Raise :class:`BlenderProcUnavailable` with the install command unless both packages
    are installed in the supported versions."""
    have = versions()
    missing = [n for n, v in have.items() if v is None]
    if missing:
        raise BlenderProcUnavailable(f"{' and '.join(missing)} not installed: {INSTALL_HINT}")
    wrong = [f"{n} {have[n]} (supported: {v})" for n, v in SUPPORTED.items() if have[n] != v]
    if wrong:
        raise BlenderProcUnavailable(f"unsupported {', '.join(wrong)}: the in-process compatibility layer "
                                     f"(polar_render/layout/blenderproc/compat.py) is written for exactly these versions; "
                                     f"{INSTALL_HINT}")


class _LanguageIsEnglish:
    """Blender's ``bpy`` seen by BlenderProc's initializer, except that
    ``context.preferences.view.language`` reads ``"en_US"`` (patch 3)."""

    class _View:
        language = "en_US"

    class _Preferences:
        def __init__(self, real):
            self._real = real

        def __getattr__(self, name):
            return getattr(self._real, name)

    class _Context:
        def __init__(self, bpy):
            self._bpy = bpy

        def __getattr__(self, name):
            value = getattr(self._bpy.context, name)
            if name == "preferences":
                prefs = _LanguageIsEnglish._Preferences(value)
                prefs.view = _LanguageIsEnglish._View()
                return prefs
            return value

    def __init__(self, bpy):
        self._bpy = bpy
        self.context = self._Context(bpy)

    def __getattr__(self, name):
        return getattr(self._bpy, name)


def import_blenderproc(temp_dir: str | None = None):
    """Import BlenderProc in-process (patches 1 and 2) and return the ``blenderproc`` module.

    Idempotent. ``temp_dir`` is BlenderProc's scratch directory (default: a new
    temporary directory)."""
    global _bproc
    if _bproc is not None:
        return _bproc
    if "blenderproc" in sys.modules and getattr(sys.modules["blenderproc"], "init", None) is not None:
        _bproc = sys.modules["blenderproc"]       # already running inside BlenderProc
        return _bproc
    check_available()
    spec = importlib.util.find_spec("blenderproc")
    pkg_dir = os.path.dirname(spec.origin)
    parent = os.path.abspath(os.path.join(pkg_dir, ".."))
    scratch = temp_dir or tempfile.mkdtemp(prefix="blenderproc-")

    # Load SetupUtility under a bare package so that its __init__ does not run yet.
    bare = types.ModuleType("blenderproc")
    bare.__path__ = [pkg_dir]
    sys.modules["blenderproc"] = bare
    try:
        from blenderproc.python.utility import SetupUtility as setup_module
    finally:
        del sys.modules["blenderproc"]
    setup_utility = setup_module.SetupUtility

    def setup(user_required_packages=None, *args, **kwargs):
        if user_required_packages:
            raise RuntimeError(f"BlenderProc asked to pip install {user_required_packages} in-process; "
                               f"install them into this environment instead")
        setup_utility.setup_utility_paths(scratch)
        return sys.argv

    def setup_pip(user_required_packages=None, *args, **kwargs):
        raise RuntimeError(f"BlenderProc asked to pip install {user_required_packages} in-process "
                           f"(for write_bop: keep calc_mask_info_coco=False)")

    setup_utility.setup = staticmethod(setup)
    setup_utility.setup_pip = staticmethod(setup_pip)
    os.environ["INSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT"] = "1"
    sys.path.insert(0, parent)         # BlenderProc's __init__ removes one occurrence of it
    sys.path.append(parent)
    try:
        import blenderproc
    finally:
        os.environ.pop("INSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT", None)
        if parent not in sys.path:
            sys.path.append(parent)
    _bproc = blenderproc
    return blenderproc


def init():
    """``bproc.init()`` in-process (patch 3), once per process; later calls only clean up
    the scene (``bproc.clean_up(clean_up_camera=True)``)."""
    bproc = import_blenderproc()
    import bpy
    from blenderproc.python.utility import Initializer as initializer
    from blenderproc.python.utility.GlobalStorage import GlobalStorage

    if GlobalStorage.is_in_storage("bproc_init_complete") and GlobalStorage.get("bproc_init_complete"):
        bproc.clean_up(clean_up_camera=True)
        return bproc
    initializer.bpy = _LanguageIsEnglish(bpy)
    try:
        bproc.init()
    finally:
        initializer.bpy = bpy
    return bproc
