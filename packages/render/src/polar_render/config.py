"""Scene files: ``scenes/<name>/scene.yaml``.

A scene file names the parts of each BOP object, their materials and every
randomisation range. Relative paths (meshes) are resolved against the scene file's
directory. A range is written ``[lo, hi]`` (uniform) or a single number (fixed).
Units: metres for the world (lights, ground), millimetres for BOP models and meshes,
degrees for angles in the file (radians in code). See ``scenes/README.md``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[4]


class SceneConfigError(ValueError):
    """A scene file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class PartSpec:
    name: str
    mesh: Path          # PLY in millimetres, in the object's BOP model frame
    material: str       # key into SceneConfig.materials


@dataclass(frozen=True)
class ObjectSpec:
    obj_id: int
    name: str
    parts: tuple[PartSpec, ...]


MATERIAL_KEYS = {"pplastic": {"type", "color", "color_tolerance", "alpha", "ior"},
                 "roughconductor": {"type", "conductor", "alpha"},
                 # anisotropic GGX conductor: alpha_u along the mesh's dp/du (brushing), alpha_v across
                 "brushed_conductor": {"type", "conductor", "alpha_u", "alpha_v"},
                 "diffuse": {"type", "color", "color_tolerance"}}
MATERIAL_TYPES = set(MATERIAL_KEYS)
_TOP_KEYS = {"name", "description", "objects", "default_material", "materials", "layout",
             "lights", "background", "sensor", "render", "anomalies", "randomization_strength"}

