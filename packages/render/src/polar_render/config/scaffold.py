"""``polar-render new-scene``: a scene file for your own part, from its CAD mesh(es).

``new-scene NAME --mesh part.stl [--mesh lid.obj ...] [--unit mm] [--material plastic] [--mode station]``
writes ``scenes/NAME/scene.yaml`` (``POLAR_SCENES_DIR`` moves ``scenes/``) and copies the meshes
beside it, so that ``make render SCENE=NAME`` works as it is. Every mesh is read, checked
and converted first (``polar_render.parts.meshes``: errors exit 2 before anything is written).

What is computed from the part (the union of the meshes, one object, in its model frame):

* framing: ``station`` (default; an inspection station, two fixed views, top and side, the
  part filling 60 % of the shorter image side, a ring light scaled to the top camera's
  distance), ``drop`` (Polar-Ano domain randomization: parts dropped with physics, cameras on
  a shell whose radius makes the part's diagonal fill half the shorter side, a spot light) or
  ``topdown`` (camera straight above at the height where the part fills 80 % of the frame,
  a ring light around it);
* anomaly sizes: the usb_brick scene's ranges scaled by (largest extent / 43.8 mm), so a
  dent on a 400 mm cover is ten times wider than on the 44 mm brick; surface classes on every
  part; ``missing`` (all but the largest part) and ``swapped`` (first two parts, when their
  materials differ) with several meshes;
* the ground's size (it fills the views).

Every key is written with a comment (its meaning from the schema, ``polar_render.config.schema``);
the file validates (``config.load_scene``) before it is moved into place.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from polar_render import io
from polar_render.parts.meshes import MeshWarning

MODES = ("station", "drop", "topdown")
REFERENCE_EXTENT_MM = 43.8    # the usb_brick, whose anomaly ranges are scaled
WIDTH, HEIGHT, FX = 640, 480, 2000.0
STATION_FILL, DROP_FILL, TOPDOWN_FILL = 0.6, 0.5, 0.8
COMMENT_COLUMN = 44


def _plastic(alpha_station, alpha_drop, colour=(0.30, 0.30, 0.32)):
    def make(mode):
        if mode == "drop":
            return {"type": "pplastic", "color": [0.0, 1.0], "alpha": alpha_drop, "ior": 1.49}
        return {"type": "pplastic", "color": list(colour), "color_tolerance": 0.01, "alpha": alpha_station,
                "ior": 1.49}
    return make


def _metal(conductor, alpha_station, alpha_drop):
    def make(mode):
        return {"type": "roughconductor", "conductor": conductor,
                "alpha": alpha_drop if mode == "drop" else alpha_station}
    return make


# name -> material of a mode (station/topdown: nominal values with small tolerances; drop:
# Polar-Ano's wide ranges)
MATERIALS = {
    "plastic": _plastic([0.09, 0.11], [0.05, 0.3]),
    "glossy_plastic": _plastic([0.018, 0.022], [0.001, 0.05]),
    "rough_plastic": _plastic([0.28, 0.32], [0.3, 0.7]),
    "aluminium": _metal("Al", [0.18, 0.22], [0.1, 0.5]),
    "chrome": _metal("Cr", [0.04, 0.06], [0.01, 0.2]),
    "copper": _metal("Cu", [0.18, 0.22], [0.1, 0.5]),
    "diffuse": lambda mode: ({"type": "diffuse", "color": [0.0, 1.0]} if mode == "drop" else
                             {"type": "diffuse", "color": [0.5, 0.5, 0.5], "color_tolerance": 0.01}),
}


class ScaffoldError(ValueError):
    """Bad new-scene arguments (the CLI exits 2); the message names the option or file."""


@dataclass
class Part:
    name: str
    source: Path          # the mesh file given
    file: str             # its name inside the scene folder
    unit: str | None
    material: str
    bounds_mm: np.ndarray  # (2, 3) in the model frame, after the unit
    groups: list


def _per_mesh(values: list | None, n: int, option: str, default):
    """One value per mesh: none given -> default; one -> for all; n -> in order."""
    if not values:
        return [default] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise ScaffoldError(f"{option}: give it once (for every mesh) or once per --mesh ({n}), got {len(values)}")
    return list(values)


def _part_names(paths: list[Path]) -> list[str]:
    names, seen = [], {}
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9_-]+", "_", p.stem).strip("_") or "part"
        k = seen.get(base, 0)
        seen[base] = k + 1
        names.append(base if k == 0 else f"{base}_{k + 1}")
    return names


def _gltf_resources(path: Path) -> list[str]:
    """Relative files a .gltf names (buffers, images), which travel with it."""
    doc = io.read_json_object(path, what="a glTF document", error=ScaffoldError)
    uris = [x.get("uri") for key in ("buffers", "images") for x in doc.get(key, []) if isinstance(x, dict)]
    return [u for u in uris if isinstance(u, str) and not u.startswith("data:")]


def _read_parts(meshes: list, units: list, materials: list) -> list[Part]:
    import trimesh

    from polar_render.limits import InputTooLargeError
    from polar_render.parts.meshes import MeshError, MeshOptions, check_closed, prepare

    paths = [Path(m) for m in meshes]
    names = _part_names(paths)
    files, used = [], set()
    for p in paths:
        f = p.name
        k = 2
        while f in used:
            f = f"{p.stem}_{k}{p.suffix}"
            k += 1
        used.add(f)
        files.append(f)
    parts, preps = [], []
    for path, name, file, unit, material in zip(paths, names, files, units, materials):
        if not path.is_file():
            raise ScaffoldError(f"--mesh {path}: {'not a file' if path.exists() else 'file not found'}")
        try:
            prep = prepare(path, MeshOptions(unit=unit), where=f"--mesh {path}")
        except (MeshError, InputTooLargeError, OSError) as exc:
            raise ScaffoldError(f"--mesh: {exc}") from None
        v = np.asarray(trimesh.load(str(prep.path), file_type="ply", process=False).vertices, np.float64)
        parts.append(Part(name, path, file, unit, material, np.stack([v.min(0), v.max(0)]), prep.groups))
        preps.append((name, prep))
    check_closed(preps, "new-scene: the part")
    return parts


def _r(x: float, digits: int = 3) -> float:
    """``x`` rounded to ``digits`` significant digits (a readable scene file)."""
    return float(f"{x:.{digits}g}") if x else 0.0


def _scaled(values, s: float) -> list:
    return [_r(v * s) for v in values]


def anomaly_classes(parts: list[Part], extent_mm: float, materials: dict) -> dict:
    """Anomaly classes with the usb_brick ranges scaled by extent / 43.8 mm."""
    s = extent_mm / REFERENCE_EXTENT_MM
    names = [p.name for p in parts]
    classes = {
        "water_stain": {"weight": 1, "parts": names, "radius_mm": _scaled([1.0, 2.5], s),
                        "cell_mm": _scaled([7.0, 12.0], s), "frequency_per_mm": _scaled([0.3, 0.8], 1 / s),
                        "amplitude_mm": _scaled([0.2, 0.8], s), "gamma": [1.0, 2.5], "alpha": [-0.35, -0.15],
                        "roughness_scale": [0.2, 0.5]},
        "dent": {"weight": 1, "parts": names, "radius_mm": _scaled([1.5, 3.0], s), "depth_mm": _scaled([0.3, 0.8], s)},
        "bump": {"weight": 1, "parts": names, "radius_mm": _scaled([1.5, 3.0], s), "depth_mm": _scaled([0.3, 0.8], s)},
        "scratch": {"weight": 1, "parts": names, "length_mm": _scaled([6.0, 14.0], s),
                    "width_mm": _scaled([1.0, 1.6], s), "depth_mm": _scaled([0.15, 0.35], s),
                    "curvature_radius_mm": _scaled([15.0, 60.0], s)},
        "chip": {"weight": 1, "parts": names, "depth_mm": _scaled([1.5, 3.0], s)},
    }
    if len(parts) > 1:
        sizes = [float(np.prod(np.maximum(p.bounds_mm[1] - p.bounds_mm[0], 1e-3))) for p in parts]
        largest = int(np.argmax(sizes))
        classes["missing"] = {"weight": 1, "parts": [n for k, n in enumerate(names) if k != largest]}
        if materials[parts[0].material] != materials[parts[1].material]:
            classes["swapped"] = {"weight": 1, "pairs": [[names[0], names[1]]]}
    return classes


def _ring(distance_m: float, target_z_m: float) -> dict:
    """A ring light scaled like usb_brick_station's (0.2 m high, 0.12 m wide for a top camera
    0.3 m above the part): ring plane at 2/3 of the camera's height above the part."""
    h = target_z_m + 0.66 * distance_m
    return {"radius_m": _r(0.4 * distance_m), "height_m": _r(h), "centre_m": [0.0, 0.0],
            "panel_width_m": _r(0.1 * distance_m), "fill": 0.9, "tilt_deg": 30.0, "radiance": [19.5, 20.5]}


