"""The scene-file schema (polar_render.schema): shipped scenes validate, defaults are filled
from their one source, errors are one line per problem at a dotted key, the key reference in
scenes/README.md is generated from the schema, and the modules that used to check values
themselves (layout, sensor, strength clipping) now go through it."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from polar_render import schema
from polar_render.config import (DEFAULTS, REPO_ROOT, STRENGTH_RANGES, STRENGTH_TOLERANCES, SceneConfigError, _merge,
                                 load_scene, write_scene_variant)
from polar_render.layout import LayoutConfig
from polar_render.sensor import SensorModel

SCENES = ("usb_brick", "usb_brick_station", "aluminum_plate")
PLUG = REPO_ROOT / "assets" / "usb_brick" / "plug.ply"
MINIMAL = "objects:\n  1:\n    parts:\n      plug: {mesh: %s}\n" % PLUG


def _write(tmp_path: Path, text: str, name: str = "scene.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", SCENES)
def test_shipped_scene_validates_and_digest_is_the_file_as_written(name):
    cfg = load_scene(name)
    assert cfg.objects and cfg.layout["instances"] and cfg.materials
    # the digest (run.json config_digest) hashes the file merged with DEFAULTS, not the schema's
    # filled-in defaults: adding a default to the schema does not change existing runs' digests
    raw = yaml.safe_load(cfg.path.read_text())
    ring_only = "spot" not in raw.get("lights", {"spot": None})
    blob = json.dumps(_merge({**DEFAULTS, "lights": {}} if ring_only else DEFAULTS, raw), sort_keys=True,
                      default=str).encode()
    assert cfg.digest() == hashlib.sha256(blob).hexdigest()[:16]
    for obj in cfg.objects.values():
        for part in obj.parts:
            assert part.mesh.is_absolute() and part.mesh.is_file() and part.material in cfg.materials


@pytest.mark.parametrize("name", SCENES)
def test_round_trip_through_write_scene_variant(tmp_path, name):
    """A variant written with no changes loads to the same normalised configuration."""
    a = load_scene(name)
    b = load_scene(write_scene_variant(tmp_path / "v" / "scene.yaml", name))
    for k in ("layout", "lights", "background", "sensor", "render", "anomalies", "materials", "default_material"):
        assert getattr(a, k) == getattr(b, k), k
    assert {o: [(p.name, p.mesh, p.material) for p in spec.parts] for o, spec in a.objects.items()} == \
           {o: [(p.name, p.mesh, p.material) for p in spec.parts] for o, spec in b.objects.items()}


def test_defaults_are_filled_from_their_one_source(tmp_path):
    """A minimal file gets every default: layout from LayoutConfig, lights/ground/sensor/render
    from config.DEFAULTS, the ring from lights.RING_DEFAULTS, anomaly keys from the schema
    (equal to what the samplers used to assume), dofp from SensorModel."""
    text = MINIMAL + """\
layout: {instances: [1]}
sensor: {dofp: {enabled: true}}
anomalies:
  classes:
    water_stain: {parts: [plug], radius_mm: 1.0, cell_mm: 8.0}
    extra: {parts: [plug]}