DEFAULTS = {
    "lights": {"spot": {"radius_m": [1.0, 1.5], "elevation_deg": [30.0, 80.0],
                        "azimuth_deg": [0.0, 360.0], "intensity": [2.25, 3.375],
                        "cutoff_deg": 20.0, "beam_deg": 15.0}},
    "background": {"ground": {"size_m": 1.0, "color": [0.0, 1.0], "checker_probability": 0.5,
                              "checker_scale": [4.0, 40.0], "alpha": [0.2, 0.6], "z_m": 0.0},
                   "environment": {"radiance": [0.02, 0.3]}},
    "sensor": {"mode": "rgb", "exposure": "auto", "exposure_percentile": 99.5},
    "render": {"spp": 16, "max_depth": 6, "variant": "auto"},
}


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
    anomalies: dict = field(default_factory=dict)   # see polar_render/anomalies.py
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
    """Normalise a number or [lo, hi] to a (lo, hi) tuple, validating bounds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        a = b = float(value)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(x, (int, float)) for x in value):
        a, b = float(value[0]), float(value[1])
    else:
        raise SceneConfigError(f"{where}: expected a number or [lo, hi], got {value!r}")
    if a > b or a < lo or b > hi:
        raise SceneConfigError(f"{where}: range {value!r} must satisfy {lo} <= lo <= hi <= {hi}")
    return a, b


def is_rgb(value) -> bool:
    """A nominal linear-RGB colour ``[r, g, b]`` (rather than a range ``[lo, hi]``)."""
    return isinstance(value, (list, tuple)) and len(value) == 3


def check_color(value, where: str) -> None:
    """A colour is ``[r, g, b]`` (nominal, each in [0, 1]) or a range drawn per channel."""
    if is_rgb(value):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 <= x <= 1.0 for x in value):
            raise SceneConfigError(f"{where}: an [r, g, b] colour needs three numbers in [0, 1], got {value!r}")
        return
    check_range(value, where, 0.0, 1.0)


# Per-sample ranges and tolerances that ``randomization_strength`` scales (dotted paths;
# ``*`` = every key of that mapping) with the bounds a widened range is clipped to. A range
# [lo, hi] is scaled about its middle, a tolerance (one number meaning +-t) is multiplied;
# fixed numbers and [r, g, b] colours stay.
INF = float("inf")
STRENGTH_RANGES = {"materials.*.color": (0.0, 1.0), "materials.*.alpha": (1e-4, 1.0),
                   "materials.*.alpha_u": (1e-4, 1.0), "materials.*.alpha_v": (1e-4, 1.0),
                   "materials.*.ior": (1.0, 4.0), "lights.spot.radius_m": (1e-3, 100.0),
                   "lights.spot.elevation_deg": (-90.0, 90.0), "lights.spot.azimuth_deg": (-INF, INF),
                   "lights.spot.intensity": (0.0, INF), "lights.ring.radiance": (0.0, INF),
                   "background.ground.color": (0.0, 1.0), "background.ground.alpha": (1e-4, 1.0),
                   "background.ground.checker_scale": (0.0, INF), "background.environment.radiance": (0.0, INF),
                   "layout.radius_m": (1e-3, INF), "layout.elevation_deg": (-90.0, 90.0),
                   "layout.azimuth_deg": (-INF, INF), "layout.inplane_deg": (-INF, INF),
                   "layout.drop_height_cm": (0.0, INF), "layout.fill": (1e-3, 1.0), "layout.distance_m": (1e-3, INF)}
STRENGTH_TOLERANCES = {"materials.*.color_tolerance": 1.0, "layout.look_at_jitter_mm": INF,
                       "layout.xy_range_mm": INF, "layout.xy_jitter_mm": INF, "layout.tilt_deg": 89.0,
                       "layout.placement_mm": INF, "layout.yaw_deg": 180.0, "layout.camera_position_mm": INF,
                       "layout.camera_angle_deg": 45.0}
MAX_STRENGTH = 10.0


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
    for dotted, (lo_ok, hi_ok) in STRENGTH_RANGES.items():
        for node, k in _paths(tree, dotted):
            v = node[k]
            if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
                mid = (v[0] + v[1]) / 2
                node[k] = [max(mid - strength * (mid - v[0]), lo_ok), min(mid + strength * (v[1] - mid), hi_ok)]
    for dotted, hi_ok in STRENGTH_TOLERANCES.items():
        for node, k in _paths(tree, dotted):
            if isinstance(node[k], (int, float)) and not isinstance(node[k], bool):
                node[k] = min(node[k] * strength, hi_ok)


def load_scene(name_or_path: str | os.PathLike) -> SceneConfig:
    path = resolve_scene_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SceneConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SceneConfigError(f"{path}: expected a mapping at top level")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise SceneConfigError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    defaults = DEFAULTS
    if isinstance(raw.get("lights"), dict) and "ring" in raw["lights"] and "spot" not in raw["lights"]:
        defaults = {**DEFAULTS, "lights": {}}  # a ring-lit scene has no spot unless it names one
    merged = _merge(defaults, raw)
    strength = merged.get("randomization_strength", 1.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= MAX_STRENGTH:
        raise SceneConfigError(f"{path}: randomization_strength must be a number in [0, {MAX_STRENGTH:g}], "
                               f"got {strength!r}")
    as_written = copy.deepcopy(merged)   # cfg.raw: what write_scene_variant copies (strength applied once, at load)
    if strength != 1.0:
        apply_strength(merged, float(strength))

    materials = merged.get("materials") or {}
    for mname, m in materials.items():
        where = f"{path}: materials.{mname}"
        if not isinstance(m, dict) or m.get("type") not in MATERIAL_TYPES:
            raise SceneConfigError(f"{where}.type: must be one of {sorted(MATERIAL_TYPES)}")
        extra = set(m) - MATERIAL_KEYS[m["type"]]
        if extra:
            raise SceneConfigError(f"{where}: unknown key(s) {sorted(extra)} for type {m['type']}; "
                                   f"allowed: {sorted(MATERIAL_KEYS[m['type']])}")
        for k in ("alpha", "alpha_u", "alpha_v"):
            if k in m:
                check_range(m[k], f"{where}.{k}", 1e-4, 1.0)
        if "color" in m:
            check_color(m["color"], f"{where}.color")
        if "color_tolerance" in m:
            check_range(m["color_tolerance"], f"{where}.color_tolerance", 0.0, 1.0)
        if "ior" in m:
            check_range(m["ior"], f"{where}.ior", 1.0, 4.0)
    default_material = merged.get("default_material", "default")
    if default_material not in materials:
        materials.setdefault("default", {"type": "pplastic", "color": [0.0, 1.0], "alpha": [0.05, 0.3]})
        if default_material != "default":
            raise SceneConfigError(f"{path}: default_material {default_material!r} is not in materials")

    objects: dict[int, ObjectSpec] = {}
    for key, spec in (merged.get("objects") or {}).items():
        where = f"{path}: objects.{key}"
        try:
            obj_id = int(key)
        except (TypeError, ValueError):
            raise SceneConfigError(f"{where}: object keys are BOP obj_ids (integers)") from None
        parts = []
        for pname, part in (spec.get("parts") or {}).items():
            if not isinstance(part, dict) or "mesh" not in part:
                raise SceneConfigError(f"{where}.parts.{pname}.mesh: required (PLY path, mm)")
            mesh = (path.parent / part["mesh"]).resolve()
            if not mesh.is_file():
                raise SceneConfigError(f"{where}.parts.{pname}.mesh: file not found: {mesh}")
            mat = part.get("material", default_material)
            if mat not in materials:
                raise SceneConfigError(f"{where}.parts.{pname}.material: unknown material {mat!r}")
            parts.append(PartSpec(pname, mesh, mat))
        if not parts:
            raise SceneConfigError(f"{where}.parts: at least one part is required")
        objects[obj_id] = ObjectSpec(obj_id, spec.get("name", f"obj_{obj_id:06d}"), tuple(parts))

    sensor = merged["sensor"]
    if sensor["mode"] not in ("rgb", "mono"):
        raise SceneConfigError(f"{path}: sensor.mode must be 'rgb' or 'mono'")
    if merged["render"].get("denoise", "none") not in ("none", "oidn"):  # absent = none (digest unchanged)
        raise SceneConfigError(f"{path}: render.denoise must be 'none' or 'oidn', got {merged['render']['denoise']!r}")
    lights = merged.get("lights") or {}
    if not set(lights) & {"spot", "ring"} or set(lights) - {"spot", "ring"}:
        raise SceneConfigError(f"{path}: lights: name 'spot' and/or 'ring' (unknown: {sorted(set(lights) - {'spot', 'ring'})})")
    if "spot" in lights:
        for k, (lo, hi) in {"radius_m": (0, 100), "elevation_deg": (-90, 90), "intensity": (0, 1e6),
                            "azimuth_deg": (-float("inf"), float("inf"))}.items():
            check_range(lights["spot"][k], f"{path}: lights.spot.{k}", lo, hi)
    if "ring" in lights:
        from .lights import validate_ring

        merged["lights"]["ring"] = validate_ring(lights["ring"], f"{path}: lights.ring")
    check_range(merged["background"]["environment"]["radiance"], f"{path}: background.environment.radiance", 0)
    check_color(merged["background"]["ground"]["color"], f"{path}: background.ground.color")
    check_range(merged["background"]["ground"]["alpha"], f"{path}: background.ground.alpha", 1e-4, 1)
    check_range(merged["background"]["ground"]["checker_scale"], f"{path}: background.ground.checker_scale", 0)

    from .anomalies import validate as validate_anomalies

    part_names = {p.name for o in objects.values() for p in o.parts} | {"model"}
    anomalies = validate_anomalies(merged.get("anomalies") or {}, part_names, f"{path}: anomalies")
    return SceneConfig(name=merged.get("name", path.parent.name), path=path, objects=objects, anomalies=anomalies,
                       default_material=default_material, materials=materials,
                       layout=merged.get("layout") or {}, lights=merged["lights"],
                       background=merged["background"], sensor=sensor, render=merged["render"], raw=as_written)


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
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise SceneConfigError(f"{cfg.path}: cannot set {key}: {k!r} is not a mapping")
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(raw, sort_keys=False))
    return dest