def scene_tree(name: str, parts: list[Part], mode: str) -> tuple[dict, dict]:
    """(scene file mapping, notes: dotted key -> extra comment) for ``parts`` in ``mode``."""
    from polar_render.layout.embedded import drop_framing, station_eye, topdown_framing

    lo = np.min([p.bounds_mm[0] for p in parts], axis=0)
    hi = np.max([p.bounds_mm[1] for p in parts], axis=0)
    size = hi - lo
    extent = float(size.max())
    mats = {}
    for p in parts:
        mats.setdefault(p.material, MATERIALS[p.material]("drop" if mode == "drop" else "station"))
    size_txt = " x ".join(f"{x:.4g}" for x in size)
    notes = {"objects": f"the part: {size_txt} mm (model frame)"}
    tree = {"name": name, "description": f"{', '.join(p.name for p in parts)} ({size_txt} mm), {mode} layout",
            "objects": {1: {"name": name, "parts": {}}}}
    for p in parts:
        entry = {"mesh": p.file, "material": p.material}
        if p.unit is not None:
            entry["unit"] = p.unit
        entry.update(normals="crease", crease_angle_deg=30.0)
        tree["objects"][1]["parts"][p.name] = entry
        if p.groups:
            notes[f"objects.1.parts.{p.name}"] = f"face groups: {', '.join(p.groups)}"
    tree["default_material"] = parts[0].material
    tree["materials"] = mats
    if mode == "station":
        views = {"top": {"elevation_deg": 90.0, "azimuth_deg": -90.0, "roll_deg": 0.0},
                 "side": {"elevation_deg": 35.0, "azimuth_deg": -90.0, "roll_deg": 0.0}}
        eye = station_eye(size, views["top"], WIDTH, HEIGHT, FX, STATION_FILL)
        d_top = float(eye[2] - size[2] * 1e-3)   # camera above the part's top
        tree["layout"] = {"mode": "station", "instances": [1], "rest_rotation_deg": [0.0, 0.0, 0.0],
                          "placement_mm": _r(0.01 * extent), "yaw_deg": 1.0, "fill": STATION_FILL,
                          "camera_position_mm": _r(0.01 * extent), "camera_angle_deg": 0.2, "views": views,
                          "width": WIDTH, "height": HEIGHT, "fx": FX, "fy": FX}
        notes["layout.views.top"] = f"camera {eye[2]:.3f} m above the fixture"
        tree["lights"] = {"spot": None, "ring": _ring(d_top, float(size[2]) * 1e-3)}
        view_m = float(eye[2]) * WIDTH / FX
    elif mode == "drop":
        fr = drop_framing(size, WIDTH, HEIGHT, FX, DROP_FILL)
        tree["layout"] = {"mode": "drop", "instances": [1], "drop_height_cm": [1.0, 4.0],
                          "xy_range_mm": fr["xy_range_mm"], "cameras_per_scene": 4, "radius_m": fr["radius_m"],
                          "elevation_deg": [20.0, 85.0], "azimuth_deg": [0.0, 360.0], "inplane_deg": [-180.0, 180.0],
                          "look_at_jitter_mm": fr["look_at_jitter_mm"], "width": WIDTH, "height": HEIGHT,
                          "fx": FX, "fy": FX}
        notes["layout.radius_m"] = f"the part's diagonal fills {DROP_FILL:.0%} of the shorter image side"
        tree["lights"] = {"spot": {"radius_m": [1.0, 1.5], "elevation_deg": [30.0, 85.0], "azimuth_deg": [0.0, 360.0],
                                   "intensity": [2.25, 3.375], "cutoff_deg": 20.0, "beam_deg": 15.0}}
        view_m = fr["radius_m"][1] * WIDTH / FX + 2 * fr["xy_range_mm"] * 1e-3
    else:
        fr = topdown_framing(size, WIDTH, HEIGHT, FX, TOPDOWN_FILL)
        tree["layout"] = {"mode": "topdown", "instances": [1], "cameras_per_scene": 4,
                          "distance_m": fr["distance_m"], "xy_jitter_mm": fr["xy_jitter_mm"],
                          "inplane_deg": [-2.0, 2.0], "tilt_deg": 0.0, "width": WIDTH, "height": HEIGHT,
                          "fx": FX, "fy": FX}
        notes["layout.distance_m"] = f"the part fills {TOPDOWN_FILL:.0%} of the frame"
        ring = _ring(fr["distance_m"] - float(size[2]) * 1e-3, float(size[2]) * 1e-3)
        ring.update(height_m=fr["distance_m"], tilt_deg=0.0)   # the camera looks through the ring
        tree["lights"] = {"spot": None, "ring": ring}
        view_m = fr["distance_m"] * WIDTH / FX
    ground = max(0.5, _r(4.0 * view_m))
    if mode == "drop":
        tree["background"] = {"ground": {"size_m": max(1.0, ground), "color": [0.0, 1.0], "checker_probability": 0.5,
                                         "checker_scale": [4.0, 40.0], "alpha": [0.2, 0.6], "z_m": 0.0},
                              "environment": {"radiance": [0.02, 0.3]}}
        tree["sensor"] = {"mode": "rgb", "exposure": "auto", "exposure_percentile": 99.5}
    else:
        tree["background"] = {"ground": {"size_m": ground, "color": [0.25, 0.25, 0.25], "checker_probability": 0.0,
                                         "checker_scale": 10.0, "alpha": 0.5, "z_m": 0.0},
                              "environment": {"radiance": [0.095, 0.105]}}
        tree["sensor"] = {"mode": "mono", "exposure": "auto", "exposure_percentile": 99.5}
    tree["render"] = {"spp": 16, "max_depth": 6, "variant": "auto", "denoise": "none"}
    tree["anomalies"] = {"probability": 0.5, "count": 1, "mask_supersampling": 3, "min_visible_px": 40,
                         "max_view_angle_deg": 75.0, "classes": anomaly_classes(parts, extent, mats)}
    notes["anomalies.classes"] = f"sizes: usb_brick's x {extent / REFERENCE_EXTENT_MM:.3g} (the part's largest " \
                                 f"extent {extent:.4g} mm / {REFERENCE_EXTENT_MM} mm)"
    tree["randomization_strength"] = 1.0
    return tree, notes


