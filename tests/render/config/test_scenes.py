"""Scene files read and written (polar_render.config.scenes): ``load_scene`` (defaults merged,
digest of the file as written, duplicate keys refused, errors naming the file and the key),
``write_scene_variant`` (dotted overrides, round trip) and ``randomization_strength``."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from polar_render.config import schema
from polar_render.config.scenes import (DEFAULTS, REPO_ROOT, STRENGTH_RANGES, STRENGTH_TOLERANCES, SceneConfigError, _merge,
                                 load_scene, write_scene_variant)

from tests.render.config.conftest import MINIMAL, write_scene_text
from tests.render.conftest import PLAIN_SCENE


PLAIN_TEXT = PLAIN_SCENE.read_text()   # the plain test scene: one default material, no objects
SCENES = ("usb_brick", "usb_brick_station", "aluminum_plate")


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


def test_no_anomalies_section_means_no_anomalies(tmp_path):
    cfg = load_scene(write_scene_text(tmp_path, MINIMAL))
    assert cfg.anomalies == {} and cfg.layout == {}


def test_duplicate_yaml_keys_are_refused(tmp_path):
    text = (REPO_ROOT / "scenes" / "usb_brick" / "scene.yaml").read_text() + "\nrender: {spp: 1}\n"
    scene = tmp_path / "usb_brick"
    shutil.copytree(REPO_ROOT / "scenes" / "usb_brick", scene)
    (scene / "scene.yaml").write_text(text.replace("../../assets", str(REPO_ROOT / "assets")))
    with pytest.raises(SceneConfigError, match="duplicate key 'render'"):
        load_scene(scene / "scene.yaml")


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


MESH = (REPO_ROOT / "assets" / "usb_brick" / "brick_top.ply").as_posix()


OBJ = "objects: {1: {parts: {body: {mesh: %s, material: %s}}}}\n"


BAD_SCENES = {
    "unknown_top_key": (PLAIN_TEXT + "colour_space: srgb\n", ["colour_space"]),
    "unknown_material": (PLAIN_TEXT + OBJ % (MESH, "shiny"), ["objects.1.parts.body.material", "'shiny'"]),
    "missing_mesh": (PLAIN_TEXT + OBJ % ("no_such_mesh.ply", "default"),
                     ["objects.1.parts.body.mesh", "no_such_mesh.ply"]),
    "bad_material_range": (PLAIN_TEXT.replace("alpha: [0.05, 0.2]", "alpha: [1, 0]"),
                           ["materials.default.alpha", "[1, 0]"]),
    "bad_light_range": (PLAIN_TEXT + "lights: {spot: {intensity: [1, 0]}}\n", ["lights.spot.intensity", "[1, 0]"]),
    "bad_azimuth_range": (PLAIN_TEXT + "lights: {spot: {azimuth_deg: [1, 0]}}\n",
                          ["lights.spot.azimuth_deg", "[1, 0]"]),
    "bad_ground_range": (PLAIN_TEXT + "background: {ground: {alpha: [1, 0]}}\n",
                         ["background.ground.alpha", "[1, 0]"]),
    "bad_env_range": (PLAIN_TEXT + "background: {environment: {radiance: [1, 0]}}\n",
                      ["background.environment.radiance", "[1, 0]"]),
    "misspelled_material_key": (PLAIN_TEXT.replace("alpha: [0.05, 0.2]", "alpah: [0.05, 0.2]"),
                                ["materials.default", "alpah"]),
    "part_without_mesh": (PLAIN_TEXT + "objects: {1: {parts: {body: {material: default}}}}\n",
                          ["objects.1.parts.body.mesh", "required"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SCENES))
def test_scene_config_errors(tmp_path, case):
    text, needles = BAD_SCENES[case]
    path = write_scene_text(tmp_path, text)
    with pytest.raises(SceneConfigError) as ei:
        load_scene(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for s in needles:
        assert s in msg, (s, msg)


def test_plain_scene_loads(tmp_path):
    cfg = load_scene(write_scene_text(tmp_path, PLAIN_TEXT + OBJ % (MESH, "default")))
    assert cfg.name == "plain" and cfg.objects[1].parts[0].source == Path(MESH)   # .mesh: converted (crease normals)


def test_scene_variant_dotted_overrides(tmp_path):
    """write_scene_variant(dotted=...): nested keys set or removed, the rest unchanged; a
    path through a non-mapping is refused naming the scene file."""
    base = load_scene("usb_brick").raw
    dest = write_scene_variant(tmp_path / "v.yaml", "usb_brick",
                               dotted={"anomalies.classes.dent": None, "sensor.dofp.enabled": True,
                                       "anomalies.probability": 1.0})
    raw = load_scene(dest).raw
    assert "dent" not in raw["anomalies"]["classes"] and "bump" in raw["anomalies"]["classes"]
    assert raw["anomalies"]["probability"] == 1.0 and raw["sensor"]["dofp"] == {"enabled": True}
    assert raw["layout"] == base["layout"] and raw["materials"] == base["materials"]
    with pytest.raises(SceneConfigError, match=r"scene\.yaml: cannot set render\.spp\.x: 'spp' is not a mapping"):
        write_scene_variant(tmp_path / "w.yaml", "usb_brick", dotted={"render.spp.x": 1})
