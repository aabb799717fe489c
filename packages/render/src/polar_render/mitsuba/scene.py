"""A BOP frame plus sampled appearance as a Mitsuba 3 polarized scene.

Frames and units
----------------
* BOP: millimetres; OpenCV camera (x right, y down, z forward); ``cam_R_w2c``/``cam_t_w2c``
  give the world (Z-up, support surface at ``ground.z_m``) to camera transform.
* Mitsuba world: the BOP world in metres. Mitsuba's camera looks along local +z with +y up
  and +x to the *left*, so ``to_world = T_c2w(OpenCV) @ diag(-1, -1, 1, 1)``.
* Intrinsics: ``fov_x = 2 atan(W / 2 fx)``. Mitsuba's ``principal_point_offset_{x,y}`` moves
  the image content by ``-offset * size`` pixels, so for OpenCV ``cx, cy`` (pixel centres at
  integer coordinates, image centre at ``(W-1)/2``) we set
  ``offset_x = -(cx - (W-1)/2) / W`` and ``offset_y = -(cy - (H-1)/2) / H``
  (pinned by ``tests/render/test_geometry.py``). Non-square pixels are refused.

The scene is built once per *structure* (which objects/parts and material types exist);
each sample then only writes values through ``mi.traverse`` (poses as vertex positions,
camera, materials, light, ground, environment): no reload, no kernel recompilation.
Everything a render reads is rewritten per sample, so a sample does not depend on the
samples rendered before it in the same process (``MitsubaScene.commit``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polar_render.bop import BopLayout, Frame
from polar_render.config.scenes import SceneConfig
from polar_render.geometry import SQUARE_PIXEL_RTOL, invert_pose, pose_matrix
from polar_render.anomalies.edits import geometry_edits
from polar_render.anomalies.parts import EXTRA_ROTATION, extra_offset_mm, extra_parts
from polar_render.mitsuba.materials import bsdf_dict, set_bsdf, structure_key
from polar_render.anomalies.stain import NOISE_ATTRIBUTE, perlin_where_needed, stain_parts
from polar_render.mitsuba.plugins import register_plugins
from polar_render.mitsuba.textures import register_textures
from polar_render.mitsuba.lights import ring_shape
from polar_render.mitsuba.variants import float_array, uint_array

OPENCV_TO_MITSUBA_CAM = np.diag([-1.0, -1.0, 1.0, 1.0])
# channel 7: the triangle index within its shape (face groups / orientations of anomaly regions)
AOV_SPEC = "pos:position,nrm:sh_normal,sid:shape_index,fid:prim_index"
AOV_CHANNELS = 8
# Denoiser guides (render.denoise: oidn), a separate pass on the Stokes camera: first-hit
# diffuse albedo (3) and world-space shading normal (3), box filter like the Stokes pass.
GUIDE_SPEC = "alb:albedo,nrm:sh_normal"
MI_LUMINANCE = (0.212671, 0.715160, 0.072169)  # Mitsuba's luminance() of linear sRGB (mono variants)
# Unit quad ([-1, 1]^2 at z = 0, normal +z, uv in [0, 1]^2). The ground is a mesh, not
# Mitsuba's analytic rectangle, so that its size and position change through its vertex
# buffer; the checker scale is an opaque input of ``textures.polar_checkerboard``.
GROUND_MESH = Path(__file__).resolve().parents[1] / "data" / "ground_quad.ply"


class SceneError(ValueError):
    """A frame cannot be rendered (e.g. non-square pixels, missing world pose)."""


@dataclass(frozen=True)
class PartSlot:
    """One rendered mesh: a part of one object instance of the frame."""
    key: str            # Mitsuba shape id, e.g. "i1_brick_top"
    instance: int       # 1-based index of the object in the BOP frame (object_mask value)
    obj_id: int
    part: str
    part_id: int        # 1-based global part index (part_mask value)
    mesh: Path
    material: str

    @property
    def is_extra(self) -> bool:
        """A spare copy of a part for ``extra`` anomalies (hidden unless used)."""
        return self.key.startswith("x")


@dataclass
class FrameStructure:
    slots: list[PartSlot] = field(default_factory=list)

    @property
    def base_slots(self) -> list[PartSlot]:
        return [s for s in self.slots if not s.is_extra]

    def key(self, materials: dict) -> tuple:
        return tuple((s.key, str(s.mesh), structure_key(materials[s.material])) for s in self.slots)


def frame_structure(cfg: SceneConfig, layout: BopLayout | None, frame: Frame) -> FrameStructure:
    """Which meshes/materials a frame needs. Objects the scene file does not describe use the
    layout's own model (``models/obj_XXXXXX.ply``) with ``default_material``."""
    st = FrameStructure()
    for inst, obj in enumerate(frame.objects, start=1):
        spec = cfg.objects.get(obj.obj_id)
        if spec is not None:
            parts = [(p.name, p.mesh, p.material) for p in spec.parts]
        elif layout is not None:
            layout.load_model(obj.obj_id)  # validates the file (units, readability)
            parts = [("model", layout.model_path(obj.obj_id), cfg.default_material)]
        else:
            raise SceneError(f"obj_id {obj.obj_id} is not described in {cfg.path} and no layout models are given")
        for name, mesh, mat in parts:
            st.slots.append(PartSlot(f"i{inst}_{name}", inst, obj.obj_id, name, len(st.slots) + 1, Path(mesh), mat))
    for s in list(st.slots):  # spare copies for ``extra`` anomalies: always present, hidden when unused
        if s.part in extra_parts(cfg.anomalies):
            st.slots.append(PartSlot(f"x{s.instance}_{s.part}", s.instance, s.obj_id, s.part, len(st.slots) + 1,
                                     s.mesh, s.material))
    return st


