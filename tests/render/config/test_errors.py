"""The error of a malformed scene file (polar_render.config.errors): a ValueError (CLIs exit 2),
the one raised by loading, schema checks and variants alike."""
from __future__ import annotations

import pytest

from polar_render.config import scenes, schema
from polar_render.config.errors import SceneConfigError


def test_one_error_class_for_every_scene_file_problem(tmp_path):
    assert issubclass(SceneConfigError, ValueError)
    assert scenes.SceneConfigError is SceneConfigError and schema.SceneConfigError is SceneConfigError
    bad = tmp_path / "scene.yaml"
    bad.write_text("render: {spp: 0}\n")
    with pytest.raises(SceneConfigError, match=rf"^{bad}: render\.spp: "):
        scenes.load_scene(bad)
    with pytest.raises(SceneConfigError, match=r"^no scene .*missing\.yaml.*; known scenes: .*usb_brick"):
        scenes.load_scene(tmp_path / "missing.yaml")