# ----------------------------------------------------------------------------- YAML with a comment per key

def _flow(v) -> str:
    if v is None:
        return "null"
    text = yaml.safe_dump(v, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text


def _line(text: str, comment: str) -> str:
    comment = " ".join(comment.split())
    return f"{text.ljust(COMMENT_COLUMN)} # {comment}" if comment else text


TAG_COMMENTS = {"type": "material type: pplastic, roughconductor, brushed_conductor or diffuse",
                "mode": "layout mode: station, drop or topdown"}
ENTRY_COMMENTS = {"objects": "BOP obj_id of the part", "parts": "a part: its mesh file and material",
                  "views": "a fixed camera"}


def _member(annotation, value: dict):
    """The pydantic model describing ``value`` at a field typed ``annotation``."""
    from pydantic import BaseModel

    from polar_render.config import schema

    members = schema._tagged(annotation)
    if members:
        tag = "type" if "type" in value else "mode"
        return members[value.get(tag, "drop")]
    inner = schema._strip(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def emit(tree: dict, model, notes: dict, prefix: str = "", indent: int = 0) -> list[str]:
    """YAML lines of ``tree`` (a mapping validated by ``model``), one key per line, each with
    its schema description as a comment (plus ``notes[dotted key]``)."""
    from polar_render.config import schema

    pad = " " * indent
    out = []
    for key, value in tree.items():
        field = model.model_fields[key]
        dotted = f"{prefix}{key}"
        desc = field.description or TAG_COMMENTS.get(key, "") if key in TAG_COMMENTS and not field.description \
            else field.description or ""
        comment = "; ".join(x for x in (desc, notes.get(dotted, "")) if x)
        sub = _member(field.annotation, value) if isinstance(value, dict) else None
        inner = schema._strip(field.annotation)
        if isinstance(value, dict) and sub is not None:
            out.append(_line(f"{pad}{key}:", comment))
            out += emit(value, sub, notes, f"{dotted}.", indent + 2)
        elif isinstance(value, dict) and typing.get_origin(inner) is dict:
            out.append(_line(f"{pad}{key}:", comment))
            val_t = typing.get_args(inner)[1]
            for k2, v2 in value.items():
                m2 = _member(val_t, v2)
                doc = (m2.__doc__ or "").strip().split("\n")[0] if m2 is not None and m2.__doc__ else ""
                doc = "" if doc.startswith("Usage docs") else doc
                doc = doc or ENTRY_COMMENTS.get(key, "")
                out.append(_line(f"{pad}  {k2}:", "; ".join(x for x in (doc, notes.get(f"{dotted}.{k2}", "")) if x)))
                out += emit(v2, m2, notes, f"{dotted}.{k2}.", indent + 4)
        else:
            out.append(_line(f"{pad}{key}: {_flow(value)}", comment))
    return out


def scene_text(name: str, parts: list[Part], mode: str, command: str) -> str:
    from polar_render.config.schema import SceneFile

    tree, notes = scene_tree(name, parts, mode)
    head = [f"# Scene {name!r}, written by `{command}`.",
            "# Units: metres for the world (lights, ground, cameras), millimetres for meshes and anomaly sizes,",
            "# degrees for angles. Every key is described in scenes/README.md (key reference).",
            f"# Next: make render SCENE={name}   (then make dataset SCENE={name}, make train ...)",
            "# Inspect one face only: add e.g. `faces: {normal: +z}` (faces facing model +z, the top) under",
            "# anomalies (every surface class) or under one class; `faces: {group: NAME}` uses a face group",
            "# stored in the mesh (OBJ g/o, glTF node, STEP product, PLY face property 'group').", ""]
    return "\n".join(head + emit(tree, SceneFile, notes)) + "\n"


# ----------------------------------------------------------------------------- writing

def new_scene(name: str, meshes: list, units: list | None = None, materials: list | None = None,
              mode: str = "station", force: bool = False, scenes_root: Path | None = None,
              command: str = "polar-render new-scene") -> Path:
    """Write ``<scenes>/<name>/scene.yaml`` and copy the meshes beside it; returns the scene
    file. ScaffoldError (nothing written) for bad arguments or meshes."""
    from polar_render.config.scenes import load_scene, scenes_dir
    from polar_render.config.fields import NAME_RE

    if not NAME_RE.match(name or ""):
        raise ScaffoldError(f"NAME: scene names may use letters, digits, '_' and '-' only, got {name!r}")
    if not meshes:
        raise ScaffoldError("--mesh: give at least one mesh file")
    if mode not in MODES:
        raise ScaffoldError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    n = len(meshes)
    units = _per_mesh(units, n, "--unit", None)
    materials = _per_mesh(materials, n, "--material", "plastic")
    for m in materials:
        if m not in MATERIALS:
            raise ScaffoldError(f"--material: unknown material {m!r}; one of {', '.join(MATERIALS)}")
    root = Path(scenes_root) if scenes_root is not None else scenes_dir()
    dest = root / name
    if dest.exists() and not force:
        raise ScaffoldError(f"{dest}: already exists; choose another NAME or pass --force to rewrite its scene.yaml")
    parts = _read_parts(meshes, units, materials)
    extras = {p.file: [r for r in _gltf_resources(p.source)] for p in parts if p.source.suffix.lower() == ".gltf"}
    text = scene_text(name, parts, mode, command)
    io.make_dirs(root)
    with tempfile.TemporaryDirectory(prefix=f".new-{name}-", dir=root) as scratch:
        tmp = Path(scratch) / name
        tmp.mkdir()
        _fill(tmp, parts, extras, text)
        with warnings.catch_warnings():   # the meshes' warnings were shown when they were read
            warnings.simplefilter("ignore", MeshWarning)
            load_scene(tmp / "scene.yaml")   # what `make render SCENE=NAME` will load
        if dest.exists():   # --force: replace scene.yaml and the meshes, keep anything else
            for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
                io.write_bytes(dest / f.relative_to(tmp), f.read_bytes())
        else:
            io.swap_dir(tmp, dest)
    return dest / "scene.yaml"


def _fill(folder: Path, parts: list[Part], extras: dict, text: str) -> None:
    from polar_render.paths import contained

    for p in parts:
        shutil.copyfile(p.source, folder / p.file)
        for rel in extras.get(p.file, []):
            src = contained(p.source.parent, rel, source=p.source, key="buffers/images uri")
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, folder / rel)
    (folder / "scene.yaml").write_text(text)
