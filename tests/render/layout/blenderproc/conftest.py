"""Whether the ``blenderproc`` extra (bpy 4.2.0, Python 3.11) is installed: the tests that run
BlenderProc are skipped without it."""
from __future__ import annotations

import sys

import pytest

from polar_render.layout.blenderproc import compat as blenderproc_compat

HAVE_EXTRA = all(v is not None for v in blenderproc_compat.versions().values()) and sys.version_info[:2] == (3, 11)
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="blenderproc extra not installed (make setup EXTRAS=blenderproc)")
