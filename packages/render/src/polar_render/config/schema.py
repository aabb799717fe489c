"""The one schema of scene files (``scenes/<name>/scene.yaml``), built with pydantic v2.

Every key the renderer reads is declared here once, with its type, bounds, default and
meaning; :func:`validate_scene` checks a whole file at load (``polar_render.config.scenes.load_scene``),
before any work is done, and turns every problem into one line
``<scene file>: <dotted.key.path>: <problem>`` of a :class:`~polar_render.config.scenes.SceneConfigError`.
Unknown keys are errors everywhere; numbers must be finite; ranges are ``[lo, hi]`` with
``lo <= hi`` (or one number = fixed); probabilities lie in [0, 1]; names (materials,
parts, views) are ``[A-Za-z0-9_-]+``.

Units (as in the scene files): metres for the world (lights, ground, cameras), millimetres for
meshes (a part's ``unit`` converts its file), BOP models and anomaly sizes, degrees for angles,
centimetres for the drop height.

Cross-key rules checked after the types (each names its key): materials named by
``default_material`` and parts exist; ``layout.instances`` are described ``objects``;
anomaly ``parts``/``pairs`` name parts of the objects; a mono Mitsuba variant needs
``sensor.mode: mono``; STEP parts give no ``unit``; every part mesh resolves inside the
scene's folder, the repo's ``assets/`` or a directory of ``POLAR_ASSET_DIRS``
(``os.pathsep``-separated extra asset directories), is a readable mesh of a supported format
with faces, within ``POLAR_MAX_MESH_FACES``, and at least 1 mm large after its unit; it is
then converted for the renderer (``polar_render.parts.meshes``: crease normals, health warnings);
and anomaly regions (``faces``) name face groups the meshes have, or directions some face has.

``python -m polar_render.config.schema`` prints the key reference (the table in ``scenes/README.md``);
``--write-readme`` refreshes that table.
"""
import dataclasses
import math
import os
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import numpy as np
from pydantic import (BaseModel, Discriminator, Field, PlainValidator, Tag, ValidationError,
                      field_validator, model_validator)

from polar_render.config.defaults import DEFAULTS, MAX_STRENGTH, REPO_ROOT
from polar_render.config.errors import SceneConfigError
from polar_render.geometry import SQUARE_PIXEL_RTOL
from polar_render.denoise import METHODS as DENOISE_METHODS
from polar_render.layout.embedded import LayoutConfig
from polar_render.parts.meshes import DEFAULT_CREASE_DEG, NORMALS as MESH_NORMALS, UNITS_MM
from polar_render.mitsuba.lights import RING_DEFAULTS, VARIANTS as RING_VARIANTS
from polar_render.config.fields import (INF, Bounds, Color, Name, ObjId, Range, Text, Tolerance, Number, _Section,
                                       _choice, _number, _obj_id, _real, _strip, _tagged, _vector, as_range)
from polar_render.config.fields import format_errors as _format_errors
from polar_render.physics.dofp import Dofp
from polar_render.anomalies.visibility import DEFAULT_MAX_VIEW_ANGLE_DEG, DEFAULT_MIN_VISIBLE_PX

ASSET_DIRS_ENV = "POLAR_ASSET_DIRS"
MAX_IMAGE_SIDE = 16384
SAMPLERS = ("independent", "ldsampler")   # Mitsuba sampler plugins (render.sampler)


def sampler_spp_problem(sampler: str | None, spp: int) -> str | None:
    """Why ``spp`` samples per pixel cannot be rendered exactly with ``sampler``, or None.
    Mitsuba's ``ldsampler`` silently rounds its sample count up to a power of 4 (32 -> 64);
    we refuse such a count instead, so that the recorded spp is the rendered one."""
    if sampler == "ldsampler" and (spp < 1 or spp & (spp - 1) or (spp.bit_length() - 1) % 2):
        return (f"{spp} samples per pixel with render.sampler ldsampler: it renders a power of 4 "
                f"(1, 4, 16, 64, 256, ...); choose one of those or sampler independent")
    return None


# ----------------------------------------------------------------------------- value types









































def _spd_has_mass(path: Path) -> bool:
    """True when a Mitsuba .spd spectrum (``wavelength value`` lines) has a value > 0: its
    irregular-spectrum plugin refuses an all-zero one ("no probability mass found")."""
    for line in path.read_text(errors="replace").splitlines():
        cols = line.split()
        if cols and not line.lstrip().startswith("#") and len(cols) >= 2:
            try:
                if float(cols[1]) > 0:
                    return True
            except ValueError:
                continue
    return False