def ply_has_normals(path: Path) -> bool:
    """True when a PLY header declares per-vertex normals (nx, ny, nz)."""
    with open(path, "rb") as f:
        header = f.read(4096).split(b"end_header")[0]
    return b"property float nx" in header or b"property double nx" in header


MASK_TILE = 256   # sub-pixels per side of one supersampled mask window (render_aov)


def intrinsics_to_mitsuba(K: np.ndarray, width: int, height: int) -> dict:
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if abs(fx - fy) > SQUARE_PIXEL_RTOL * max(fx, fy) or abs(K[0, 1]) > 1e-9:
        raise SceneError(f"non-square pixels or skew are not supported: fx={fx}, fy={fy}, skew={K[0, 1]}")
    return {"fov": float(np.degrees(2.0 * np.arctan(width / (2.0 * fx)))),
            "principal_point_offset_x": float(-(cx - (width - 1) / 2.0) / width),
            "principal_point_offset_y": float(-(cy - (height - 1) / 2.0) / height)}


def world_to_camera(frame: Frame) -> np.ndarray:
    """World (metres) to OpenCV camera transform of a BOP frame (``cam_R_w2c``, ``cam_t_w2c``)."""
    if frame.R_w2c is None or frame.t_w2c_mm is None:
        raise SceneError(
            f"scene {frame.scene_id} image {frame.im_id}: scene_camera.json has no cam_R_w2c/cam_t_w2c; "
            "the renderer needs the world pose to place the ground and lights")
    return pose_matrix(frame.R_w2c, np.asarray(frame.t_w2c_mm) / 1000.0)


def camera_to_world(frame: Frame) -> np.ndarray:
    """Mitsuba sensor ``to_world`` (metres) of a BOP frame."""
    return invert_pose(world_to_camera(frame)) @ OPENCV_TO_MITSUBA_CAM


def object_to_world(frame: Frame, index: int) -> np.ndarray:
    """Model (metres) to world transform of object ``index`` (0-based) of the frame."""
    obj = frame.objects[index]
    T_m2c = pose_matrix(obj.R_m2c, np.asarray(obj.t_m2c_mm) / 1000.0)
    return invert_pose(world_to_camera(frame)) @ T_m2c


def objects_centre(frame: Frame) -> np.ndarray:
    """Mean world position (m) of the frame's objects (what lights aim at)."""
    return np.mean([object_to_world(frame, k)[:3, 3] for k in range(len(frame.objects))], axis=0)


def _camera(film: dict, sampler: dict, ident) -> dict:
    """A perspective camera (horizontal fov, pose and intrinsics rewritten per sample)."""
    return {"type": "perspective", "fov_axis": "x", "fov": 45.0, "to_world": ident, "film": film, "sampler": sampler}


def scene_dict(mi, cfg: SceneConfig, width: int, height: int, spp: int, max_depth: int, checker,
               mask_ss: int) -> tuple[dict, list[str]]:
    """The ``mi.load_dict`` description of a scene's fixed part, in load order: Stokes
    integrator, Stokes camera, exact AOV camera, ground (``checker`` as its texture), spot,
    environment, ring, sub-pixel mask camera. Returns it and the ring's shape ids."""
    box = {"type": "box"}
    pixel_format = "luminance" if "mono" in mi.variant() else "rgb"   # what mono variants use anyway
    film = {"type": "hdrfilm", "width": width, "height": height, "pixel_format": pixel_format, "rfilter": box}
    ident = mi.ScalarTransform4f()
    exact = {"type": "stratified", "sample_count": 1, "jitter": False}
    d = {"type": "scene",
         "integrator": {"type": "stokes", "integrator": {"type": "path", "max_depth": int(max_depth)}},
         "camera": _camera(film, {"type": cfg.render.get("sampler") or "independent", "sample_count": int(spp)}, ident),
         "aov_camera": _camera(dict(film), dict(exact), ident),
         "ground": {"type": "ply", "filename": str(GROUND_MESH),
                    "bsdf": {"type": "pplastic", "alpha": 0.3, "diffuse_reflectance": checker}},
         "spot": {"type": "spot", "intensity": {"type": "uniform", "value": 1.0},
                  "cutoff_angle": 20.0, "beam_width": 15.0},
         "environment": {"type": "constant", "radiance": {"type": "uniform", "value": 0.1}}}
    # Lights are structure (from the scene file, never from per-sample draws): the spot
    # only when ``lights.spot`` is given, the hexagonal ring's six fixed panels when
    # ``lights.ring`` is (its geometry is per run; only its radiance changes per sample).
    if "ground" not in cfg.background:   # background.ground: null
        del d["ground"]
    if "spot" not in cfg.lights:         # lights.spot: null, or a ring-only scene
        del d["spot"]
    else:  # cone angles are structure (scene file), set once: rewriting them re-specialises kernels
        d["spot"]["cutoff_angle"] = float(cfg.lights["spot"]["cutoff_deg"])
        d["spot"]["beam_width"] = float(cfg.lights["spot"]["beam_deg"])
    ring_keys = []
    if "ring" in cfg.lights:  # one mesh, one emitter: see lights.ring_mesh
        d["ring"] = ring_shape(mi, cfg.lights["ring"])
        ring_keys.append("ring")
    if mask_ss > 1:  # exact rays on an s x s sub-pixel grid, for anomaly masks (anomalies.masks.pool_mask)
        # a MASK_TILE^2 window of that grid, moved over the crop by its principal point
        # (render_aov): only the objects' bounding box is traced, with no recompilation
        d["mask_camera"] = _camera({**film, "width": MASK_TILE, "height": MASK_TILE}, dict(exact), ident)
    return d, ring_keys


STAINABLE = ("pplastic", "roughconductor", "brushed_conductor")   # BSDF types that take stain textures


def stain_textures(mi, bsdf_type: str) -> tuple:
    """(reflectance, roughness[, roughness], field) of one stain-capable part: one roughness
    texture per GGX alpha (two for the anisotropic ``brushed_conductor``), all reading one
    ``StainField`` (disabled until a sample has a stain)."""
    fld = register_plugins.StainField()
    refl = mi.load_dict({"type": "stain_reflectance"})
    roughs = tuple(mi.load_dict({"type": "stain_roughness"}) for _ in range(2 if bsdf_type == "brushed_conductor" else 1))
    refl.field = fld
    for r in roughs:
        r.field = fld
    return (refl, *roughs, fld)


class MitsubaScene:
    """One Mitsuba scene with a Stokes camera and an exact AOV camera, updated per sample."""

    def __init__(self, mi, cfg: SceneConfig, structure: FrameStructure, first: dict,
                 width: int, height: int, spp: int, max_depth: int, stains: bool = True):
        """``first``: the appearance of the first sample (chooses each part's BSDF type).
        ``stains=False`` leaves the water-stain textures out (a cheaper kernel for samples
        that have no stain; the pipeline keeps one scene of each kind per structure)."""
        import drjit

        self.mi, self.cfg, self.structure, self._dr = mi, cfg, structure, drjit
        self.width, self.height, self.spp = width, height, spp
        self.mask_ss = int(cfg.anomalies.get("mask_supersampling", 3)) if cfg.anomalies else 1
        self._spectral = "spectral" in mi.variant()
        register_textures(mi)
        self._checker = mi.load_dict({"type": "polar_checkerboard"})
        d, self.ring_keys = scene_dict(mi, cfg, width, height, spp, max_depth, self._checker, self.mask_ss)
        self.stains: dict[str, tuple] = {}
        self._add_parts(d, first["parts"], stain_parts(cfg.anomalies) if stains else set())
        # Sequential loading: registry ids (baked into kernels as literals) then follow dict
        # order, so every load of the same structure yields the same kernels.
        self.scene = mi.load_dict(d, parallel=False)
        self.aov_integrator = mi.load_dict({"type": "aov", "aovs": AOV_SPEC})
        for sh in self.scene.shapes():
            if sh.id() in self.stains:
                sh.add_attribute(NOISE_ATTRIBUTE, 1, np.zeros(sh.vertex_count(), np.float32))
        self.params = mi.traverse(self.scene)
        self.ring_radiance_keys = [f"{k}.emitter.radiance.value" for k in self.ring_keys
                                   if f"{k}.emitter.radiance.value" in self.params]
        if self.ring_keys and not self.ring_radiance_keys:
            raise SceneError("ring light: no traversable emitter radiance")
        sensors = {s.id(): i for i, s in enumerate(self.scene.sensors())}
        self.camera_index, self.aov_index = sensors["camera"], sensors["aov_camera"]
        self.mask_index = sensors.get("mask_camera", self.aov_index)
        self._read_models()
        self._index_shapes()

    def _add_parts(self, d: dict, parts: list[dict], stain_capable: set) -> None:
        """One ``ply`` shape per slot into ``d`` (BSDF from the slot's sampled material), with
        water-stain textures on every stain-capable part, always (disabled when a sample has
        no stain), so clean and stained samples share one kernel (``self.stains``)."""
        mi = self.mi
        mats = {(p["instance"], p["part"]): p for p in parts}
        if stain_capable:
            register_plugins(mi)
        for s in self.structure.slots:
            mat = mats[(s.instance, s.part)]
            stain = None
            if s.part in stain_capable and mat["type"] in STAINABLE:
                stain = self.stains[s.key] = stain_textures(mi, mat["type"])
            # Without stored normals Mitsuba would smooth across sharp edges: use face normals.
            # Instantiated one by one: load_dict merges identical nodes, which would make two
            # identical parts (a spare copy, or instances with equal values) one shared shape.
            shape = mi.load_dict({"type": "ply", "filename": str(s.mesh), "face_normals": not ply_has_normals(s.mesh),
                                  "bsdf": bsdf_dict(mat, stain[:-1] if stain else None)}, parallel=False)
            shape.set_id(s.key)
            d[s.key] = shape

    def _read_models(self) -> None:
        """Model-frame vertices (m), normals and texture coordinates of every slot, in the
        order Mitsuba loaded them (spare copies turned and moved as ``extra`` places them)."""
        self._model, self.models_mm, self.normals, self.texcoords, self._refined = {}, {}, {}, {}, set()
        for s in self.structure.slots:
            v = np.array(self.params[f"{s.key}.vertex_positions"], dtype=np.float64).reshape(-1, 3) / 1000.0
            n = np.array(self.params[f"{s.key}.vertex_normals"], dtype=np.float64).reshape(-1, 3)
            f = np.array(self.params[f"{s.key}.faces"], dtype=np.int64).reshape(-1, 3)
            n = n if n.size == v.size else None
            uv_key = f"{s.key}.vertex_texcoords"
            uv = np.array(self.params[uv_key], np.float64).reshape(-1, 2) if uv_key in self.params else None
            self.texcoords[s.key] = uv if uv is not None and len(uv) == len(v) else None
            if s.is_extra:  # the spare copy sits turned 180 degrees about the model z axis
                v = v @ EXTRA_ROTATION.T + extra_offset_mm(self.cfg.anomalies) / 1000.0
                n = n @ EXTRA_ROTATION.T if n is not None else None
            self._model[s.key] = (v, n)
            self.models_mm[s.key] = (v * 1000.0, f)
            self.normals[s.key] = n

    def _index_shapes(self) -> None:
        """Registry id of each shape -> slot (the shape_index AOV holds these ids), and the
        ground quad's clean vertices and texture coordinates."""
        mi, shapes = self.mi, self.scene.shapes()
        if self._dr.is_jit_v(mi.Float):   # JIT variants: the AOV holds the shape's registry id
            ids = np.array(self._dr.reinterpret_array(mi.UInt32, mi.ShapePtr(shapes))).ravel()
        else:                             # scalar variants: 1 + the shape's position in scene.shapes()
            ids = np.arange(1, len(shapes) + 1)
        by_key = {sh.id(): int(i) for sh, i in zip(shapes, ids)}
        self.shape_registry = {by_key[s.key]: s for s in self.structure.slots}
        self._ground_quad, self.ground_registry = None, None
        if "ground" in by_key:
            self._ground_quad = (np.array(self.params["ground.vertex_positions"], np.float64).reshape(-1, 3),
                                 np.array(self.params["ground.vertex_texcoords"], np.float64).reshape(-1, 2))
            self.ground_registry = by_key["ground"]

    # Per-sample values are passed as *opaque* Dr.Jit variables. Plain Python floats become
    # kernel literals, and Dr.Jit merges equal literals, so the kernel's shape would depend
    # on coincidences between values and on what was set before (measured: a second render
    # kernel compiled after the first sample). Opaque values keep one kernel for the run.
    def _scalar(self, x):
        v = self.mi.Float(float(x))
        self._dr.make_opaque(v)
        return v

    def _rgb(self, color):
        """What an ``rgb`` texture stores for linear RGB ``color``: spectral-upsampling
        coefficients (spectral variants), its Rec. 709 luminance (mono variants, one
        channel, as Mitsuba's ``srgb`` texture does at load time), else RGB."""
        mi = self.mi
        if self._spectral:
            c = mi.Color3f(mi.srgb_model_fetch(mi.ScalarColor3f(*color)))
        elif "mono" in mi.variant():
            c = mi.Float(float(np.dot(MI_LUMINANCE, [float(x) for x in color])))
        else:
            c = mi.Color3f(*color)
        self._dr.make_opaque(c)
        return c

    def update(self, frame: Frame, appearance: dict) -> None:
        """Write camera, poses and every sampled appearance value; never reloads."""
        mi, p = self.mi, self.params
        if (frame.width, frame.height) != (self.width, self.height):
            raise SceneError(f"frame size {frame.width}x{frame.height} differs from the scene's {self.width}x{self.height}")
        intr = intrinsics_to_mitsuba(frame.K, frame.width, frame.height)
        c2w = mi.ScalarTransform4f(camera_to_world(frame))
        ss = self.mask_ss
        Ks = frame.K * [[ss, 1, ss], [1, ss, ss], [1, 1, 1]]
        Ks[0, 2], Ks[1, 2] = (frame.K[0, 2] + 0.5) * ss - 0.5, (frame.K[1, 2] + 0.5) * ss - 0.5
        self._K_ss = Ks    # the sub-pixel grid's intrinsics; mask_camera windows are set in render_aov
        for cam in ("camera", "aov_camera"):
            self._set_intrinsics(cam, intr)
        for cam in ("camera", "aov_camera") + (("mask_camera",) if ss > 1 else ()):
            p[f"{cam}.to_world"] = c2w
        self.poses = {k + 1: object_to_world(frame, k) for k in range(len(frame.objects))}
        mats = {(m["instance"], m["part"]): m for m in appearance["parts"]}
        self.set_geometry({s.key: None for s in self.structure.slots if s.is_extra}, update=False)
        for s in self.structure.slots:
            st = self.stains.get(s.key)
            set_bsdf(p, f"{s.key}.bsdf", mats[(s.instance, s.part)], self._rgb, self._scalar, st[:-1] if st else None)
            if st:
                st[-1].set_disabled()
        if "spot" in appearance:
            sp = appearance["spot"]
            up = [0.0, 1.0, 0.0] if abs(sp["elevation_deg"]) > 89.0 else [0.0, 0.0, 1.0]
            p["spot.to_world"] = mi.ScalarTransform4f().look_at(origin=sp["position_m"], target=sp["target_m"], up=up)
            p["spot.intensity.value"] = self._scalar(sp["intensity"])
        for key in self.ring_radiance_keys:
            p[key] = self._scalar(appearance["ring"]["radiance"])
        g = appearance.get("ground")
        if g is not None and self._ground_quad is not None:
            self._set_ground(g)
        p["environment.radiance.value"] = self._scalar(appearance["environment"]["radiance"])
        self.commit()

    def _set_ground(self, g: dict) -> None:
        """Size, position, checker and roughness of the ground quad (sampled ``ground``)."""
        mi, p = self.mi, self.params
        half = g["size_m"] / 2.0
        quad = self._ground_quad
        centre = [g["centre_m"][0], g["centre_m"][1], g["z_m"]]
        p["ground.vertex_positions"] = float_array(mi, quad[0] * [half, half, 0.0] + centre)
        self._checker.set_scale(g["checker_scale"])
        p["ground.bsdf.diffuse_reflectance.color0.value"] = self._rgb(g["color0"])
        p["ground.bsdf.diffuse_reflectance.color1.value"] = self._rgb(g["color1"])
        p["ground.bsdf.alpha.value"] = self._scalar(g["alpha"])

    def commit(self) -> None:
        """Apply the written parameters, then let the environment emitter see the scene's
        bounds as they are now.

        Mitsuba 3.9's ``Scene.parameters_changed`` hands the environment emitter the scene's
        bounding box *before* recomputing that box from the moved shapes. The ``constant``
        environment keeps its bounding sphere from it (emitter samples lie 2 radii away, which
        sets the rounding of every shadow ray towards the environment), so after a geometry
        change it kept the bounds of the previous update, i.e. of the previous sample: sample
        i depended on the sample rendered before it in the same process (issue 16: 1 px,
        ~10 %, between WORKERS=1 and sharded runs). A second notification, with no shape left
        dirty, only re-reads the current bounds: no acceleration-structure rebuild, no new
        kernel (opaque bounds)."""
        self.params.update()
        self.scene.parameters_changed()

    def set_geometry(self, edits: dict, update: bool = True) -> None:
        """Write every slot's vertices for the current poses; ``edits`` maps a slot key to
        (model vertices mm, normals, faces, texture coordinates) replacing the clean mesh, or
        None to hide the slot. Faces and texture coordinates that differ from the clean mesh's
        (refined around a defect) are written too and restored on the next call without that
        edit; every call clears the stain noise (``_set_topology``)."""
        mi, p = self.mi, self.params
        self.current_mm = {}
        for s in self.structure.slots:
            T = self.poses[s.instance]
            v, n = self._model[s.key]
            f = uv = None
            if s.key in edits:
                if edits[s.key] is None:  # hidden: every triangle collapses to a point 100 m below
                    self._set_topology(s.key, None, None, len(v))
                    p[f"{s.key}.vertex_positions"] = float_array(mi, np.tile([0.0, 0.0, -100.0], len(v)))
                    continue
                v_mm, n, f, uv = edits[s.key]
                v = v_mm / 1000.0
            self._set_topology(s.key, f, uv, len(v))
            self.current_mm[s.key] = (v * 1000.0, f if f is not None else self.models_mm[s.key][1])
            p[f"{s.key}.vertex_positions"] = float_array(mi, (v @ T[:3, :3].T + T[:3, 3]).ravel())
            if n is not None:
                p[f"{s.key}.vertex_normals"] = float_array(mi, (n @ T[:3, :3].T).ravel())
        if update:
            self.commit()

    def _set_topology(self, key: str, faces, uv, n_vertices: int) -> None:
        """Faces and per-vertex buffers of a slot besides positions and normals.

        Faces: ``faces`` when they differ from the clean mesh's (refined around a defect),
        else the clean ones, written when the slot's topology changes. Texture coordinates:
        ``uv`` with refined faces, else the clean ones, written on every call (Mitsuba resets
        a mesh's UVs to zeros when its vertex count changes without them: a refined mesh, and
        every later sample on the clean one, lost the UVs that orient ``brushed_conductor``;
        rewriting them only on topology changes made the render kernel alternate between two
        specialisations from sample to sample). The stain-noise attribute is reset to zeros
        on the slot's ``n_vertices`` every call; ``apply_anomalies`` then writes the noise of
        this sample's stains only, so no noise outlives its sample."""
        clean = self.models_mm[key][1]
        refined = faces is not None and (faces.shape != clean.shape or not np.array_equal(faces, clean))
        if key in self.stains:
            self.params[f"{key}.{NOISE_ATTRIBUTE}"] = float_array(self.mi, np.zeros(n_vertices))
        if self.texcoords[key] is not None:
            t = uv if refined else self.texcoords[key]
            if t is None or len(t) != n_vertices:
                raise RuntimeError(f"{key}: refined mesh without texture coordinates for its {n_vertices} vertices")
            self.params[f"{key}.vertex_texcoords"] = float_array(self.mi, t.ravel())
        if refined or key in self._refined:
            self.params[f"{key}.faces"] = uint_array(self.mi, (faces if refined else clean).ravel())
        if refined:
            self._refined.add(key)
        else:
            self._refined.discard(key)

    def apply_anomalies(self, anomalies: list) -> None:
        """Geometry edits and water stains of one sample (after ``update``)."""
        self.set_geometry(geometry_edits(anomalies, self.structure.slots, self.models_mm, self.normals, self.texcoords),
                          update=False)
        for a in anomalies:
            if a.stain is None:
                continue
            for s in self.structure.base_slots:
                if s.instance == a.instance and s.key in self.stains and s.key in self.current_mm:
                    T = self.poses[s.instance]
                    w2m = invert_pose(T)
                    w2m_mm = np.diag([1000.0, 1000.0, 1000.0, 1.0]) @ w2m  # world m -> model mm
                    self.stains[s.key][-1].set(a.stain, w2m_mm)
                    v_mm, faces = self.current_mm[s.key]
                    edge = float(np.linalg.norm(v_mm[faces[:, 0]] - v_mm[faces[:, 1]], axis=1).max())
                    # vertices of any triangle that reaches a stain (the kernel interpolates N)
                    noise_v = perlin_where_needed(v_mm, a.stain, margin_mm=2 * edge)
                    self.params[f"{s.key}.{NOISE_ATTRIBUTE}"] = float_array(self.mi, noise_v)
        self.commit()

    def render_stokes(self, seed: int) -> np.ndarray:
        """(H, W, 15) float32 from the ``stokes`` integrator: R, G, B, then S0..S3 (each
        R, G, B); mono variants: (H, W, 13), Y, then S0..S3 (each R, G, B, all equal)."""
        img = self.mi.render(self.scene, sensor=self.camera_index, seed=int(seed), spp=self.spp)
        return np.array(img, dtype=np.float32)

    def render_guides(self, seed: int, spp: int) -> np.ndarray:
        """(H, W, 6) float32 denoiser guides (``GUIDE_SPEC``): diffuse albedo (3, reflectance,
        not clipped) and world shading normal (3, unit per ray, mean over the pixel; 0 where
        nothing is hit), averaged over ``spp`` rays on the Stokes camera's pixel footprint
        (same box filter), so they match the Stokes pixels. Built on first use only."""
        if getattr(self, "_guide_integrator", None) is None:
            self._guide_integrator = self.mi.load_dict({"type": "aov", "aovs": GUIDE_SPEC})
        img = self.mi.render(self.scene, sensor=self.camera_index, integrator=self._guide_integrator,
                             seed=int(seed), spp=int(spp))
        return np.array(img, dtype=np.float32)

    def _set_intrinsics(self, cam: str, intr: dict) -> None:
        p = self.params
        p[f"{cam}.x_fov"] = intr["fov"]
        p[f"{cam}.principal_point_offset_x"] = intr["principal_point_offset_x"]
        p[f"{cam}.principal_point_offset_y"] = intr["principal_point_offset_y"]

    def render_aov(self, supersampled: bool = False, crop: tuple | None = None) -> np.ndarray:
        """(H, W, 8) float32: world position (3), shading normal (3), shape registry id (1),
        triangle index within the shape (1, exact below 2^24);
        one ray through each pixel centre, box filter, so values are exact per pixel.
        ``supersampled``: the same on the (H*s, W*s) sub-pixel grid (s = mask_ss);
        ``crop``: (x0, y0, x1, y1) in pixels, only that region is returned (and, supersampled,
        only that region is traced: MASK_TILE^2 windows of the grid, each a camera whose
        principal point is shifted by the window's origin; opaque parameters, one kernel)."""
        mi = self.mi
        if not supersampled or self.mask_ss == 1:
            img = mi.render(self.scene, sensor=self.aov_index, integrator=self.aov_integrator, seed=0, spp=1)
            img = np.array(img, dtype=np.float32)
            if crop is not None:  # cropped in numpy: slicing the Dr.Jit tensor compiles per crop size
                x0, y0, x1, y1 = crop
                img = img[y0:y1, x0:x1]
            return img
        s, T = self.mask_ss, MASK_TILE
        x0, y0, x1, y1 = crop if crop is not None else (0, 0, self.width, self.height)
        X0, Y0, X1, Y1 = x0 * s, y0 * s, x1 * s, y1 * s
        out = np.empty((Y1 - Y0, X1 - X0, AOV_CHANNELS), np.float32)
        for oy in range(Y0, Y1, T):
            for ox in range(X0, X1, T):
                K = self._K_ss.copy()
                K[0, 2] -= ox
                K[1, 2] -= oy
                self._set_intrinsics("mask_camera", intrinsics_to_mitsuba(K, T, T))
                self.commit()
                img = mi.render(self.scene, sensor=self.mask_index, integrator=self.aov_integrator, seed=0, spp=1)
                h, w = min(T, Y1 - oy), min(T, X1 - ox)
                out[oy - Y0:oy - Y0 + h, ox - X0:ox - X0 + w] = np.array(img, dtype=np.float32)[:h, :w]
        return out

    def objects_bbox(self, frame: Frame, margin: int = 2) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) holding the projections of every part (spare copies
        and edits included), clipped to the image: where anomalies can appear."""
        pts = []
        for s in self.structure.slots:
            T = self.poses[s.instance]
            v = self._model[s.key][0]
            pts.append(v @ T[:3, :3].T + T[:3, 3])
        w2c = world_to_camera(frame)
        cam = np.concatenate(pts) @ w2c[:3, :3].T + w2c[:3, 3]
        cam = cam[cam[:, 2] > 1e-6]
        if not len(cam):
            return 0, 0, 0, 0
        uv = cam[:, :2] / cam[:, 2:3] * [frame.K[0, 0], frame.K[1, 1]] + [frame.K[0, 2], frame.K[1, 2]]
        x0, y0 = np.floor(uv.min(0)).astype(int) - margin
        x1, y1 = np.ceil(uv.max(0)).astype(int) + margin + 1
        return (int(max(x0, 0)), int(max(y0, 0)), int(min(max(x1, 0), self.width)), int(min(max(y1, 0), self.height)))
