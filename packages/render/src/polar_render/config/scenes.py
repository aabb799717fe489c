"""Scene files: ``scenes/<name>/scene.yaml``.

A scene file names the parts of each BOP object, their materials and every
randomisation range. Relative paths (meshes) are resolved against the scene file's
directory. A range is written ``[lo, hi]`` (uniform) or a single number (fixed).
Units: metres for the world (lights, ground), millimetres for BOP models and meshes (a part's
``unit`` converts its file), degrees for angles in the file (radians in code). Part meshes of any
supported format are read, checked and converted at load (``polar_render.parts.meshes``); the
objects' ``PartSpec.mesh`` is the PLY the renderer reads. See ``scenes/README.md``.

:func:`load_scene` merges ``DEFAULTS``, validates the whole file against the one schema
(``polar_render.config.schema``: every key, type, bound and mesh, before any work; one error line per
problem naming the file and the dotted key) and returns the normalised sections (defaults
filled in) that the rest of the code reads without further checks.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from polar_render.config.defaults import DEFAULTS, REPO_ROOT
from polar_render.config.errors import SceneConfigError
from polar_render.config.fields import Bounds, _range, as_range
from polar_render.config.schema import IMPLICIT_DEFAULT_MATERIAL, bounds, validate_scene


@dataclass(frozen=True)
class PartSpec:
    name: str
    mesh: Path          # the PLY the renderer reads: mm, object's BOP model frame (polar_render.parts.meshes)
    material: str       # key into SceneConfig.materials
    source: Path | None = None   # the mesh file the scene names (mesh itself unless it was converted)


@dataclass(frozen=True)
class ObjectSpec:
    obj_id: int
    name: str
    parts: tuple[PartSpec, ...]


@dataclass
class SceneConfig:
    name: str
    path: Path
    objects: dict[int, ObjectSpec]
    default_material: str
    materials: dict[str, dict]
    layout: dict
    lights: dict
    background: dict
    sensor: dict
    render: dict
    anomalies: dict = field(default_factory=dict)   # see polar_render/anomalies/
    raw: dict = field(repr=False, default_factory=dict)

    def digest(self) -> str:
        """Stable hash of the effective configuration (recorded with every sample)."""
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def scenes_dir() -> Path:
    return Path(os.environ.get("POLAR_SCENES_DIR", REPO_ROOT / "scenes"))


def resolve_scene_path(name_or_path: str | os.PathLike) -> Path:
    """``usb_brick`` -> ``scenes/usb_brick/scene.yaml``; a path to a YAML file or a scene dir is used as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    if p.is_dir() and (p / "scene.yaml").is_file():
        return p / "scene.yaml"
    cand = scenes_dir() / str(name_or_path) / "scene.yaml"
    if cand.is_file():
        return cand
    known = sorted(d.name for d in scenes_dir().glob("*") if (d / "scene.yaml").is_file())
    raise SceneConfigError(f"no scene {str(name_or_path)!r}: looked for {cand}; known scenes: {', '.join(known) or 'none'}")


def _merge(defaults: dict, given: dict) -> dict:
    out = copy.deepcopy(defaults)
    for k, v in (given or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_range(value, where: str, lo=-float("inf"), hi=float("inf")) -> tuple[float, float]:
    """(lo, hi) of a number or [lo, hi] inside [lo, hi] bounds, with the schema's rules
    (``polar_render.config.schema.Range``); SceneConfigError naming ``where`` otherwise."""
    try:
        return as_range(_range(Bounds(lo, hi), False)(value))
    except ValueError as exc:
        raise SceneConfigError(f"{where}: {exc}") from None


def is_rgb(value) -> bool:
    """A nominal linear-RGB colour ``[r, g, b]`` (rather than a range ``[lo, hi]``)."""
    return isinstance(value, (list, tuple)) and len(value) == 3


# Per-sample ranges and tolerances that ``randomization_strength`` scales (dotted paths;
# ``*`` = every key of that mapping). A range [lo, hi] is scaled about its middle and clipped
# to the key's valid interval in the schema (``polar_render.config.schema.bounds``); a tolerance (one
# number meaning +-t) is multiplied and clipped to the schema's upper bound. Fixed numbers
# and [r, g, b] colours stay.
STRENGTH_RANGES = ("materials.*.color", "materials.*.alpha", "materials.*.alpha_u", "materials.*.alpha_v",
                   "materials.*.ior", "lights.spot.radius_m", "lights.spot.elevation_deg", "lights.spot.azimuth_deg",
                   "lights.spot.intensity", "lights.ring.radiance", "background.ground.color",
                   "background.ground.alpha", "background.ground.checker_scale", "background.environment.radiance",
                   "layout.radius_m", "layout.elevation_deg", "layout.azimuth_deg", "layout.inplane_deg",
                   "layout.drop_height_cm", "layout.fill", "layout.distance_m")
STRENGTH_TOLERANCES = ("materials.*.color_tolerance", "layout.look_at_jitter_mm", "layout.xy_range_mm",
                       "layout.xy_jitter_mm", "layout.tilt_deg", "layout.placement_mm", "layout.yaw_deg",
                       "layout.camera_position_mm", "layout.camera_angle_deg")


def _paths(tree: dict, dotted: str):
    """(parent mapping, key) pairs a dotted path with ``*`` wildcards names in ``tree``."""
    nodes = [tree]
    *parents, leaf = dotted.split(".")
    for k in parents:
        nodes = [c for n in nodes for c in (n.values() if k == "*" else [n.get(k)]) if isinstance(c, dict)]
    return [(n, leaf) for n in nodes if leaf in n]


def apply_strength(tree: dict, strength: float) -> None:
    """Scale every per-sample range and tolerance of a merged scene tree in place (see
    ``STRENGTH_RANGES``): strength 1 keeps the file's values, 0 fixes each at its nominal
    (the range's middle), 0.5 halves every spread, 4 widens it four times (clipped to the
    key's valid bounds)."""
    for dotted in STRENGTH_RANGES:
        b = bounds(dotted)
        for node, k in _paths(tree, dotted):
            v = node[k]
            if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
                mid = (v[0] + v[1]) / 2
                node[k] = [max(mid - strength * (mid - v[0]), b.lo), min(mid + strength * (v[1] - mid), b.hi)]
    for dotted in STRENGTH_TOLERANCES:
        hi = bounds(dotted).hi
        for node, k in _paths(tree, dotted):
            if isinstance(node[k], (int, float)) and not isinstance(node[k], bool):
                node[k] = min(node[k] * strength, hi)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the
    last one silently)."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            dup = key in seen
        except TypeError:   # unhashable key: the base constructor reports it
            break
        if dup:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_scene_yaml(path: Path) -> dict:
    """The top-level mapping of a scene file (SceneConfigError for unreadable or invalid YAML)."""
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({exc.context})" if exc.context else ""
        raise SceneConfigError(f"{path}: invalid YAML: {where}{exc.problem}{context}") from None
    except yaml.YAMLError as exc:
        raise SceneConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SceneConfigError(f"{path}: cannot read the scene file: {exc}") from exc
    if not isinstance(raw, dict):
        raise SceneConfigError(f"{path}: expected a mapping at top level, got {type(raw).__name__}")
    return raw