def _mitsuba_data() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(polarized variants this Mitsuba build has, conductor names its conductor plugins load:
    ``none`` and every ``data/ior/<name>.{eta,k}.spd`` pair with non-zero spectra), read
    without loading a variant."""
    import mitsuba.config as mc

    variants = tuple(v for v in mc.MI_VARIANTS if v.endswith("_polarized"))
    ior = Path(mc.__file__).parent / "data" / "ior"
    names = sorted(p.name[: -len(".eta.spd")] for p in ior.glob("*.eta.spd"))
    usable = [n for n in names if (ior / f"{n}.k.spd").is_file()
              and _spd_has_mass(ior / f"{n}.eta.spd") and _spd_has_mass(ior / f"{n}.k.spd")]
    return variants, ("none", *usable)


MI_POLARIZED_VARIANTS, CONDUCTORS = _mitsuba_data()


def _exposure(v):
    if v == "auto":
        return v
    try:
        return _number(Bounds(0.0, INF, True), False)(v)
    except ValueError:
        raise ValueError(f"expected 'auto' or a fixed DN per radiance unit > 0, got {v!r}") from None


# ----------------------------------------------------------------------------- models



def _default(section: str, *keys):
    node = DEFAULTS[section]
    for k in keys:
        node = node[k]
    return node


# --- materials

class _Material(_Section):
    pass


class _Coloured(_Material):
    color: Color = Field([0.0, 1.0], description="linear RGB (diffuse base): a range drawn per channel, or a "
                                                  "nominal [r, g, b] moved per channel by U(+-color_tolerance)")
    color_tolerance: Tolerance(1.0) = Field(0.0, description="+- per channel around a nominal [r, g, b] colour")

    @model_validator(mode="after")
    def _tolerance_needs_nominal(self):
        if self.color_tolerance and not (isinstance(self.color, list) and len(self.color) == 3):
            raise ValueError("color_tolerance applies to a nominal [r, g, b] colour; with a range colour "
                             "each channel is already drawn in the range")
        return self


class Pplastic(_Coloured):
    """Mitsuba polarized plastic: GGX specular lobe with dielectric Fresnel over a polarizing diffuse base."""
    type: Literal["pplastic"]
    alpha: Range(1e-4, 1.0) = Field(0.1, description="GGX roughness (Mitsuba's alpha)")
    ior: Range(1.0, 4.0) = Field(1.49, description="interior index of refraction")


class Roughconductor(_Material):
    """GGX conductor with a measured complex IOR."""
    type: Literal["roughconductor"]
    conductor: _choice(CONDUCTORS, "a conductor of Mitsuba's data/ior", "Mitsuba conductor name (data/ior)") = Field(
        "Al", description="Mitsuba conductor name (Al, Cr, Cu, Au, Ag, ...)")
    alpha: Range(1e-4, 1.0) = Field(0.3, description="GGX roughness")


class BrushedConductor(_Material):
    """Anisotropic GGX conductor: alpha_u along the mesh's dp/du (brushing, needs UVs), alpha_v across."""
    type: Literal["brushed_conductor"]
    conductor: _choice(CONDUCTORS, "a conductor of Mitsuba's data/ior", "Mitsuba conductor name (data/ior)") = Field(
        "Al", description="Mitsuba conductor name (Al, Cr, Cu, Au, Ag, ...)")
    alpha_u: Range(1e-4, 1.0) = Field(0.05, description="GGX roughness along the brushing (mesh u)")
    alpha_v: Range(1e-4, 1.0) = Field(0.2, description="GGX roughness across the brushing")


class Diffuse(_Coloured):
    """Lambertian (depolarizing)."""
    type: Literal["diffuse"]


def _tag(key: str, default=None):
    def pick(v):
        if isinstance(v, dict):
            return v.get(key, default)
        return getattr(v, key, None)
    return pick


MATERIAL_TYPES = {"pplastic": Pplastic, "roughconductor": Roughconductor,
                  "brushed_conductor": BrushedConductor, "diffuse": Diffuse}
Material = Annotated[Union[tuple(Annotated[m, Tag(t)] for t, m in MATERIAL_TYPES.items())],
                     Discriminator(_tag("type"), custom_error_type="bad_tag:type",
                                   custom_error_message="type must be one of " + ", ".join(MATERIAL_TYPES))]
# the material named "default" when default_material is "default" and the file defines none
IMPLICIT_DEFAULT_MATERIAL = Pplastic(type="pplastic", color=[0.0, 1.0], alpha=[0.05, 0.3])


# --- objects

class Part(_Section):
    mesh: Text = Field(..., description="mesh file (PLY, STL, OBJ, glTF/GLB, STEP) in the object's BOP model frame, "
                                        "relative to the scene file's folder (or inside assets/ or POLAR_ASSET_DIRS); "
                                        "see 'Part meshes' in scenes/README.md")
    material: Optional[Name] = Field(None, description="key of materials (default: default_material)")
    unit: Optional[_choice(tuple(UNITS_MM), "a length unit")] = Field(
        None, description="length unit of the file, converted to mm (default mm; glTF/GLB: m; STEP: its own, "
                          "not settable)")
    normals: _choice(MESH_NORMALS, "a normals mode") = Field(
        "crease", description="crease: shading normals recomputed, split at crease_angle_deg (flat faces flat, "
                              "curved faces smooth); file: the file's vertex normals as they are")
    crease_angle_deg: Number(0.0, 180.0) = Field(
        DEFAULT_CREASE_DEG, description="normals: crease: faces meeting at a larger dihedral angle get split normals "
                                        "(0 = every face flat)")

    @model_validator(mode="after")
    def _crease_needs_crease(self):
        if "crease_angle_deg" in self.model_fields_set and self.normals != "crease":
            raise ValueError("crease_angle_deg applies to normals: crease (normals: file keeps the file's normals)")
        return self

    def options(self):
        """The part's :class:`polar_render.parts.meshes.MeshOptions`."""
        from polar_render.parts.meshes import MeshOptions

        return MeshOptions(self.unit, self.normals, float(self.crease_angle_deg))


class ObjectSpecModel(_Section):
    name: Optional[Text] = Field(None, description="object name (default obj_<obj_id:06d>)")
    parts: dict[Name, Part] = Field(..., min_length=1, description="part name -> mesh and material, in draw order")


# --- layout

_LC = {f.name: f for f in dataclasses.fields(LayoutConfig)}


def _lc(name: str):
    """LayoutConfig's default of a layout key (the one place layout defaults live)."""
    f = _LC[name]
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return list(value) if isinstance(value, tuple) else value


def _instances(v):
    if not isinstance(v, list) or not v:
        raise ValueError(f"expected a non-empty list of obj_ids, got {v!r}")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise ValueError(f"obj_ids are integers >= 1, got {x!r} in {v!r}")
    return v


Instances = Annotated[list, Bounds(kind="list of obj_ids"), PlainValidator(_instances)]