"""
    cfg = load_scene(_write(tmp_path, text))
    lc = {f.name: f.default for f in dataclasses.fields(LayoutConfig) if f.default is not dataclasses.MISSING}
    assert cfg.layout["mode"] == "drop"
    for k in ("xy_range_mm", "cameras_per_scene", "look_at_jitter_mm", "friction", "settle_max_s", "width", "fx"):
        assert cfg.layout[k] == lc[k], k
    assert list(cfg.layout["elevation_deg"]) == list(lc["elevation_deg"])
    assert cfg.lights["spot"] == DEFAULTS["lights"]["spot"]
    assert cfg.background == DEFAULTS["background"]
    assert cfg.render == {**DEFAULTS["render"], "denoise": "none"}
    assert SensorModel.from_dict({k: v for k, v in cfg.sensor["dofp"].items() if k != "enabled"}) == SensorModel()
    stain = cfg.anomalies["classes"]["water_stain"]
    assert (stain["frequency_per_mm"], stain["amplitude_mm"], stain["gamma"], stain["alpha"],
            stain["roughness_scale"], stain["weight"]) == (0.5, 0.0, 2.0, -0.2, 1.0, 1.0)
    assert cfg.anomalies["classes"]["extra"]["offset_mm"] == [0.0, 0.0, 0.0]
    assert (cfg.anomalies["probability"], cfg.anomalies["count"], cfg.anomalies["mask_supersampling"],
            cfg.anomalies["min_visible_px"], cfg.anomalies["max_view_angle_deg"]) == (0.5, 1, 3, 40, 75.0)
    assert "dent" not in cfg.anomalies["classes"]      # absent classes stay absent
    assert cfg.objects[1].parts[0].material == "default"
    assert cfg.materials["default"] == {"type": "pplastic", "color": [0.0, 1.0], "color_tolerance": 0.0,
                                        "alpha": [0.05, 0.3], "ior": 1.49}
    from polar_render.randomize import sample_material
    import numpy as np

    drawn = sample_material(np.random.default_rng(0), "default", cfg.materials["default"])
    assert 0.05 <= drawn["alpha"] <= 0.3 and drawn["ior"] == 1.49 and len(drawn["color"]) == 3

    ring = load_scene(_write(tmp_path, text.replace("sensor:", "lights: {ring: {}}\nsensor:"), "ring.yaml"))
    from polar_render.lights import RING_DEFAULTS

    assert ring.lights == {"ring": RING_DEFAULTS}        # a ring-only file gets no spot


def test_no_anomalies_section_means_no_anomalies(tmp_path):
    cfg = load_scene(_write(tmp_path, MINIMAL))
    assert cfg.anomalies == {} and cfg.layout == {}


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


def test_duplicate_yaml_keys_are_refused(tmp_path):
    text = (REPO_ROOT / "scenes" / "usb_brick" / "scene.yaml").read_text() + "\nrender: {spp: 1}\n"
    scene = tmp_path / "usb_brick"
    shutil.copytree(REPO_ROOT / "scenes" / "usb_brick", scene)
    (scene / "scene.yaml").write_text(text.replace("../../assets", str(REPO_ROOT / "assets")))
    with pytest.raises(SceneConfigError, match="duplicate key 'render'"):
        load_scene(scene / "scene.yaml")


def test_key_reference_in_readme_is_current():
    readme = (REPO_ROOT / "scenes" / "README.md").read_text()
    assert schema.readme_with_reference(readme) == readme, \
        "scenes/README.md is stale: run python -m polar_render.schema --write-readme"
    ref = schema.key_reference()
    for key in ("lights.spot.elevation_deg", "sensor.dofp.enabled", "layout.views.<view>.elevation_deg",
                "anomalies.classes.scratch.curvature_radius_mm", "materials.<name>.conductor", "render.spp"):
        assert f"| `{key}` |" in ref, key


def test_strength_clips_to_the_schema_bounds(tmp_path):
    """randomization_strength widens ranges up to each key's valid interval in the schema
    (one definition of the bounds): the strengthened file still validates."""
    for dotted in STRENGTH_RANGES + STRENGTH_TOLERANCES:
        b = schema.bounds(dotted)
        assert not b.lo_open, dotted              # a clip value must itself be valid
    cfg = load_scene(write_scene_variant(tmp_path / "s.yaml", "usb_brick", randomization_strength=10))
    lo, hi = cfg.layout["elevation_deg"]
    assert hi == schema.bounds("layout.elevation_deg").hi and lo == 0.0
    assert cfg.lights["spot"]["elevation_deg"][1] == 90.0
    assert cfg.materials["metal"]["alpha"] == [1e-4, 1.0]


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
        LayoutConfig.from_dict({"instances": [1], "elevation_deg": [20, 185]})
    with pytest.raises(ValueError, match=r"layout\.distance_m: unknown key"):   # topdown key in drop mode
        LayoutConfig.from_dict({"instances": [1], "distance_m": 0.3})
    assert LayoutConfig.from_dict({"mode": "topdown", "instances": [1], "distance_m": 0.3}).distance_m == (0.3, 0.3)
    with pytest.raises(ValueError, match=r"bit_depth: 17 is out of range"):
        SensorModel(bit_depth=17)
    with pytest.raises(ValueError, match=r"full_well_e: expected a finite number"):
        SensorModel(full_well_e=float("inf"))


def test_meshes_in_polar_asset_dirs_are_allowed(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(PLUG, assets / "plug.ply")
    (tmp_path / "scene").mkdir()
    scene = _write(tmp_path / "scene", MINIMAL.replace(str(PLUG), str(assets / "plug.ply")))
    with pytest.raises(SceneConfigError, match=r"objects\.1\.parts\.plug\.mesh: .* outside"):
        load_scene(scene)
    monkeypatch.setenv("POLAR_ASSET_DIRS", os.pathsep.join(["/nonexistent-dir", str(assets)]))
    part = load_scene(scene).objects[1].parts[0]
    assert part.source == assets / "plug.ply" and part.mesh.is_file()   # mesh: the converted PLY (crease normals)
