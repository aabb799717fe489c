"""Paths named inside data files stay inside their root (polar_render.paths.contained): escapes
through ``..``, absolute paths and symlinks are refused naming the data file and the key, a
symlink loop is reported as a loop, and explicitly allowed roots are accepted."""
from __future__ import annotations

import os

import pytest

from polar_render.paths import UnsafePathError, contained, resolve_checked

SRC, KEY = "scene.yaml", "objects.1.parts.top.mesh"


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "sub" / "a.ply").write_text("x")
    (tmp_path / "outside.ply").write_text("y")
    return r


def _refused(root, name, *needles, allowed=()):
    with pytest.raises(UnsafePathError) as ei:
        contained(root, name, source=SRC, key=KEY, allowed=allowed)
    msg = str(ei.value)
    assert msg.startswith(f"{SRC}: {KEY}: "), msg
    for s in needles:
        assert s in msg, (s, msg)
    return msg


def test_names_inside_the_root_resolve_to_the_file(root):
    assert contained(root, "sub/a.ply", source=SRC, key=KEY) == (root / "sub" / "a.ply").resolve()
    assert contained(root, "sub/../sub/a.ply", source=SRC, key=KEY) == (root / "sub" / "a.ply").resolve()
    assert contained(root, str(root / "sub" / "a.ply"), source=SRC, key=KEY) == (root / "sub" / "a.ply").resolve()
    assert contained(root, "sub/not_yet.ply", source=SRC, key=KEY) == (root / "sub" / "not_yet.ply").resolve()


def test_dotdot_and_absolute_escapes_are_refused(root):
    _refused(root, "../outside.ply", "../outside.ply", "outside", str(root.resolve()))
    _refused(root, "sub/../../outside.ply", "outside")
    _refused(root, str(root.parent / "outside.ply"), "outside")
    _refused(root, "/etc/passwd", "/etc/passwd", "outside")


def test_symlinks_are_followed_and_must_land_inside(root):
    os.symlink(root / "sub" / "a.ply", root / "inside_link.ply")
    assert contained(root, "inside_link.ply", source=SRC, key=KEY) == (root / "sub" / "a.ply").resolve()
    os.symlink(root.parent / "outside.ply", root / "escape.ply")
    msg = _refused(root, "escape.ply", "escape.ply", "outside")
    assert str((root.parent / "outside.ply").resolve()) in msg     # where it really goes
    os.symlink(root.parent, root / "up")                          # a directory link out of the root
    _refused(root, "up/outside.ply", "outside")


def test_symlink_loops_are_named_as_loops(root):
    os.symlink(root / "loop_b", root / "loop_a")
    os.symlink(root / "loop_a", root / "loop_b")
    _refused(root, "loop_a", "symlink loop")
    os.symlink(root / "self", root / "self")
    _refused(root, "self", "symlink loop")
    with pytest.raises(UnsafePathError, match=rf"^{SRC}: {KEY}: symlink loop"):
        resolve_checked(root / "loop_a" / "x", source=SRC, key=KEY)


def test_allowed_roots_extend_the_root(root, tmp_path):
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "b.ply").write_text("z")
    _refused(root, str(assets / "b.ply"), "outside")
    assert contained(root, str(assets / "b.ply"), source=SRC, key=KEY, allowed=(assets,)) == (assets / "b.ply").resolve()
    msg = _refused(root, "../outside.ply", allowed=(assets,))
    assert f"outside {root.resolve()} or {assets.resolve()}" in msg


@pytest.mark.parametrize("name, needle", [("", "expected a relative path"), (None, "expected a relative path"),
                                          (3, "expected a relative path"), ("a\x00b", "NUL byte")])
def test_names_that_are_not_paths_are_refused(root, name, needle):
    _refused(root, name, needle)
