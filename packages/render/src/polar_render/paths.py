"""Paths named inside data files stay inside their root.

Scene files, BOP layouts, dataset manifests and ``predictions.json`` name other files.
Such a file may come from someone else, so a name in it is data: it is resolved (symlinks
followed, ``..`` collapsed) and must land inside the directory it belongs to, or inside
one of the explicitly allowed extra roots (e.g. an asset directory for scene meshes).
Anything else is refused with :class:`UnsafePathError`, naming the data file, the key and
the path. A symlink loop is reported as a loop, not as a missing file.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path


class UnsafePathError(ValueError):
    """A path read from a data file escapes its root, loops, or cannot be resolved."""


def resolve_checked(path: str | os.PathLike, *, source: str | os.PathLike, key: str) -> Path:
    """``path`` resolved through every symlink; a loop raises :class:`UnsafePathError`.

    A missing final component is allowed (``strict=False``); whether the file must exist is
    the caller's business.
    """
    p = Path(path)
    try:
        return p.resolve(strict=False)
    except RuntimeError as exc:  # Python < 3.13: "Symlink loop from ..."
        raise UnsafePathError(f"{source}: {key}: symlink loop at {p}") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePathError(f"{source}: {key}: symlink loop at {p}") from exc
        raise UnsafePathError(f"{source}: {key}: cannot resolve {p}: {exc.strerror or exc}") from exc


def _is_loop(p: Path) -> bool:
    try:
        os.stat(p)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def contained(root: str | os.PathLike, name: str | os.PathLike, *, source: str | os.PathLike, key: str,
              allowed: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Resolve ``name`` (relative to ``root``, or absolute) and require it inside ``root``
    or one of ``allowed`` (all resolved too).

    ``source`` is the data file the name was read from and ``key`` where in it (e.g.
    ``objects.1.parts.top.mesh``); both appear in every error. Returns the resolved path.
    """
    if not isinstance(name, (str, os.PathLike)) or str(name) == "":
        raise UnsafePathError(f"{source}: {key}: expected a relative path, got {name!r}")
    if "\x00" in str(name):
        raise UnsafePathError(f"{source}: {key}: path contains a NUL byte")
    joined = Path(root) / name
    if _is_loop(joined):
        raise UnsafePathError(f"{source}: {key}: symlink loop at {joined}")
    target = resolve_checked(joined, source=source, key=key)
    roots = [resolve_checked(r, source=source, key=f"{key} (root)") for r in (root, *allowed)]
    if any(target == r or r in target.parents for r in roots):
        return target
    where = " or ".join(str(r) for r in roots)
    raise UnsafePathError(f"{source}: {key}: {name!s} resolves to {target}, outside {where}; "
                          f"paths in data files must stay inside their directory")
