"""The scene-file schema (polar_render.config.schema): errors are one line per problem at a
dotted key, cross-key checks all reported, the key reference in scenes/README.md is generated
from the schema, the modules that used to check values themselves (layout, sensor) go through
it, and meshes may live in POLAR_ASSET_DIRS. Loading and writing scene files:
test_scenes.py; defaults: test_defaults.py; the bad-input corpus: test_schema_bad_inputs.py."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from polar_render.config import schema
from polar_render.config.scenes import REPO_ROOT, SceneConfigError, load_scene, write_scene_variant
from polar_render.physics.dofp import SensorModel

from tests.render.config.conftest import MINIMAL, PLUG, write_scene_text


def test_errors_are_one_line_per_problem_at_a_dotted_key(tmp_path):
    dest = write_scene_variant(tmp_path / "scene.yaml", "usb_brick", dotted={
        "materials.metal.alpha": [0.5, 0.1],          # inside a type-tagged union: no tag in the path
        "layout.radius_m": [0.1, 0.2, 0.3],           # inside a mode-tagged union
        "objects.1.parts.plug.scale": 1000,           # integer mapping key
        "anomalies.classes.dent.weight": -1,
        "sensor.dofp": {"enable": True}})
    with pytest.raises(SceneConfigError) as ei:
        load_scene(dest)
    lines = str(ei.value).splitlines()
    keys = {"materials.metal.alpha", "layout.radius_m", "objects.1.parts.plug.scale",
            "anomalies.classes.dent.weight", "sensor.dofp.enable"}
    assert len(lines) == len(keys), lines
    pattern = re.compile(rf"^{re.escape(str(dest))}: ([A-Za-z0-9_.]+): \S")
    assert {pattern.match(line).group(1) for line in lines} == keys
    assert "did you mean 'enabled'" in str(ei.value) and "Extra inputs" not in str(ei.value)


def test_cross_key_errors_are_all_reported(tmp_path):
    dest = write_scene_variant(tmp_path / "scene.yaml", "usb_brick", dotted={
        "objects.1.parts.plug.material": "gold", "layout.instances": [1, 7],
        "anomalies.classes.missing.parts": ["plugg"]})
    with pytest.raises(SceneConfigError) as ei:
        load_scene(dest)
    msg = str(ei.value)
    for key in ("objects.1.parts.plug.material", "layout.instances.1", "anomalies.classes.missing.parts.0"):
        assert f"{dest}: {key}: " in msg, (key, msg)


def test_key_reference_in_readme_is_current():
    readme = (REPO_ROOT / "scenes" / "README.md").read_text()
    assert schema.readme_with_reference(readme) == readme, \
        "scenes/README.md is stale: run python -m polar_render.config.schema --write-readme"
    ref = schema.key_reference()
    for key in ("lights.spot.elevation_deg", "sensor.dofp.enabled", "layout.views.<view>.elevation_deg",
                "anomalies.classes.scratch.curvature_radius_mm", "materials.<name>.conductor", "render.spp"):
        assert f"| `{key}` |" in ref, key


def test_conductor_names_are_those_mitsuba_loads():
    """The schema's conductor list is what Mitsuba's conductor plugin loads: every listed name
    loads, and the data/ior files left out (all-zero spectra) or misspelt names do not."""
    import mitsuba as mi

    assert {"Al", "Cr", "Cu", "Au", "Ag", "none"} <= set(schema.CONDUCTORS)
    mi.set_variant("scalar_spectral_polarized")
    for name in schema.CONDUCTORS:
        mi.load_dict({"type": "roughconductor", "material": name})
    ior = Path(mi.__file__).parent / "data" / "ior"
    left_out = {p.name.split(".")[0] for p in ior.glob("*.eta.spd")} - set(schema.CONDUCTORS)
    assert left_out and "Alu" not in schema.CONDUCTORS
    for name in sorted(left_out) + ["Alu"]:
        with pytest.raises(RuntimeError):
            mi.load_dict({"type": "roughconductor", "material": name})


def test_layout_and_sensor_models_use_the_schema():
    with pytest.raises(ValueError, match=r"layout\.elevation_deg: .*185"):
        schema.layout_from_dict({"instances": [1], "elevation_deg": [20, 185]})
    with pytest.raises(ValueError, match=r"layout\.distance_m: unknown key"):   # topdown key in drop mode
        schema.layout_from_dict({"instances": [1], "distance_m": 0.3})
    assert schema.layout_from_dict({"mode": "topdown", "instances": [1], "distance_m": 0.3}).distance_m == (0.3, 0.3)
    with pytest.raises(ValueError, match=r"bit_depth: 17 is out of range"):
        SensorModel(bit_depth=17)
    with pytest.raises(ValueError, match=r"full_well_e: expected a finite number"):
        SensorModel(full_well_e=float("inf"))


def test_meshes_in_polar_asset_dirs_are_allowed(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(PLUG, assets / "plug.ply")
    (tmp_path / "scene").mkdir()
    scene = write_scene_text(tmp_path / "scene", MINIMAL.replace(str(PLUG), str(assets / "plug.ply")))
    with pytest.raises(SceneConfigError, match=r"objects\.1\.parts\.plug\.mesh: .* outside"):
        load_scene(scene)
    monkeypatch.setenv("POLAR_ASSET_DIRS", os.pathsep.join(["/nonexistent-dir", str(assets)]))
    part = load_scene(scene).objects[1].parts[0]
    assert part.source == assets / "plug.ply" and part.mesh.is_file()   # mesh: the converted PLY (crease normals)
