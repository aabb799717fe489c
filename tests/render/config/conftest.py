"""Helpers shared by the scene-file tests (schema, scenes, defaults): a minimal scene text
naming a shipped part mesh, written where a test wants it."""
from __future__ import annotations

from pathlib import Path

from polar_render.config.scenes import REPO_ROOT

PLUG = REPO_ROOT / "assets" / "usb_brick" / "plug.ply"
MINIMAL = "objects:\n  1:\n    parts:\n      plug: {mesh: %s}\n" % PLUG


def write_scene_text(tmp_path: Path, text: str, name: str = "scene.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p
