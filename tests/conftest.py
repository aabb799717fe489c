"""Shared pytest fixtures for the monorepo tests."""
from pathlib import Path

import pytest

# The repository is cloned next to a `shared/` folder (e.g. /work/main and /work/shared).
_SHARED = Path(__file__).parents[1].parent / "shared"


@pytest.fixture(scope="session")
def bop_fixture_dir() -> Path:
    """A BOP layout written by BlenderProc 2.8 (see its README.md)."""
    path = _SHARED / "fixtures" / "blenderproc_bop_example"
    if not path.is_dir():
        pytest.skip(f"BlenderProc BOP fixture not found at {path} (expected the repo next to a shared/ folder)")
    return path
