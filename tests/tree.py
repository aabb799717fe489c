"""Snapshots of a directory tree, for tests that prove an input was left unchanged and
nothing was written (every bad-input corpus)."""
from __future__ import annotations

import os
from pathlib import Path


def snapshot(root: Path) -> dict:
    """{relative path: bytes, ``"dir"``, or ``"link -> target"``} of everything under
    ``root`` (``{".": bytes}`` for a file, ``{}`` when absent), without following symlinks
    (a symlink loop must not break the snapshot)."""
    root = Path(root)
    if not root.exists() and not root.is_symlink():
        return {}
    if root.is_file():
        return {".": root.read_bytes()}
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = "dir"
    return out
