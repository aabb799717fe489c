"""Bad-input corpus: scene files with one bad value, run through the real CLI.

Each case writes a variant of a shipped scene (``write_scene_variant``) or a scene whose part
mesh is bad into ``tmp_path/scene``, runs ``polar-render render --scene ... --out tmp_path/out``
in-process and requires: exit code 2, a message naming the scene file and the dotted key with
the problem, no traceback, no output directory, and the inputs left as they were.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trimesh

from polar_render.cli import main
from polar_render.config.scenes import REPO_ROOT, write_scene_variant

from tests.tree import snapshot

ASSETS = REPO_ROOT / "assets" / "usb_brick"
NAN, INF = float("nan"), float("inf")


def _variant(base: str = "usb_brick", **dotted):
    """Setup: the base scene with dotted keys set (``__`` in a name stands for ``.``)."""
    def make(scene_dir: Path, monkeypatch) -> Path:
        return write_scene_variant(scene_dir / "scene.yaml", base,
                                   dotted={k.replace("__", "."): v for k, v in dotted.items()})
    return make


def _text(transform):
    """Setup: the usb_brick scene file text (absolute mesh paths) passed through ``transform``."""
    def make(scene_dir: Path, monkeypatch) -> Path:
        text = (REPO_ROOT / "scenes" / "usb_brick" / "scene.yaml").read_text()
        dest = scene_dir / "scene.yaml"
        dest.write_text(transform(text.replace("../../assets", str(REPO_ROOT / "assets"))))
        return dest
    return make


def _mesh(prepare):
    """Setup: usb_brick with the plug's mesh replaced by what ``prepare(scene_dir)`` returns
    (a path string as written into the file); ``prepare`` may create files and links."""
    def make(scene_dir: Path, monkeypatch) -> Path:
        return write_scene_variant(scene_dir / "scene.yaml", "usb_brick",
                                   dotted={"objects.1.parts.plug.mesh": prepare(scene_dir)})
    return make


def _garbage(d: Path) -> str:
    (d / "junk.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nend_header\n1\n2\n")
    return "junk.ply"


def _random_bytes(d: Path) -> str:
    (d / "noise.ply").write_bytes(bytes(range(256)) * 8)
    return "noise.ply"


def _empty(d: Path) -> str:
    (d / "empty.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                                 "property float z\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n")
    return "empty.ply"


def _metres(d: Path) -> str:
    mesh = trimesh.load(ASSETS / "plug.ply", process=False, force="mesh")
    mesh.apply_scale(0.001)
    mesh.export(d / "plug_m.ply")
    return "plug_m.ply"


def _unsupported_format(d: Path) -> str:
    shutil.copy(ASSETS / "plug.ply", d / "plug.dae")   # a COLLADA name: not a format we read
    return "plug.dae"


def _outside_copy(d: Path) -> Path:
    other = d.parent / "elsewhere"
    other.mkdir(exist_ok=True)
    shutil.copy(ASSETS / "plug.ply", other / "plug.ply")
    return other / "plug.ply"


def _absolute_outside(d: Path) -> str:
    return str(_outside_copy(d))


def _symlink_escape(d: Path) -> str:
    (d / "link.ply").symlink_to(_outside_copy(d))
    return "link.ply"


def _symlink_loop(d: Path) -> str:
    (d / "a.ply").symlink_to(d / "b.ply")
    (d / "b.ply").symlink_to(d / "a.ply")
    return "a.ply"


def _directory(d: Path) -> str:
    (d / "meshdir.ply").mkdir()
    return "meshdir.ply"


def _too_many_faces(scene_dir: Path, monkeypatch) -> Path:
    dest = write_scene_variant(scene_dir / "scene.yaml", "usb_brick")
    monkeypatch.setenv("POLAR_MAX_MESH_FACES", "100")
    return dest


PLUG_MESH = "objects.1.parts.plug.mesh"
PLUG = "objects.1.parts.plug"


def _part(prepare, **keys):
    """Setup: usb_brick with the plug replaced by a part whose mesh ``prepare(scene_dir)``
    writes (returns its name), with the part keys ``keys`` (material metal)."""
    def make(scene_dir: Path, monkeypatch) -> Path:
        return write_scene_variant(scene_dir / "scene.yaml", "usb_brick",
                                   dotted={PLUG: {"mesh": prepare(scene_dir), "material": "metal", **keys}})
    return make


def _bracket_file(name: str, scale: float = 1.0, **kw):
    """A CAD bracket (tests/render/cad_parts.py) written as ``name`` (format by suffix)."""
    from tests.render.cad_parts import bracket, write_glb, write_obj, write_ply

    def prepare(d: Path) -> str:
        b = bracket()
        writer = {".stl": lambda p: p.write_bytes(_scaled(b, scale).export(file_type="stl")),
                  ".obj": lambda p: write_obj(p, b, scale=scale), ".ply": lambda p: write_ply(p, b, scale=scale, **kw),
                  ".glb": lambda p: write_glb(p, b, scale=scale)}[Path(name).suffix]
        writer(d / name)
        return name
    return prepare


def _scaled(mesh, scale):
    m = mesh.copy()
    m.apply_scale(scale)
    return m


def _raw(name: str, data: bytes):
    def prepare(d: Path) -> str:
        (d / name).write_bytes(data)
        return name
    return prepare


def _step_box(d: Path) -> str:
    from tests.render.cad_parts import box_step

    (d / "box.step").write_text(box_step())
    return "box.step"


def _region(**faces):
    """Setup: usb_brick with ``anomalies.classes.dent.faces`` (or ``anomalies.faces`` via
    ``at``) set to ``faces``."""
    at = faces.pop("at", "anomalies.classes.dent.faces")
    return _variant(**{at.replace(".", "__"): faces})

CASES = [
    # --- lights
    pytest.param(_variant(lights__spot__elevation_deg=185), "lights.spot.elevation_deg", ["185", "[0, 90]"],
                 id="spot-elevation-185"),
    pytest.param(_variant(lights__spot__elevation_deg=[30, 185]), "lights.spot.elevation_deg", ["[30, 185]"],
                 id="spot-elevation-range-185"),
    pytest.param(_variant(lights__spot__intensity=[3.0, 1.0]), "lights.spot.intensity", ["inverted", "[3.0, 1.0]"],
                 id="spot-intensity-inverted"),
    pytest.param(_variant(lights__spot__intensity=INF), "lights.spot.intensity", ["finite", "inf"],
                 id="spot-intensity-inf"),
    pytest.param(_variant(lights__spot__radius_m=[1.0, NAN]), "lights.spot.radius_m", ["finite", "nan"],
                 id="spot-radius-nan"),
    pytest.param(_variant(lights__spot__beam_deg=30.0), "lights.spot", ["beam_deg", "cutoff_deg"],
                 id="spot-beam-wider-than-cutoff"),
    pytest.param(_variant(lights__spot__power=2.0), "lights.spot.power", ["unknown key", "intensity"],
                 id="spot-unknown-key"),
    pytest.param(_variant(lights__laser={"power": 1}), "lights.laser", ["unknown key", "spot, ring"],
                 id="lights-unknown-light"),
    pytest.param(_variant("aluminum_plate", lights__ring__variant="rot45"), "lights.ring.variant",
                 ["'rot45'", "rot90"], id="ring-variant-typo"),
    pytest.param(_variant("aluminum_plate", lights__ring__radius_m=[0.08, 0.1]), "lights.ring.radius_m",
                 ["expected a number"], id="ring-radius-range-not-fixed"),
    pytest.param(_variant("aluminum_plate", lights__ring__tilt_deg=95), "lights.ring.tilt_deg", ["[-89, 89]"],
                 id="ring-tilt-95"),
    # --- materials
    pytest.param(_variant(materials__metal__conductor="Alu"), "materials.metal.conductor", ["'Alu'", "Al"],
                 id="conductor-typo"),
    pytest.param(_variant(materials__metal__type="metall"), "materials.metal.type", ["'metall'", "roughconductor"],
                 id="material-type-typo"),
    pytest.param(_variant(materials__metal__ior=1.5), "materials.metal.ior", ["unknown key", "conductor"],
                 id="conductor-with-ior"),
    pytest.param(_variant(materials__smooth_plastic__alpha=[0.1, 0.2, 0.3]), "materials.smooth_plastic.alpha",
                 ["3 values", "[lo, hi]"], id="alpha-three-values"),
    pytest.param(_variant(materials__smooth_plastic__alpha=[0.5, 0.1]), "materials.smooth_plastic.alpha",
                 ["inverted"], id="alpha-inverted"),
    pytest.param(_variant(materials__smooth_plastic__alpha=[0.1, NAN]), "materials.smooth_plastic.alpha",
                 ["finite"], id="alpha-nan"),
    pytest.param(_variant(materials__smooth_plastic__alpha=0.0), "materials.smooth_plastic.alpha",
                 ["0.0001"], id="alpha-zero"),
    pytest.param(_variant(materials__smooth_plastic__ior=5.0), "materials.smooth_plastic.ior", ["[1, 4]"],
                 id="ior-above-4"),
    pytest.param(_variant(materials__smooth_plastic__color=[0.5, 1.5, 0.2]), "materials.smooth_plastic.color",
                 ["[0, 1]"], id="colour-channel-above-1"),
    pytest.param(_variant(materials__smooth_plastic__color_tolerance=0.1), "materials.smooth_plastic",
                 ["color_tolerance", "nominal"], id="tolerance-with-range-colour"),
    pytest.param(_variant(materials__smooth_plastic__alpha="rough"), "materials.smooth_plastic.alpha",
                 ["'rough'"], id="alpha-text"),
    pytest.param(_variant("aluminum_plate", materials__brushed_al__alpha=0.1), "materials.brushed_al.alpha",
                 ["unknown key", "alpha_u"], id="brushed-with-alpha"),
    pytest.param(_variant(default_material="gold"), "default_material", ["'gold'"], id="default-material-missing"),
    # --- objects
    pytest.param(_variant(objects__1__parts__plug__scale=1000), "objects.1.parts.plug.scale",
                 ["unknown key", "mesh, material", "unit: mm, cm, m or in"], id="part-scale"),
    pytest.param(_variant(objects__1__parts__plug__material="gold"), "objects.1.parts.plug.material",
                 ["'gold'"], id="part-material-missing"),
    pytest.param(_variant(objects__1__parts__plug={"material": "metal"}), "objects.1.parts.plug.mesh",
                 ["required"], id="part-without-mesh"),
    pytest.param(_variant(objects__x={"parts": {"a": {"mesh": "a.ply"}}}), "objects.x", ["obj_ids"],
                 id="object-key-not-an-id"),
    pytest.param(_variant(objects__1__parts={}), "objects.1.parts", ["at least 1"], id="object-without-parts"),
    # --- layout
    pytest.param(_variant(layout__elevation_deg=[20, 185]), "layout.elevation_deg", ["[20, 185]", "89.9"],
                 id="camera-elevation-185"),
    pytest.param(_variant(layout__radius_m=[0.1, 0.2, 0.3]), "layout.radius_m", ["3 values"],
                 id="camera-radius-three-values"),
    pytest.param(_variant(layout__mode="dropp"), "layout.mode", ["'dropp'", "topdown"], id="layout-mode-typo"),
    pytest.param(_variant(layout__instances=[2]), "layout.instances.0", ["obj_id 2"], id="instance-undescribed"),
    pytest.param(_variant(layout__cameras_per_scene=0), "layout.cameras_per_scene", ["0"], id="cameras-zero"),
    pytest.param(_variant(layout__width=640.5), "layout.width", ["integer"], id="width-fraction"),
    pytest.param(_variant(layout__fy=1000.0), "layout.fy", ["square pixels"], id="non-square-pixels"),
    pytest.param(_variant(layout__distance_m=0.3), "layout.distance_m", ["unknown key"], id="topdown-key-in-drop"),
    pytest.param(_variant("aluminum_plate", layout__tilt_deg=95.0), "layout.tilt_deg", ["[0, 89]"],
                 id="topdown-tilt-95"),
    pytest.param(_variant("usb_brick_station", layout__views__top__elevation_deg=0.0),
                 "layout.views.top.elevation_deg", ["(0, 90]"], id="station-view-elevation-0"),
    pytest.param(_variant("usb_brick_station", layout__views__top__tilt_deg=5.0), "layout.views.top.tilt_deg",
                 ["unknown key", "roll_deg"], id="station-view-unknown-key"),
    pytest.param(_variant("usb_brick_station", layout__cameras_per_scene=3), "layout.cameras_per_scene",
                 ["unknown key"], id="station-cameras-per-scene"),
    pytest.param(_variant("usb_brick_station", layout__instances=[1, 1]), "layout.instances", ["one product"],
                 id="station-two-products"),
    pytest.param(_variant("usb_brick_station", layout__fill=1.5), "layout.fill", ["[0.001, 1]"],
                 id="station-fill-above-1"),
    # --- background, sensor, render
    pytest.param(_variant(background__ground__colour=[0.1, 0.2]), "background.ground.colour",
                 ["unknown key", "did you mean 'color'"], id="ground-colour-spelling"),
    pytest.param(_variant(background__ground__checker_probability=1.5), "background.ground.checker_probability",
                 ["[0, 1]"], id="checker-probability-1.5"),
    pytest.param(_variant(background__ground__size_m=[1.0, 2.0]), "background.ground.size_m",
                 ["expected a number"], id="ground-size-range"),
    pytest.param(_variant(background__environment__radiance=-0.1), "background.environment.radiance",
                 [">= 0"], id="environment-negative"),
    pytest.param(_variant(sensor__exposure="autoo"), "sensor.exposure", ["'autoo'", "auto"], id="exposure-autoo"),
    pytest.param(_variant(sensor__exposure=-1.0), "sensor.exposure", ["> 0"], id="exposure-negative"),
    pytest.param(_variant(sensor__exposure_percentile=150), "sensor.exposure_percentile", ["(0, 100]"],
                 id="exposure-percentile-150"),
    pytest.param(_variant(sensor__mode="colour"), "sensor.mode", ["'colour'", "rgb"], id="sensor-mode-typo"),
    pytest.param(_variant(sensor__dofp={"enable": True}), "sensor.dofp.enable", ["did you mean 'enabled'"],
                 id="dofp-enable-typo"),
    pytest.param(_variant(sensor__dofp={"enabled": True, "bit_depth": 17}), "sensor.dofp.bit_depth", ["[1, 16]"],
                 id="dofp-bit-depth-17"),
    pytest.param(_variant(sensor__dofp={"enabled": True, "layout": [[0, 45], [90, 90]]}), "sensor.dofp.layout",
                 ["0,45,90,135"], id="dofp-layout-repeated-angle"),
    pytest.param(_variant(sensor__gain=2.0), "sensor.gain", ["unknown key", "exposure"], id="sensor-unknown-key"),
    pytest.param(_variant(render__spp=0), "render.spp", ["[1, 65536]"], id="spp-zero"),
    pytest.param(_variant(render__spp="lots"), "render.spp", ["'lots'"], id="spp-lots"),
    pytest.param(_variant(render__spp=True), "render.spp", ["integer"], id="spp-bool"),
    pytest.param(_variant(render__max_depth=0), "render.max_depth", ["[1, 1000]"], id="max-depth-zero"),
    pytest.param(_variant(render__variant="cuda_ad_rgb"), "render.variant", ["polarized"], id="variant-unpolarized"),
    pytest.param(_variant(render__variant="llvm_ad_mono_polarized"), "render.variant", ["sensor.mode: mono"],
                 id="mono-variant-rgb-sensor"),
    pytest.param(_variant(render__denoise="bm3d"), "render.denoise", ["'bm3d'", "oidn"], id="denoise-unknown"),
    pytest.param(_variant(render__sampler="ldsampler", render__spp=32), "render.spp", ["32", "power of 4"],
                 id="ldsampler-spp-not-power-of-4"),
    pytest.param(_variant(render__sampler="multijitter"), "render.sampler", ["'multijitter'", "ldsampler"],
                 id="sampler-unknown"),
    pytest.param(_variant(render__samples=64), "render.samples", ["unknown key", "spp"], id="render-unknown-key"),
    # --- anomalies
    pytest.param(_variant(anomalies__probability=1.5), "anomalies.probability", ["[0, 1]"], id="probability-1.5"),
    pytest.param(_variant(anomalies__probability=-0.1), "anomalies.probability", ["[0, 1]"],
                 id="probability-negative"),
    pytest.param(_variant(anomalies__count=[1.5, 2]), "anomalies.count", ["integer"], id="count-fraction"),
    pytest.param(_variant(anomalies__count=9), "anomalies.count", ["[1, 8]"], id="count-above-classes"),
    pytest.param(_variant(anomalies__classes__dent__weight=-1), "anomalies.classes.dent.weight", [">= 0"],
                 id="weight-negative"),
    pytest.param(_variant(anomalies__classes__dentt={"weight": 1}), "anomalies.classes.dentt",
                 ["did you mean 'dent'"], id="class-typo"),
    pytest.param(_variant(anomalies__classes__dent__parts=["nope"]), "anomalies.classes.dent.parts.0",
                 ["'nope'"], id="class-unknown-part"),
    pytest.param(_variant(anomalies__classes__dent__radius_rel=0.1), "anomalies.classes.dent",
                 ["exactly one of radius_mm"], id="dent-both-sizes"),
    pytest.param(_variant(anomalies__classes__scratch__curvature_radius_mm=0.0),
                 "anomalies.classes.scratch.curvature_radius_mm", [">= 0.001"], id="scratch-straight-zero"),
    pytest.param(_variant(anomalies__classes__extra__offset_mm=[1.0, 2.0]), "anomalies.classes.extra.offset_mm",
                 ["[x, y, z]"], id="extra-offset-two-values"),
    pytest.param(_variant(anomalies__classes__swapped__pairs=[["brick_top", "brick_top"]]),
                 "anomalies.classes.swapped.pairs", ["two different parts"], id="swap-with-itself"),
    pytest.param(_variant(anomalies__classes__water_stain__cell_mm=[2.0, 3.0]), "anomalies.classes.water_stain",
                 ["cell_mm / 2"], id="stain-cell-too-small"),
    pytest.param(_variant(anomalies__mask_supersampling=0), "anomalies.mask_supersampling", ["[1, 16]"],
                 id="mask-supersampling-zero"),
    pytest.param(_variant(anomalies__max_view_angle_deg=95), "anomalies.max_view_angle_deg", ["[0, 89]"],
                 id="view-angle-95"),
    # --- top level and YAML
    pytest.param(_variant(randomization_strength=11), "randomization_strength", ["[0, 10]"], id="strength-11"),
    pytest.param(_variant(randomization_strength=NAN), "randomization_strength", ["finite"], id="strength-nan"),
    pytest.param(_variant(colour_space="srgb"), "colour_space", ["unknown key"], id="top-level-unknown-key"),
    pytest.param(_text(lambda t: t + "\nrender: {spp: 1}\n"), None, ["duplicate key 'render'"],
                 id="yaml-duplicate-key"),
    pytest.param(_text(lambda t: t.replace("render: {spp: 16", "render: {spp: [16")), None, ["invalid YAML"],
                 id="yaml-syntax"),
    pytest.param(_text(lambda t: "- just\n- a list\n"), None, ["mapping at top level"], id="yaml-not-a-mapping"),
    # --- meshes
    pytest.param(_mesh(_garbage), PLUG_MESH, ["cannot read mesh"], id="mesh-garbage-ply"),
    pytest.param(_mesh(_random_bytes), PLUG_MESH, ["cannot read mesh"], id="mesh-random-bytes"),
    pytest.param(_mesh(_empty), PLUG_MESH, ["empty"], id="mesh-empty"),
    pytest.param(_mesh(_metres), PLUG_MESH, ["looks like metres", "max extent 0.0", "millimetres"],
                 id="mesh-in-metres"),
    pytest.param(_mesh(_unsupported_format), PLUG_MESH, ["unsupported mesh format '.dae'", ".stl", ".step"],
                 id="mesh-unsupported-format"),
    pytest.param(_mesh(lambda d: "../../../etc/hostname"), PLUG_MESH, ["outside"], id="mesh-dotdot-escape"),
    pytest.param(_mesh(_absolute_outside), PLUG_MESH, ["outside"], id="mesh-absolute-outside"),
    pytest.param(_mesh(_symlink_escape), PLUG_MESH, ["outside"], id="mesh-symlink-escape"),
    pytest.param(_mesh(_symlink_loop), PLUG_MESH, ["symlink loop"], id="mesh-symlink-loop"),
    pytest.param(_mesh(lambda d: "no_such_mesh.ply"), PLUG_MESH, ["file not found", "no_such_mesh.ply"],
                 id="mesh-missing"),
    pytest.param(_mesh(_directory), PLUG_MESH, ["not a file"], id="mesh-is-a-directory"),
    pytest.param(_too_many_faces, "objects.1.parts.brick_top.mesh", ["faces, above the limit", "POLAR_MAX_MESH_FACES"],
                 id="mesh-too-many-faces"),
    # --- part meshes of other formats (issue 15): units, normals, health
    pytest.param(_part(_bracket_file("b.stl", 1e-3)), PLUG_MESH, ["looks like metres", "`unit: m`"],
                 id="stl-in-metres-without-unit"),
    pytest.param(_part(_bracket_file("b.ply", 1e-3), unit="cm"), PLUG_MESH, ["looks like metres", "now 'cm'"],
                 id="ply-in-metres-declared-cm"),
    pytest.param(_part(_bracket_file("b.stl"), unit="meter"), f"{PLUG}.unit", ["'meter'", "mm, cm, m, in"],
                 id="unit-misspelt"),
    pytest.param(_part(_bracket_file("b.stl"), unit=1000), f"{PLUG}.unit", ["1000", "a length unit"],
                 id="unit-as-scale-factor"),
    pytest.param(_part(_step_box, unit="mm"), f"{PLUG}.unit", ["STEP file declares its own unit"],
                 id="step-with-unit"),
    pytest.param(_part(_bracket_file("b.stl"), normals="smooth"), f"{PLUG}.normals", ["'smooth'", "crease, file"],
                 id="normals-unknown"),
    pytest.param(_part(_bracket_file("b.stl"), normals="file"), PLUG_MESH, ["normals: file needs vertex normals",
                                                                            "STL stores none"],
                 id="stl-normals-file"),
    pytest.param(_part(_bracket_file("b.stl"), crease_angle_deg=200), f"{PLUG}.crease_angle_deg", ["[0, 180]"],
                 id="crease-angle-200"),
    pytest.param(_part(_bracket_file("b.obj"), normals="file", crease_angle_deg=20), PLUG,
                 ["crease_angle_deg applies to normals: crease"], id="crease-angle-with-file-normals"),
    pytest.param(_part(_raw("b.obj", b"v 0 0 0\nv 10 0 nan\nv 0 10 0\nf 1 2 3\n")), PLUG_MESH, ["non-finite"],
                 id="obj-nan-vertex"),
    pytest.param(_part(_raw("b.obj", b"# nothing but a comment\n")), PLUG_MESH, ["empty"], id="obj-empty"),
    pytest.param(_part(_raw("b.glb", b"glTF\x02\x00\x00\x00junk")), PLUG_MESH, ["cannot read mesh"],
                 id="glb-garbage"),
    pytest.param(_part(_raw("b.stl", b"\0" * 80 + (99).to_bytes(4, "little") + b"\0" * 50)), PLUG_MESH,
                 ["truncated binary STL", "99 facets"], id="stl-truncated"),
    pytest.param(_part(_raw("b.step", b"ISO-10303-21;\nDATA;\nENDSEC;\n")), PLUG_MESH, ["STEP"],
                 id="step-garbage"),
    pytest.param(_part(_raw("b.stl", b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 10 0 0\n"
                                     b"vertex 20 0 0\nendloop\nendfacet\nendsolid x\n")), PLUG_MESH,
                 ["zero area"], id="stl-only-degenerate"),
    pytest.param(_part(_raw("b.gltf", b'{"asset": {"version": "2.0"}, "buffers": [{"uri": "../../../etc/hostname", '
                                      b'"byteLength": 4}]}')), PLUG_MESH, ["buffers.0.uri", "outside"],
                 id="gltf-buffer-escapes"),
    # --- anomaly regions and off switches
    pytest.param(_region(), "anomalies.classes.dent.faces", ["give normal and/or group"], id="region-empty"),
    pytest.param(_region(normal="up"), "anomalies.classes.dent.faces.normal", ["'up'", "+z"],
                 id="region-normal-word"),
    pytest.param(_region(normal=[0, 0, 0]), "anomalies.classes.dent.faces.normal", ["non-zero"],
                 id="region-normal-zero"),
    pytest.param(_region(normal="+z", within_deg=200), "anomalies.classes.dent.faces.within_deg", ["[0, 180]"],
                 id="region-within-200"),
    pytest.param(_region(group="top", within_deg=10), "anomalies.classes.dent.faces", ["within_deg applies to normal"],
                 id="region-within-without-normal"),
    pytest.param(_region(normals="+z"), "anomalies.classes.dent.faces.normals", ["did you mean 'normal'"],
                 id="region-key-typo"),
    pytest.param(_region(group="top"), "anomalies.classes.dent.faces.group",
                 ["part 'brick_top'", "no face group 'top'", "none"], id="region-group-missing"),
    pytest.param(_region(normal=[1, 2, 3], within_deg=0.0, at="anomalies.faces"), "anomalies.faces.normal",
                 ["no face of part 'brick_top'", "within 0 deg"], id="region-normal-matches-nothing"),
    pytest.param(_variant(anomalies__classes__missing__faces={"normal": "+z"}), "anomalies.classes.missing.faces",
                 ["unknown key"], id="region-on-missing"),
    pytest.param(_variant(background__ground="none"), "background.ground", ["expected a mapping"],
                 id="ground-off-as-text"),
    pytest.param(_variant(lights__spot=False), "lights.spot", ["expected a mapping"], id="spot-off-as-false"),
]




@pytest.mark.parametrize("make, key, needles", CASES)
def test_bad_scene_file(tmp_path, monkeypatch, capsys, make, key, needles):
    scene_dir = tmp_path / "scene"
    scene_dir.mkdir()
    scene = make(scene_dir, monkeypatch)
    before = snapshot(scene_dir)
    out = tmp_path / "out"
    rc = main(["render", "--scene", str(scene), "--out", str(out), "--n", "1", "--res", "64x48", "--spp", "1",
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(scene) in err, err
    if key is not None:
        assert f"{scene}: {key}: " in err, (key, err)
    for s in needles:
        assert s in err, (s, err)
    assert "Traceback" not in err
    assert not out.exists()
    assert snapshot(scene_dir) == before