class _Layout(_Section):
    instances: Instances = Field(..., description="obj_ids placed per BOP scene (duplicates allowed)")
    width: Number(1, MAX_IMAGE_SIDE, integer=True) = Field(_lc("width"), description="image width (px)")
    height: Number(1, MAX_IMAGE_SIDE, integer=True) = Field(_lc("height"), description="image height (px)")
    fx: Number(0.0, lo_open=True) = Field(_lc("fx"), description="focal length (px); square pixels: fx = fy")
    fy: Number(0.0, lo_open=True) = Field(_lc("fy"), description="focal length (px)")


class DropLayout(_Layout):
    """Embedded pybullet drop + camera shell (``polar_render.layout.embedded``); also read by the BlenderProc backend."""
    mode: Literal["drop"] = Field("drop", description="drop (default), topdown or station")
    cameras_per_scene: Number(1, 10_000, integer=True) = Field(_lc("cameras_per_scene"), description="cameras per BOP scene")
    drop_height_cm: Range(0.0) = Field(_lc("drop_height_cm"), description="free fall of the lowest point above the support (cm)")
    xy_range_mm: Tolerance() = Field(_lc("xy_range_mm"), description="drop position uniform in [-r, r]^2 (mm)")
    radius_m: Range(1e-3) = Field(_lc("radius_m"), description="camera distance to the objects' centre (m)")
    elevation_deg: Range(0.0, 89.9) = Field(_lc("elevation_deg"), description="camera elevation above the support plane")
    azimuth_deg: Range() = Field(_lc("azimuth_deg"), description="camera azimuth from world +x")
    inplane_deg: Range() = Field(_lc("inplane_deg"), description="roll about the optical axis")
    look_at_jitter_mm: Tolerance() = Field(_lc("look_at_jitter_mm"), description="per-axis jitter of the look-at target (mm)")
    friction: Number(0.0, 10.0) = Field(_lc("friction"), description="lateral friction (plane and objects)")
    settle_max_s: Number(0.0, 60.0, lo_open=True) = Field(_lc("settle_max_s"), description="simulated time limit of the drop (s)")


class TopdownLayout(_Layout):
    """Objects at identity resting on the support, cameras straight down."""
    mode: Literal["topdown"]
    cameras_per_scene: Number(1, 10_000, integer=True) = Field(_lc("cameras_per_scene"), description="cameras per BOP scene")
    distance_m: Range(1e-3) = Field(_lc("distance_m"), description="camera height above the support (m)")
    xy_jitter_mm: Tolerance() = Field(_lc("xy_jitter_mm"), description="camera xy jitter (mm, +-)")
    inplane_deg: Range() = Field(_lc("inplane_deg"), description="roll about the optical axis")
    tilt_deg: Tolerance(89.0) = Field(_lc("tilt_deg"), description="max tilt of the optical axis from vertical (0 = perpendicular)")


class View(_Section):
    elevation_deg: Number(0.0, 90.0, lo_open=True) = Field(..., description="above the fixture; 90 = straight down")
    azimuth_deg: Number() = Field(0.0, description="from world +x towards +y")
    roll_deg: Number() = Field(0.0, description="about the optical axis")


class StationLayout(_Layout):
    """One product on a fixture, one fixed camera per named view (BOP im_id = view index)."""
    mode: Literal["station"]
    views: dict[Name, View] = Field(..., min_length=1, description="view name -> camera direction, in file order")
    fill: Range(1e-3, 1.0) = Field(_lc("fill"), description="part's larger projected extent / shorter image side")
    rest_rotation_deg: _vector(3, "[x, y, z] Euler angles in degrees") = Field(
        _lc("rest_rotation_deg"), description="orientation on the fixture (xyz Euler, deg)")
    placement_mm: Tolerance() = Field(_lc("placement_mm"), description="part xy tolerance (+-, mm)")
    yaw_deg: Tolerance(180.0) = Field(_lc("yaw_deg"), description="part rotation tolerance about z (+-)")
    camera_position_mm: Tolerance() = Field(_lc("camera_position_mm"), description="camera position tolerance per axis (+-, mm)")
    camera_angle_deg: Tolerance(45.0) = Field(_lc("camera_angle_deg"), description="camera orientation tolerance per axis (+-)")

    @field_validator("instances")
    @classmethod
    def _one_product(cls, v):
        if len(v) != 1:
            raise ValueError(f"station mode holds one product: give one obj_id, got {v}")
        return v


LAYOUT_MODES = {"drop": DropLayout, "topdown": TopdownLayout, "station": StationLayout}
Layout = Annotated[Union[tuple(Annotated[m, Tag(t)] for t, m in LAYOUT_MODES.items())],
                   Discriminator(_tag("mode", "drop"), custom_error_type="bad_tag:mode",
                                 custom_error_message="mode must be one of " + ", ".join(LAYOUT_MODES))]


# --- lights

class Spot(_Section):
    """A spot light on a shell around the objects' centre, aimed at it."""
    radius_m: Range(1e-3, 100.0) = Field(_default("lights", "spot", "radius_m"), description="distance to the centre (m)")
    elevation_deg: Range(0.0, 90.0) = Field(_default("lights", "spot", "elevation_deg"), description="above the support plane")
    azimuth_deg: Range() = Field(_default("lights", "spot", "azimuth_deg"), description="from world +x")
    intensity: Range(0.0, 1e6) = Field(_default("lights", "spot", "intensity"), description="radiant intensity (W/sr)")
    cutoff_deg: Number(0.0, 90.0, lo_open=True) = Field(_default("lights", "spot", "cutoff_deg"), description="cone half-angle")
    beam_deg: Number(0.0, 90.0, lo_open=True) = Field(_default("lights", "spot", "beam_deg"), description="full-intensity half-angle (<= cutoff_deg)")

    @model_validator(mode="after")
    def _beam_inside_cutoff(self):
        if self.beam_deg > self.cutoff_deg:
            raise ValueError(f"beam_deg {self.beam_deg:g} must be <= cutoff_deg {self.cutoff_deg:g}")
        return self


class Ring(_Section):
    """Hexagonal ring light (``polar_render/lights.py``); geometry fixed per run, radiance per sample."""
    radius_m: Number(1e-4, 100.0) = Field(RING_DEFAULTS["radius_m"], description="hexagon circumradius (m)")
    height_m: Number(-100.0, 100.0) = Field(RING_DEFAULTS["height_m"], description="ring plane z (m)")
    centre_m: _vector(2, "[x, y] in metres") = Field(RING_DEFAULTS["centre_m"], description="ring centre [x, y] (m)")
    panel_width_m: Number(1e-5, 100.0) = Field(RING_DEFAULTS["panel_width_m"], description="radial panel width (m)")
    fill: Number(1e-3, 1.0) = Field(RING_DEFAULTS["fill"], description="share of each hexagon side a panel covers")
    tilt_deg: Number(-89.0, 89.0) = Field(RING_DEFAULTS["tilt_deg"], description="panels turned inwards")
    rotation_deg: Number(-360.0, 360.0) = Field(RING_DEFAULTS["rotation_deg"], description="about the vertical axis")
    radiance: Range(0.0) = Field(RING_DEFAULTS["radiance"], description="panel radiance, drawn per sample")
    variant: _choice(RING_VARIANTS, "a ring variant") = Field(
        RING_DEFAULTS["variant"], description="none, rot90 (turned 90 deg), scale2 (x2 in size); CLI --light-variant overrides")


class Lights(_Section):
    """Emitters besides the environment; ``spot: null`` switches the default spot off (a file naming only
    ``ring`` has no spot either; with neither, the environment light alone lights the scene)."""
    spot: Optional[Spot] = Field(None, description="spot light (default present unless the file names only ring; "
                                                   "null: none)")
    ring: Optional[Ring] = Field(None, description="hexagonal ring light")


# --- background, sensor, render

class Ground(_Section):
    """Textured support plane (checkerboard of two drawn colours, or one colour)."""
    size_m: Number(0.0, 1000.0, lo_open=True) = Field(_default("background", "ground", "size_m"), description="side length (m)")
    color: Color = Field(_default("background", "ground", "color"), description="linear RGB (as materials)")
    checker_probability: Number(0.0, 1.0) = Field(_default("background", "ground", "checker_probability"),
                                                  description="chance of a checkerboard instead of one colour")
    checker_scale: Range(0.0) = Field(_default("background", "ground", "checker_scale"), description="checker tiles per side")
    alpha: Range(1e-4, 1.0) = Field(_default("background", "ground", "alpha"), description="GGX roughness")
    z_m: Number() = Field(_default("background", "ground", "z_m"), description="support plane height (m)")


class Environment(_Section):
    radiance: Range(0.0) = Field(_default("background", "environment", "radiance"),
                                 description="constant unpolarized environment radiance")


class Background(_Section):
    ground: Optional[Ground] = Field(default_factory=Ground, description="support plane (null: none, the part "
                                                                         "floats in the environment light)")
    environment: Environment = Field(default_factory=Environment, description="environment light")


class Sensor(_Section):
    mode: _choice(("rgb", "mono"), "a sensor mode") = Field(
        _default("sensor", "mode"), description="rgb, or mono (Rec. 709 luminance, mono polarized variant)")
    exposure: Annotated[Any, Bounds(kind="'auto' or number > 0"), PlainValidator(_exposure)] = Field(
        _default("sensor", "exposure"), description="auto (exposure_percentile of S0 at 90 % of 16 bit) or a fixed DN per radiance unit")
    exposure_percentile: Number(0.0, 100.0, lo_open=True) = Field(
        _default("sensor", "exposure_percentile"), description="percentile of S0 that auto exposure puts at 90 % of 16 bit")
    dofp: Optional[Dofp] = Field(None, description="optional DoFP sensor simulation (default off)")


class Render(_Section):
    spp: Number(1, 1 << 16, integer=True) = Field(_default("render", "spp"), description="samples per pixel (CLI --spp overrides)")
    max_depth: Number(1, 1000, integer=True) = Field(_default("render", "max_depth"), description="path length limit")
    variant: _choice(("auto", *MI_POLARIZED_VARIANTS), "a polarized Mitsuba variant", "auto or a *_polarized variant") = Field(
        _default("render", "variant"), description="auto (cuda > llvm > scalar; mono_polarized for a mono sensor) "
                                                   "or a polarized Mitsuba variant")
    denoise: _choice(DENOISE_METHODS, "a denoiser") = Field(
        "none", description="none, or oidn (OIDN on the four polarizer images; CLI --denoise overrides)")
    sampler: Optional[_choice(SAMPLERS, "a Mitsuba sampler")] = Field(
        None, description="Monte Carlo sampler of the Stokes pass: independent (default) or ldsampler "
                          "(low-discrepancy: less edge noise at equal spp; spp must be a power of 4)")


# --- anomalies

class _Class(_Section):
    weight: Number(0.0) = Field(1.0, description="relative chance of the class")


class _OnParts(_Class):
    parts: list[Name] = Field(..., min_length=1, description="part names it may hit")


DIRECTIONS = {"+x": [1.0, 0.0, 0.0], "-x": [-1.0, 0.0, 0.0], "+y": [0.0, 1.0, 0.0], "-y": [0.0, -1.0, 0.0],
              "+z": [0.0, 0.0, 1.0], "-z": [0.0, 0.0, -1.0]}


def _direction(v):
    """A unit direction: one of +x, -x, +y, -y, +z, -z or [x, y, z] (normalised), model frame."""
    if isinstance(v, str):
        if v not in DIRECTIONS:
            raise ValueError(f"expected one of {', '.join(DIRECTIONS)} or [x, y, z], got {v!r}")
        return DIRECTIONS[v]
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError(f"expected one of {', '.join(DIRECTIONS)} or [x, y, z], got {v!r}")
    x = [float(_real(c)) for c in v]
    n = math.sqrt(sum(c * c for c in x))
    if n == 0:
        raise ValueError(f"a direction needs a non-zero vector, got {list(v)!r}")
    return [c / n for c in x]


Direction = Annotated[Any, Bounds(kind="+x, -x, +y, -y, +z, -z or [x, y, z]"), PlainValidator(_direction)]


class FaceRegion(_Section):
    """Where on its parts an anomaly may be centred, in each part's model frame (the mesh file's axes, after
    ``unit``); e.g. ``faces: {normal: +z}`` = the faces facing up (the top face)."""
    normal: Optional[Direction] = Field(None, description="faces whose normal lies within within_deg of this "
                                                          "direction")
    within_deg: Number(0.0, 180.0) = Field(15.0, description="tolerance of normal (deg)")
    group: Optional[Text] = Field(None, description="faces of this face group stored in the mesh (OBJ g/o, glTF "
                                                    "node, STEP product, PLY face property 'group')")

    @model_validator(mode="after")
    def _something(self):
        if self.normal is None and self.group is None:
            raise ValueError("give normal and/or group (faces of both when both are given)")
        if "within_deg" in self.model_fields_set and self.normal is None:
            raise ValueError("within_deg applies to normal")
        return self


class _OnSurface(_OnParts):
    faces: Optional[FaceRegion] = Field(None, description="only these faces of the parts (default: "
                                                          "anomalies.faces, else all)")


def _one_size(model, *sizes: str):
    for k in sizes:
        given = [x for x in (f"{k}_mm", f"{k}_rel") if getattr(model, x) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {k}_mm (absolute) and {k}_rel (x the part's largest extent), "
                             f"got {' and '.join(given) if given else 'neither'}")
    return model


class WaterStain(_OnSurface):
    """Algorithm 1 (``anomalies/stain.py``) on the listed parts of an object instance (impurity)."""
    radius_mm: Range(0.0) = Field(..., description="stain radius r (mm)")
    cell_mm: Range(0.0, lo_open=True) = Field(..., description="jittered-grid cell size (mm)")
    frequency_per_mm: Range(0.0) = Field(0.5, description="rim noise frequency")
    amplitude_mm: Range(0.0) = Field(0.0, description="rim noise amplitude (mm)")
    gamma: Range(0.0) = Field(2.0, description="rim profile exponent")
    alpha: Range(-1.0, 1.0) = Field(-0.2, description="relative reflectance change inside the stain")
    roughness_scale: Range(0.0) = Field(1.0, description="roughness factor inside the stain")

    @model_validator(mode="after")
    def _exact_search(self):
        r = as_range(self.radius_mm)[1] + as_range(self.amplitude_mm)[1]
        if r >= as_range(self.cell_mm)[0] / 2:
            raise ValueError("radius_mm + amplitude_mm must stay below cell_mm / 2 "
                             "(the 8-cell nearest-centre search is exact only then)")
        return self


class _Bulge(_OnSurface):
    radius_mm: Range(0.0, lo_open=True) = Field(None, description="radius R (mm); or radius_rel")
    radius_rel: Range(0.0, 1.0, lo_open=True) = Field(None, description="R as a share of the part's largest extent")
    depth_mm: Range(0.0) = Field(..., description="height of the profile depth * (1 - (d/R)^2)^2 (mm)")

    @model_validator(mode="after")
    def _size(self):
        return _one_size(self, "radius")


class Dent(_Bulge):
    """Smooth displacement into the surface (defect)."""


class Bump(_Bulge):
    """The same outwards (defect)."""


class Scratch(_OnSurface):
    """A groove along a planar arc in the tangent plane (defect)."""
    length_mm: Range(0.0, lo_open=True) = Field(None, description="arc length (mm); or length_rel")
    length_rel: Range(0.0, 1.0, lo_open=True) = Field(None, description="length as a share of the part's largest extent")
    width_mm: Range(0.0, lo_open=True) = Field(None, description="groove width (mm); or width_rel")
    width_rel: Range(0.0, 1.0, lo_open=True) = Field(None, description="width as a share of the part's largest extent")
    depth_mm: Range(0.0) = Field(..., description="groove depth (mm)")
    curvature_radius_mm: Range(1e-3) = Field(..., description="radius of the arc (mm)")

    @model_validator(mode="after")
    def _size(self):
        return _one_size(self, "length", "width")


class Chip(_OnSurface):
    """A chipped corner cut flat at depth_mm (defect)."""
    depth_mm: Range(0.0, lo_open=True) = Field(..., description="cut depth from the corner (mm)")


class Missing(_OnParts):
    """A part removed (defect)."""


class Extra(_OnParts):
    """A second copy of a part, turned 180 deg about the model z axis and moved by offset_mm (defect)."""
    offset_mm: _vector(3, "[x, y, z] in mm") = Field([0.0, 0.0, 0.0], description="move of the spare copy (mm, model frame)")


def _pairs(v):
    if not isinstance(v, list) or not v:
        raise ValueError(f"expected a non-empty list of [part, part] pairs, got {v!r}")
    for p in v:
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) and p[0] != p[1]):
            raise ValueError(f"each pair names two different parts, got {p!r}")
    return v


class Swapped(_Class):
    """Two parts of one object exchange their sampled materials (defect)."""
    pairs: Annotated[list, Bounds(kind="list of [part, part]"), PlainValidator(_pairs)] = Field(
        ..., description="part pairs that may swap")


ANOMALY_CLASSES = {"water_stain": WaterStain, "dent": Dent, "bump": Bump, "scratch": Scratch, "chip": Chip,
                   "missing": Missing, "extra": Extra, "swapped": Swapped}


class Classes(_Section):
    water_stain: Optional[WaterStain] = Field(None, description="impurity")
    dent: Optional[Dent] = Field(None, description="defect")
    bump: Optional[Bump] = Field(None, description="defect")
    scratch: Optional[Scratch] = Field(None, description="defect")
    chip: Optional[Chip] = Field(None, description="defect")
    missing: Optional[Missing] = Field(None, description="defect")
    extra: Optional[Extra] = Field(None, description="defect")
    swapped: Optional[Swapped] = Field(None, description="defect")

    @model_validator(mode="after")
    def _some_weight(self):
        given = [getattr(self, k) for k in ANOMALY_CLASSES if getattr(self, k) is not None]
        if given and not sum(c.weight for c in given) > 0:
            raise ValueError("the class weights sum to 0: give at least one class a weight > 0")
        return self


class Anomalies(_Section):
    probability: Number(0.0, 1.0) = Field(0.5, description="chance that a sample carries anomalies")
    count: Range(1, len(ANOMALY_CLASSES), integer=True) = Field(1, description="distinct classes per anomalous sample")
    mask_supersampling: Number(1, 16, integer=True) = Field(3, description="exact rays per pixel side for the masks")
    min_visible_px: Number(1, 10_000_000, integer=True) = Field(
        DEFAULT_MIN_VISIBLE_PX, description="smaller instances are redrawn, dropped or flagged")
    max_view_angle_deg: Number(0.0, 89.0) = Field(
        DEFAULT_MAX_VIEW_ANGLE_DEG, description="centres only on surfaces facing the camera within this angle")
    faces: Optional[FaceRegion] = Field(None, description="default region of every surface class (water_stain, "
                                                          "dent, bump, scratch, chip) that gives none")
    classes: Classes = Field(default_factory=Classes, description="class -> weight, parts and ranges")


class SceneFile(_Section):
    """A whole scene file after merging ``polar_render.config.scenes.DEFAULTS``."""

    name: Optional[Text] = Field(None, description="scene name (default: the folder's name)")
    description: Text = Field("", description="free text")
    objects: dict[ObjId, ObjectSpecModel] = Field({}, description="BOP obj_id -> parts")
    default_material: Name = Field("default", description="material of layout objects the file does not describe "
                                                          "(LAYOUT=...) and of parts without one")
    materials: dict[Name, Material] = Field({}, description="name -> material (by type)")
    layout: Optional[Layout] = Field(None, description="layout sampler (by mode); needed unless --layout is given")
    lights: Lights = Field(default_factory=Lights, description="spot and/or ring")
    background: Background = Field(default_factory=Background, description="ground plane and environment")
    sensor: Sensor = Field(default_factory=Sensor, description="camera sensor")
    render: Render = Field(default_factory=Render, description="Mitsuba settings")
    anomalies: Optional[Anomalies] = Field(None, description="surface anomalies (polar_render/anomalies/)")
    randomization_strength: Number(0.0, MAX_STRENGTH) = Field(
        1.0, description="scales every per-sample range and tolerance about its middle (0 = nominal)")

    @model_validator(mode="before")
    @classmethod
    def _distinct_obj_ids(cls, data):
        objects = data.get("objects") if isinstance(data, dict) else None
        if isinstance(objects, dict):
            seen = {}
            for k in objects:
                try:
                    oid = _obj_id(k)
                except ValueError:
                    continue   # reported by the field
                if oid in seen:
                    raise ValueError(f"objects: obj_id {oid} is given twice ({seen[oid]!r} and {k!r})")
                seen[oid] = k
        return data


# ----------------------------------------------------------------------------- errors















# ----------------------------------------------------------------------------- cross-key rules and meshes

def asset_dirs() -> tuple[Path, ...]:
    """Where scene meshes may live besides the scene's folder: ``<repo>/assets`` and every
    directory of ``POLAR_ASSET_DIRS`` (``os.pathsep``-separated)."""
    extra = [Path(p) for p in os.environ.get(ASSET_DIRS_ENV, "").split(os.pathsep) if p.strip()]
    return (REPO_ROOT / "assets", *extra)


def check_mesh(scene_file: Path, name: str, key: str, options=None):
    """The :class:`polar_render.parts.meshes.Prepared` mesh of a part (``name`` at ``key`` of
    ``scene_file``, ``options`` its MeshOptions): the path stays inside the scene's folder or an
    asset directory, the file is a readable mesh of a supported format with faces, within
    ``POLAR_MAX_MESH_FACES`` and at least 1 mm in size after its unit; it is converted when
    the renderer needs it (``polar_render.parts.meshes``). Raises SceneConfigError."""
    from polar_render.limits import InputTooLargeError
    from polar_render.parts.meshes import MeshError, MeshOptions, prepare
    from polar_render.paths import UnsafePathError, contained

    try:
        path = contained(scene_file.parent, name, source=scene_file, key=key, allowed=asset_dirs())
    except UnsafePathError as exc:
        raise SceneConfigError(str(exc)) from None
    if not path.is_file():
        what = "is not a file" if path.exists() else "file not found"
        raise SceneConfigError(f"{scene_file}: {key}: {what}: {path}")
    try:
        return prepare(path, options or MeshOptions(), where=f"{scene_file}: {key}")
    except InputTooLargeError as exc:
        raise SceneConfigError(str(exc)) from None
    except (MeshError, OSError) as exc:
        raise SceneConfigError(f"{scene_file}: {key}: {exc}") from None


def _layout_parts_note(parts) -> str:
    listed = ", ".join(sorted(parts)) or "none"
    return f"parts: {listed} (or 'model': the whole model of a layout object this file does not describe)"


def _cross_checks(m: SceneFile) -> list[tuple[str, str]]:
    """(dotted key, problem) for rules that span keys (types already checked)."""
    errs = []
    materials = set(m.materials) | ({"default"} if m.default_material not in m.materials else set())
    if m.default_material not in materials:
        errs.append(("default_material", f"{m.default_material!r} is not in materials ({', '.join(sorted(m.materials))})"))
    parts = set()
    for oid, obj in m.objects.items():
        for pname, part in obj.parts.items():
            parts.add(pname)
            if part.material is not None and part.material not in materials:
                errs.append((f"objects.{oid}.parts.{pname}.material",
                             f"unknown material {part.material!r}; materials: {', '.join(sorted(materials))}"))
            if part.unit is not None and Path(part.mesh).suffix.lower() in (".step", ".stp"):
                errs.append((f"objects.{oid}.parts.{pname}.unit",
                             "a STEP file declares its own unit (applied when it is read): leave out unit"))
    if m.layout is not None:
        fx, fy = m.layout.fx, m.layout.fy
        if abs(fx - fy) > SQUARE_PIXEL_RTOL * max(fx, fy):
            errs.append(("layout.fy", f"fx {fx:g} and fy {fy:g} differ: the renderer needs square pixels (fx = fy)"))
        for i, oid in enumerate(m.layout.instances):
            if oid not in m.objects:
                errs.append((f"layout.instances.{i}", f"obj_id {oid} is not described under objects "
                                                      f"({', '.join(map(str, m.objects)) or 'none'})"))
    if m.anomalies is not None:
        for cname in ANOMALY_CLASSES:
            c = getattr(m.anomalies.classes, cname)
            if c is None:
                continue
            named = ([(f"parts.{i}", p) for i, p in enumerate(c.parts)] if hasattr(c, "parts") else
                     [(f"pairs.{i}.{j}", p) for i, pair in enumerate(c.pairs) for j, p in enumerate(pair)])
            for where, p in named:
                if p not in parts and p != "model":
                    errs.append((f"anomalies.classes.{cname}.{where}", f"unknown part {p!r}; {_layout_parts_note(parts)}"))
    why = sampler_spp_problem(m.render.sampler, m.render.spp)
    if why:
        errs.append(("render.spp", why))
    if "mono" in m.render.variant and m.sensor.mode != "mono":
        errs.append(("render.variant", f"{m.render.variant} renders one luminance channel; it needs sensor.mode: mono"))
    return errs


def class_regions(anomalies) -> dict:
    """{class name: (dotted key of its region, FaceRegion)} of every surface class that has a
    region (its own ``faces``, else ``anomalies.faces``)."""
    out = {}
    if anomalies is None:
        return out
    for cname in ANOMALY_CLASSES:
        c = getattr(anomalies.classes, cname)
        if c is None or not hasattr(c, "faces"):
            continue
        if c.faces is not None:
            out[cname] = (f"anomalies.classes.{cname}.faces", c.faces)
        elif anomalies.faces is not None:
            out[cname] = ("anomalies.faces", anomalies.faces)
    return out


def _region_checks(m: SceneFile, prepared: dict) -> list[tuple[str, str]]:
    """Every part a region names has faces in it: the face group exists in its mesh, or some
    face has a normal within the tolerance (``prepared``: (obj_id, part) -> meshes.Prepared)."""
    from polar_render.parts.meshes import face_normals

    errs = []
    for cname, (key, region) in class_regions(m.anomalies).items():
        for p in getattr(m.anomalies.classes, cname).parts:
            meshes = [(oid, prep) for (oid, pname), prep in prepared.items() if pname == p]
            if p == "model" and region.group is not None:
                errs.append((f"{key}.group", "'model' (a layout object's own model) has no face groups"))
            for oid, prep in meshes:
                if region.group is not None and region.group not in prep.groups:
                    have = ", ".join(prep.groups) if prep.groups else \
                        "none (STL and single-body files have none; use OBJ groups, glTF nodes or a PLY face " \
                        "property 'group')"
                    errs.append((f"{key}.group", f"part {p!r} ({prep.source.name}) has no face group "
                                                 f"{region.group!r}; its groups: {have}"))
                    continue
                if region.normal is not None:
                    cos = face_normals(prep.path) @ np.asarray(region.normal)
                    if not (cos >= math.cos(math.radians(region.within_deg)) - 1e-9).any():
                        errs.append((f"{key}.normal", f"no face of part {p!r} ({prep.source.name}) has a normal "
                                                      f"within {region.within_deg:g} deg of {region.normal}"))
    return errs


def validate_scene(tree: dict, source: Path, *, check_meshes: bool = True) -> tuple[SceneFile, dict]:
    """Validate a merged scene tree; return (model, {(obj_id, part): mesh path the renderer
    reads}). Every problem becomes one line of the raised SceneConfigError."""
    try:
        m = SceneFile.model_validate(tree)
    except ValidationError as exc:
        raise SceneConfigError(format_errors(exc, source)) from None
    errs = _cross_checks(m)
    lines = [f"{source}: {k}: {why}" for k, why in errs]
    meshes, prepared = {}, {}
    bad_unit = {k for k, _ in errs if k.endswith(".unit")}
    for oid, obj in m.objects.items():
        for pname, part in obj.parts.items():
            key = f"objects.{oid}.parts.{pname}.mesh"
            if not check_meshes:
                meshes[oid, pname] = (source.parent / part.mesh).resolve()
                continue
            if f"objects.{oid}.parts.{pname}.unit" in bad_unit:
                continue
            try:
                prepared[oid, pname] = check_mesh(source, part.mesh, key, part.options())
                meshes[oid, pname] = prepared[oid, pname].path
            except SceneConfigError as exc:
                lines.append(str(exc))
    if check_meshes and not lines:
        from polar_render.parts.meshes import check_closed

        for oid, obj in m.objects.items():
            check_closed([(pname, prepared[oid, pname]) for pname in obj.parts], f"{source}: objects.{oid}")
        lines += [f"{source}: {k}: {why}" for k, why in _region_checks(m, prepared)]
    if lines:
        raise SceneConfigError("\n".join(lines))
    return m, meshes


# ----------------------------------------------------------------------------- helpers for other modules

class _LayoutOnly(_Section):
    layout: Layout


def validate_layout(d: dict) -> dict:
    """``layout`` mapping -> the same with its mode's defaults filled (:func:`layout_from_dict`);
    ValueError naming each bad key."""
    try:
        m = _LayoutOnly.model_validate({"layout": d})
    except ValidationError as exc:
        raise ValueError(format_errors(exc, "LayoutConfig", root=_LayoutOnly)) from None
    return m.layout.dump()


def layout_from_dict(d: dict) -> LayoutConfig:
    """A plain ``layout`` mapping (a scene file's) as a LayoutConfig: validated (the keys of
    its mode, types, bounds), defaults filled; ValueError naming each bad key."""
    return LayoutConfig(**validate_layout(d))


def bounds(dotted: str) -> Bounds:
    """Bounds of a range/number key, e.g. ``lights.spot.radius_m`` or ``materials.*.alpha``
    (``*``: any key of a mapping; a union takes the first member that has the key)."""
    node = SceneFile
    for el in dotted.split("."):
        members = _tagged(node)
        if members is not None:
            node = next(iter(m for m in members.values() if el in m.model_fields), None)
            if node is None:
                raise KeyError(dotted)
        t = _strip(node)
        if isinstance(t, type) and issubclass(t, BaseModel):
            if el not in t.model_fields:
                raise KeyError(dotted)
            field = t.model_fields[el]
            node = _field_bounds(field) or field.annotation
        elif typing.get_origin(t) is dict:
            node = typing.get_args(t)[1]
        else:
            raise KeyError(dotted)
    if not isinstance(node, Bounds):
        raise KeyError(dotted)
    return node


# ----------------------------------------------------------------------------- key reference

def _field_bounds(field) -> Bounds | None:
    """The Bounds of a field (in its metadata, or inside Optional[...])."""
    meta = list(field.metadata)
    t = field.annotation
    if typing.get_origin(t) in (Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        if len(args) == 1 and typing.get_origin(args[0]) is Annotated:
            meta += typing.get_args(args[0])[1:]
    return next((x for x in meta if isinstance(x, Bounds)), None)


def _type_text(field) -> str:
    b = _field_bounds(field)
    if b is not None:
        return f"{b.kind} {b.text()}" if b.kind in ("number", "integer", "range", "int range") and b.text() != "finite" \
            else b.kind
    t = _strip(field.annotation)
    if typing.get_origin(t) is list:
        return "list of names"
    return {str: "text", bool: "true / false"}.get(t, getattr(t, "__name__", str(t)))


def _yaml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        v = list(v)
    return f"{v!r}".replace("'", "") if not isinstance(v, str) else (v or '""')


def _default_text(field) -> str:
    if field.is_required():
        return "required"
    d = field.get_default(call_default_factory=False)
    if field.default_factory is not None or d is None:
        return ""
    return f"`{_yaml(d)}`"


def _tag_key(model) -> str:
    return "type" if model in MATERIAL_TYPES.values() else "mode"


def format_errors(exc, source, root=None, limit: int = 30) -> str:
    """:func:`polar_render.config.fields.format_errors` for scene-file models (``root``
    defaults to the whole :class:`SceneFile`; tagged unions are keyed by ``type``/``mode``)."""
    return _format_errors(exc, source, SceneFile if root is None else root, limit, _tag_key)


_TAG_ROWS = {"type": ("required", "material type (the keys below depend on it)"),
             "mode": ("`drop`", "layout mode (the keys below depend on it)")}


def _union_rows(members: dict, prefix: str):
    tag = _tag_key(next(iter(members.values())))
    default, desc = _TAG_ROWS[tag]
    yield f"{prefix}{tag}", "one of " + ", ".join(members), default, desc, ""
    for value, sub in members.items():
        yield from _rows(sub, prefix, f"{tag}: {value}")


def _rows(model, prefix: str, note: str = ""):
    """(key, type text, default text, meaning, 'type: x' / 'mode: y' or '') of every key."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if note and name == note.split(":")[0]:
            continue   # the union's tag: one row from _union_rows
        members, inner = _tagged(field.annotation), _strip(field.annotation)
        if members:
            yield key, "mapping", _default_text(field), field.description or "", note
            yield from _union_rows(members, f"{key}.")
        elif typing.get_origin(inner) is dict:
            val = typing.get_args(inner)[1]
            holder = {"objects": "<obj_id>", "materials": "<name>", "parts": "<part>", "views": "<view>"}[name]
            yield key, "mapping", _default_text(field), field.description or "", note
            if _tagged(val):
                yield from _union_rows(_tagged(val), f"{key}.{holder}.")
            else:
                yield from _rows(_strip(val), f"{key}.{holder}.", note)
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            yield key, "mapping", "", field.description or (inner.__doc__ or "").strip(), note
            yield from _rows(inner, f"{key}.", note)
        else:
            yield key, _type_text(field), _default_text(field), field.description or "", note


def key_reference() -> str:
    """Markdown table of every key of a scene file (the reference in scenes/README.md); keys
    that several materials types / layout modes share with the same meaning are one row."""
    rows: dict = {}
    for key, kind, default, desc, note in _rows(SceneFile, ""):
        rows.setdefault((key, kind, default, desc), []).append(note)
    out = ["| key | for | type / bounds | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for (key, kind, default, desc), notes in rows.items():
        tag = notes[0].split(":")[0] if notes[0] else ""
        when = f"{tag}: " + ", ".join(n.split(": ")[1] for n in notes) if tag else ""
        out.append(f"| `{key}` | {when} | {kind} | {default} | {desc} |")
    return "\n".join(out) + "\n"


README_BEGIN = "<!-- key reference: generated by `python -m polar_render.config.schema --write-readme` -->"
README_END = "<!-- end of key reference -->"


def readme_with_reference(text: str) -> str:
    """``scenes/README.md`` text with the generated key reference between the markers."""
    a, b = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    return text[:a] + "\n" + key_reference() + text[b:]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--write-readme"]:
        readme = REPO_ROOT / "scenes" / "README.md"
        readme.write_text(readme_with_reference(readme.read_text()))
        return 0
    print(key_reference(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