def load_scene(name_or_path: str | os.PathLike) -> SceneConfig:
    """Read, merge with ``DEFAULTS``, validate (``polar_render.config.schema``: every key, every
    mesh) and normalise a scene file. Every problem raises SceneConfigError before any work;
    ``randomization_strength`` is applied once, here."""
    path = resolve_scene_path(name_or_path)
    raw = read_scene_yaml(path)
    defaults = DEFAULTS
    if isinstance(raw.get("lights"), dict) and "ring" in raw["lights"] and "spot" not in raw["lights"]:
        defaults = {**DEFAULTS, "lights": {}}  # a ring-lit scene has no spot unless it names one
    merged = _merge(defaults, raw)
    as_written = copy.deepcopy(merged)   # cfg.raw: what write_scene_variant copies (strength applied once, at load)
    model, meshes = validate_scene(merged, path)
    if model.randomization_strength != 1.0:
        apply_strength(merged, float(model.randomization_strength))
        model, _ = validate_scene(merged, path, check_meshes=False)

    materials = {name: m.dump() for name, m in model.materials.items()}
    if model.default_material not in materials:   # only "default" gets here (schema)
        materials["default"] = IMPLICIT_DEFAULT_MATERIAL.dump()
    objects = {oid: ObjectSpec(oid, o.name or f"obj_{oid:06d}",
                               tuple(PartSpec(pname, meshes[oid, pname], p.material or model.default_material,
                                              (path.parent / p.mesh).resolve())
                                     for pname, p in o.parts.items()))
               for oid, o in model.objects.items()}
    return SceneConfig(name=model.name or path.parent.name, path=path, objects=objects,
                       default_material=model.default_material, materials=materials,
                       layout=model.layout.dump() if model.layout is not None else {},
                       lights=model.lights.dump(), background=model.background.dump(), sensor=model.sensor.dump(),
                       render=model.render.dump(),
                       anomalies=model.anomalies.dump() if raw.get("anomalies") else {}, raw=as_written)


def write_scene_variant(dest: str | os.PathLike, scene: str | os.PathLike = "usb_brick",
                        dotted: dict | None = None, **overrides) -> Path:
    """Write a copy of a scene file to ``dest`` (a .yaml path) with top-level keys replaced
    (``None`` removes a key) and mesh paths made absolute, so it loads from anywhere.
    ``dotted`` then sets nested keys, ``{"anomalies.classes.dent": None, "sensor.dofp.enabled":
    True}`` (missing mappings on the way are created; ``None`` removes the leaf).
    Keys keep their order: part order is draw order (``randomize``)."""
    cfg = load_scene(scene)
    raw = copy.deepcopy(cfg.raw)
    for obj in (raw.get("objects") or {}).values():
        for part in obj["parts"].values():
            part["mesh"] = str((cfg.path.parent / part["mesh"]).resolve())
    for key, value in overrides.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    for key, value in (dotted or {}).items():
        *parents, leaf = str(key).split(".")
        node = raw
        for k in parents:
            if k not in node and k.isdigit() and int(k) in node:   # YAML int keys (objects.<obj_id>)
                k = int(k)
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise SceneConfigError(f"{cfg.path}: cannot set {key}: {k!r} is not a mapping")
        if leaf not in node and leaf.isdigit() and int(leaf) in node:
            leaf = int(leaf)
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest
