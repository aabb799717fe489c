"""Reader and writer for the BOP dataset layout, with strict validation.

Layout (https://github.com/thodan/bop_toolkit/blob/master/docs/bop_datasets_format.md)::

    <root>/camera.json                         cx, cy, fx, fy, width, height, depth_scale
    <root>/models/obj_{obj_id:06d}.ply         meshes in millimetres
    <root>/models/models_info.json             diameter, min_x/y/z, size_x/y/z (mm)
    <root>/<split>/<scene_id:06d>/scene_camera.json   per image: cam_K, [cam_R_w2c, cam_t_w2c], depth_scale
    <root>/<split>/<scene_id:06d>/scene_gt.json       per image: [{obj_id, cam_R_m2c, cam_t_m2c}, ...]

Conventions:

* Rotations are stored as row-major 3x3 lists of 9 numbers; translations in
  millimetres.  ``cam_R_m2c``/``cam_t_m2c`` map model -> camera and
  ``cam_R_w2c``/``cam_t_w2c`` map world -> camera: ``p_c = R @ p + t``.
* The camera frame is OpenCV (x right, y down, z forward).
* ``cam_K`` uses OpenCV pixel coordinates: pixel centres at integer
  coordinates (pixel (row i, col j) is centred on u=j, v=i).
* Depth images store ``z_mm / depth_scale`` as uint16 (z = distance along the
  optical axis, not the ray length), so ``depth_mm = png * depth_scale``.
* Models are in millimetres.

Every problem found while reading raises :class:`BopFormatError` whose
message names the file and, where relevant, the offending key. Reading checks
more than the format: every file and directory read must resolve inside the
root (symlinks followed, loops reported: :class:`BopPathError`); every model a
split references must load (vertices, faces, >= 1 mm extent, at most
POLAR_MAX_MESH_FACES faces) and agree with its ``models_info.json`` entry, which
is required; every image must annotate an object, and at least one object of
each image must lie (by its model's bounding box) inside the image and in front
of the camera (objects entirely out of view in an otherwise visible frame are
listed in ``BopLayout.warnings``).  Non-square
pixels (fx != fy) are accepted here; the renderer refuses them.  Writes are
atomic (temporary file in the target directory + ``os.replace``).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polar_render import io
from polar_render.geometry import is_rotation
from polar_render.limits import check_face_count, check_mesh_file
from polar_render.paths import UnsafePathError, contained, resolve_checked

__all__ = [
    "BopFormatError", "BopPathError", "CameraInfo", "ObjectPose", "Frame", "BopLayout",
    "read_layout", "write_camera", "write_models", "write_scene",
]

ROT_TOL = 1e-4          # BlenderProc writes float32 rotations
METRES_LIMIT_MM = 10.0  # |t| below this on every axis looks like metres
MODEL_MIN_EXTENT_MM = 1.0


class BopFormatError(ValueError):
    """Malformed BOP data; the message names the file and, where relevant, the key."""


# ----------------------------------------------------------------------------- records

def _frozen_array(a, shape, what) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{what}: expected shape {shape}, got {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class CameraInfo:
    """Default camera of a dataset (camera.json).  K in pixels (OpenCV)."""
    K: np.ndarray
    width: int
    height: int
    depth_scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "K", _frozen_array(self.K, (3, 3), "CameraInfo.K"))


@dataclass(frozen=True, eq=False)
class ObjectPose:
    """One annotated object: model -> camera rotation and translation (mm)."""
    obj_id: int
    R_m2c: np.ndarray
    t_m2c_mm: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "R_m2c", _frozen_array(self.R_m2c, (3, 3), "ObjectPose.R_m2c"))
        object.__setattr__(self, "t_m2c_mm", _frozen_array(self.t_m2c_mm, (3,), "ObjectPose.t_m2c_mm"))


@dataclass(frozen=True, eq=False)
class Frame:
    """One image: intrinsics (OpenCV px), image size (px, from camera.json),
    depth_scale (depth_mm = png * depth_scale), optional world -> camera pose
    (t in mm) and the annotated objects."""
    split: str
    scene_id: int
    im_id: int
    K: np.ndarray
    width: int
    height: int
    depth_scale: float
    R_w2c: np.ndarray | None
    t_w2c_mm: np.ndarray | None
    objects: tuple[ObjectPose, ...]

    def __post_init__(self):
        object.__setattr__(self, "K", _frozen_array(self.K, (3, 3), "Frame.K"))
        if (self.R_w2c is None) != (self.t_w2c_mm is None):
            raise ValueError("Frame: R_w2c and t_w2c_mm must both be given or both be None")
        if self.R_w2c is not None:
            object.__setattr__(self, "R_w2c", _frozen_array(self.R_w2c, (3, 3), "Frame.R_w2c"))
            object.__setattr__(self, "t_w2c_mm", _frozen_array(self.t_w2c_mm, (3,), "Frame.t_w2c_mm"))
        object.__setattr__(self, "objects", tuple(self.objects))


# ----------------------------------------------------------------------------- parsing

def _read_bytes(path: Path) -> bytes:
    """Bytes of a file whose path was checked with :func:`_inside` (loops, escapes)."""
    return io.read_file_bytes(path, error=BopFormatError)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numbers(path, key, value, n) -> np.ndarray:
    """Validate a flat list of n finite numbers."""
    if not isinstance(value, list) or not all(_is_number(v) for v in value):
        raise BopFormatError(f"{path}: key {key}: expected a list of {n} numbers, got {value!r:.80}")
    if len(value) != n:
        raise BopFormatError(f"{path}: key {key}: expected {n} numbers, got {len(value)}")
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise BopFormatError(f"{path}: key {key}: non-finite number in {value}")
    return arr


def _scalar(path, key, value, *, positive=False, integer=False):
    ok = (isinstance(value, int) and not isinstance(value, bool)) if integer else _is_number(value)
    if not ok or not math.isfinite(value) or (positive and value <= 0):
        kind = ("positive " if positive else "") + ("integer" if integer else "finite number")
        raise BopFormatError(f"{path}: key {key}: expected a {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _rotation(path, key, value) -> np.ndarray:
    R = _numbers(path, key, value, 9).reshape(3, 3)
    if not is_rotation(R, ROT_TOL):
        dev = np.max(np.abs(R.T @ R - np.eye(3)))
        raise BopFormatError(
            f"{path}: key {key}: not a rotation (max |R^T R - I| = {dev:.2e}, det = {np.linalg.det(R):.6f}; "
            f"need orthonormal with det +1 within {ROT_TOL:g})")
    return R


def _intrinsics(path, key, value) -> np.ndarray:
    K = _numbers(path, key, value, 9).reshape(3, 3)
    if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-9) or K[1, 0] != 0 or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise BopFormatError(f"{path}: key {key}: not a pinhole matrix [fx,s,cx,0,fy,cy,0,0,1]: {value}")
    return K


def _im_key(path, k) -> int:
    if not (isinstance(k, str) and k.isdigit()):
        raise BopFormatError(f"{path}: key {k!r}: expected a non-negative integer id as key")
    return int(k)


def _parse_camera(path: Path, data: dict) -> CameraInfo:
    for k in ("fx", "fy", "cx", "cy", "width", "height"):
        if k not in data:
            raise BopFormatError(f"{path}: missing key '{k}'")
    fx, fy = (_scalar(path, f"'{k}'", data[k], positive=True) for k in ("fx", "fy"))
    cx, cy = (_scalar(path, f"'{k}'", data[k]) for k in ("cx", "cy"))
    w, h = (_scalar(path, f"'{k}'", data[k], positive=True, integer=True) for k in ("width", "height"))
    ds = _scalar(path, "'depth_scale'", data.get("depth_scale", 1.0), positive=True)
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return CameraInfo(K=K, width=w, height=h, depth_scale=ds)


def _parse_scene_camera(path: Path, data: dict, default: CameraInfo) -> dict[int, dict]:
    """-> {im_id: dict(K, depth_scale, R_w2c, t_w2c_mm)}"""
    out = {}
    for k, entry in data.items():
        im_id = _im_key(path, k)
        if not isinstance(entry, dict):
            raise BopFormatError(f"{path}: key '{k}': expected an object")
        if "cam_K" not in entry:
            raise BopFormatError(f"{path}: key '{k}': missing key 'cam_K'")
        K = _intrinsics(path, f"'{k}'.cam_K", entry["cam_K"])
        ds = entry.get("depth_scale", default.depth_scale)
        ds = _scalar(path, f"'{k}'.depth_scale", ds, positive=True)
        has_R, has_t = "cam_R_w2c" in entry, "cam_t_w2c" in entry
        if has_R != has_t:
            missing = "cam_t_w2c" if has_R else "cam_R_w2c"
            raise BopFormatError(f"{path}: key '{k}': missing key '{missing}' "
                                 "(cam_R_w2c and cam_t_w2c must come together)")
        R = t = None
        if has_R:
            R = _rotation(path, f"'{k}'.cam_R_w2c", entry["cam_R_w2c"])
            t = _numbers(path, f"'{k}'.cam_t_w2c", entry["cam_t_w2c"], 3)
        out[im_id] = dict(K=K, depth_scale=ds, R_w2c=R, t_w2c_mm=t)
    return out


def _parse_scene_gt(path: Path, data: dict) -> dict[int, tuple[ObjectPose, ...]]:
    out = {}
    for k, entries in data.items():
        im_id = _im_key(path, k)
        if not isinstance(entries, list):
            raise BopFormatError(f"{path}: key '{k}': expected a list of object annotations")
        poses = []
        for i, e in enumerate(entries):
            key = f"'{k}'[{i}]"
            if not isinstance(e, dict):
                raise BopFormatError(f"{path}: key {key}: expected an object")
            for req in ("obj_id", "cam_R_m2c", "cam_t_m2c"):
                if req not in e:
                    raise BopFormatError(f"{path}: key {key}: missing key '{req}'")
            obj_id = _scalar(path, f"{key}.obj_id", e["obj_id"], positive=True, integer=True)
            R = _rotation(path, f"{key}.cam_R_m2c", e["cam_R_m2c"])
            t = _numbers(path, f"{key}.cam_t_m2c", e["cam_t_m2c"], 3)
            if np.all(np.abs(t) < METRES_LIMIT_MM):
                raise BopFormatError(
                    f"{path}: key {key}.cam_t_m2c: {t.tolist()} looks like metres (all |t| < "
                    f"{METRES_LIMIT_MM:g}); BOP translations are in millimetres - multiply by 1000")
            poses.append(ObjectPose(obj_id=obj_id, R_m2c=R, t_m2c_mm=t))
        out[im_id] = tuple(poses)
    return out


def _model_path(root: Path, obj_id: int) -> Path:
    return root / "models" / f"obj_{obj_id:06d}.ply"


class BopPathError(BopFormatError, UnsafePathError):
    """A file or directory of the layout resolves outside its root, or is a symlink loop."""


def _inside(root: Path, rel: str, source, key: str) -> Path:
    """``root / rel`` after checking that it (through every symlink) stays inside ``root``;
    the nominal path is returned so that messages name what the user sees."""
    try:
        contained(root, rel, source=source, key=key)
    except UnsafePathError as exc:
        raise BopPathError(str(exc)) from exc
    return root / rel


def _is_scene_dir(p: Path) -> bool:
    return p.is_dir() and p.name.isdigit() and (
        (p / "scene_gt.json").exists() or (p / "scene_camera.json").exists())


# ----------------------------------------------------------------------------- models

def _read_model(path: Path, data: bytes, where: str):
    """Parse and validate one model file (PLY bytes, millimetres): readable, vertices and
    faces present, face indices valid, finite, non-zero area, largest extent >= 1 mm, at
    most POLAR_MAX_MESH_FACES faces. ``where`` (file and key that name the model) prefixes
    the face-count error."""
    import io as _stdio

    import trimesh

    check_mesh_file(path, where=where)   # face count from the header, before parsing
    try:
        mesh = trimesh.load(_stdio.BytesIO(data), file_type="ply", force="mesh", process=False)
    except Exception as e:  # trimesh raises many types for damaged files
        raise BopFormatError(f"{path}: cannot read mesh (truncated or not a PLY file?): {e}") from e
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise BopFormatError(f"{path}: mesh is empty (no vertices or faces)")
    check_face_count(len(mesh.faces), path, where=where)
    faces = np.asarray(mesh.faces)
    if faces.min() < 0 or faces.max() >= len(mesh.vertices):
        raise BopFormatError(f"{path}: face vertex indices outside 0..{len(mesh.vertices) - 1}")
    if not np.all(np.isfinite(mesh.vertices)):
        raise BopFormatError(f"{path}: mesh has non-finite vertices")
    ext = float(np.max(mesh.extents))
    if ext < MODEL_MIN_EXTENT_MM:
        raise BopFormatError(f"{path}: max extent {ext:g} < {MODEL_MIN_EXTENT_MM:g}: model looks like "
                             "metres; BOP models are in millimetres - multiply by 1000")
    if not float(mesh.area) > 0.0:
        raise BopFormatError(f"{path}: every face has zero area (nothing to render)")
    return mesh


def _check_model_info(info_path: Path, obj_id: int, entry: dict | None, mesh, model: Path) -> None:
    """models_info.json must describe every referenced model, and agree with its mesh: a
    positive ``diameter`` and, where given, min_x/y/z and size_x/y/z within
    max(0.5 mm, 2 % of the largest extent) of the mesh's bounding box (a model in other
    units, or another model, disagrees by far more)."""
    if entry is None:
        raise BopFormatError(f"{info_path}: no entry for obj_id {obj_id} (used by the layout; model {model})")
    d = entry.get("diameter")
    _scalar(info_path, f"'{obj_id}'.diameter", d, positive=True)
    lo, hi = mesh.bounds
    tol = max(0.5, 0.02 * float(np.max(hi - lo)))
    for axis, (l, h) in zip("xyz", zip(lo, hi)):
        for key, want in ((f"min_{axis}", l), (f"size_{axis}", h - l)):
            if key in entry:
                got = _scalar(info_path, f"'{obj_id}'.{key}", entry[key])
                if abs(got - want) > tol:
                    raise BopFormatError(
                        f"{info_path}: key '{obj_id}'.{key}: {got:g} mm, but {model} has {want:g} mm "
                        f"(models_info.json and the model disagree: other units or another model?)")


# ----------------------------------------------------------------------------- visibility

def _frustum_side(K: np.ndarray, width: int, height: int, p: np.ndarray) -> str | None:
    """Why the convex hull of camera-frame points ``p`` (N, 3; mm, OpenCV) cannot be seen
    in a ``width`` x ``height`` image with intrinsics ``K`` (pixel centres at integers, so
    the image spans u in [-0.5, W - 0.5], v in [-0.5, H - 0.5]): "behind the camera",
    "left/right of/above/below the image", or None if it may be visible. Conservative: all
    points outside one bounding plane of the view frustum."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    fx, s, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    planes = {  # value >= 0 inside: z > 0 and the four image borders as planes through the centre
        "behind the camera": z,
        "left of the image": fx * x + s * y + (cx + 0.5) * z,
        "right of the image": -(fx * x + s * y) - (cx - width + 0.5) * z,
        "above the image": fy * y + (cy + 0.5) * z,
        "below the image": -fy * y - (cy - height + 0.5) * z,
    }
    for why, value in planes.items():
        if np.all(value <= 0.0):
            return why
    return None


def _box_corners(mesh) -> np.ndarray:
    lo, hi = mesh.bounds
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _check_visibility(gt_file: Path, im_id: int, frame: Frame, models: dict) -> list[str]:
    """Refuse a frame in which no object can be seen; return a warning for each object of
    a frame that lies entirely outside the image (the others are visible)."""
    unseen = []
    for i, o in enumerate(frame.objects):
        corners_c = _box_corners(models[o.obj_id]) @ o.R_m2c.T + o.t_m2c_mm
        why = _frustum_side(frame.K, frame.width, frame.height, corners_c)
        if why is not None:
            unseen.append(f"'{im_id}'[{i}] (obj_id {o.obj_id}): {why}")
    if unseen and len(unseen) == len(frame.objects):
        raise BopFormatError(f"{gt_file}: key '{im_id}': no object can be seen in the {frame.width}x"
                             f"{frame.height} image (model bounding box entirely out of view: "
                             f"{'; '.join(unseen)}); the sample would show no object")
    return [f"{gt_file}: key {u}: model entirely out of view; rendered but not seen" for u in unseen]


# ----------------------------------------------------------------------------- layout

class BopLayout:
    """A validated BOP dataset root with one split loaded.

    Attributes: ``root`` (Path), ``split`` (str), ``camera`` (CameraInfo from
    camera.json), ``models_info`` ({obj_id: dict} from models_info.json, mm),
    ``digest`` (sha256 of every file read: camera, models_info, the referenced models and
    the split's scene files; identifies the layout's content wherever it lies),
    ``warnings`` (objects that lie entirely out of view in a frame where others are seen).
    """

    def __init__(self, root: Path, split: str, camera: CameraInfo,
                 models_info: dict[int, dict], frames: list[Frame], models: dict | None = None,
                 digest: str = "", warnings: list[str] | None = None):
        self.root = Path(root)
        self.split = split
        self.camera = camera
        self.models_info = models_info
        self._frames = sorted(frames, key=lambda f: (f.scene_id, f.im_id))
        self._models = dict(models or {})
        self.digest = digest
        self.warnings = list(warnings or [])

    def __repr__(self) -> str:
        return f"BopLayout(root={str(self.root)!r}, split={self.split!r}, frames={len(self._frames)})"

    def model_path(self, obj_id: int) -> Path:
        """``root/models/obj_{obj_id:06d}.ply``."""
        return _model_path(self.root, obj_id)

    def load_model(self, obj_id: int):
        """The model mesh (trimesh.Trimesh, millimetres, no processing; a copy).

        Models the layout references were validated by :func:`read_layout`; others are
        read now, with the same checks (BopFormatError if the file is unreadable, empty,
        or its largest bounding-box extent is below 1 mm, i.e. it looks like metres)."""
        if obj_id not in self._models:
            rel = _model_path(Path(), obj_id).as_posix()
            path = _inside(self.root, rel, self.root, rel)
            if not path.is_file():
                raise BopFormatError(f"{path}: model file for obj_id {obj_id} not found")
            self._models[obj_id] = _read_model(path, _read_bytes(path), str(path))
        return self._models[obj_id].copy()

    def scene_ids(self) -> list[int]:
        return sorted({f.scene_id for f in self._frames})

    def frames(self, scene_id: int | None = None) -> list[Frame]:
        """All frames of the split (or of one scene), sorted by (scene_id, im_id)."""
        if scene_id is None:
            return list(self._frames)
        if scene_id not in self.scene_ids():
            raise ValueError(f"{self.root / self.split}: no scene {scene_id}; have {self.scene_ids()}")
        return [f for f in self._frames if f.scene_id == scene_id]


def _detect_split(root: Path) -> str:
    cands = []
    for d in sorted(root.iterdir()):
        if d.name.startswith("."):
            continue
        _inside(root, d.name, root, d.name)   # a symlink loop or escape is reported, not skipped
        if not d.is_dir() or d.name == "models":
            continue
        scenes = [s for s in d.iterdir() if s.name.isdigit()]
        for s in scenes:
            _inside(root, f"{d.name}/{s.name}", root, f"{d.name}/{s.name}")
        if any(_is_scene_dir(s) for s in scenes):
            cands.append(d.name)
    if not cands:
        raise BopFormatError(f"{root}: no split directory found (a sub-directory holding "
                             "<scene_id:06d>/scene_gt.json and scene_camera.json)")
    if len(cands) > 1:
        raise BopFormatError(f"{root}: several splits found {cands}; pass split= to choose one")
    return cands[0]


class _Reader:
    """Reads the files of one layout root, each checked to lie inside it, hashing what it
    reads (``BopLayout.digest``)."""

    def __init__(self, root: Path):
        self.root = root
        self.hash = hashlib.sha256()

    def path(self, rel: str, source=None, key: str | None = None) -> Path:
        return _inside(self.root, rel, source if source is not None else self.root, key or rel)

    def _record(self, rel: str, data: bytes) -> None:
        self.hash.update(f"{rel}\0{len(data)}\0".encode())
        self.hash.update(data)

    def json(self, rel: str, what: str = "a JSON object keyed by image id") -> dict:
        """The JSON object ``rel`` (every BOP JSON file is one); BopFormatError naming it."""
        path = self.path(rel)
        data = _read_bytes(path)
        self._record(rel, data)
        return io.parse_json_object(path, data, what=what, error=BopFormatError)

    def model(self, obj_id: int, source: Path, key: str):
        rel = _model_path(Path(), obj_id).as_posix()
        path = self.path(rel, source, key)
        if not path.is_file():
            raise BopFormatError(f"{source}: key {key}: model file for obj_id {obj_id} not found (expected {path})")
        data = _read_bytes(path)
        self._record(rel, data)
        return path, _read_model(path, data, f"{source}: key {key}")


def _read_models_info(rd: _Reader) -> tuple[Path, dict[int, dict]]:
    info_path = rd.path("models/models_info.json")
    if not info_path.is_file():
        raise BopFormatError(f"{info_path}: file not found (BOP layouts describe every model there: "
                             "diameter, min_x/y/z, size_x/y/z in mm)")
    raw = rd.json("models/models_info.json", what="a JSON object keyed by obj_id")
    models_info: dict[int, dict] = {}
    for k, v in raw.items():
        if not isinstance(v, dict):
            raise BopFormatError(f"{info_path}: key '{k}': expected an object")
        models_info[_im_key(info_path, k)] = v
    return info_path, models_info


def _scene_dirs(rd: _Reader, split: str) -> list[Path]:
    split_dir = rd.path(split, key="split")
    if not split_dir.is_dir():
        raise BopFormatError(f"{split_dir}: split directory not found")
    names = sorted((d.name for d in split_dir.iterdir() if d.name.isdigit()), key=int)
    scene_dirs = [d for d in (rd.path(f"{split}/{n}") for n in names) if d.is_dir()]
    if not scene_dirs:
        raise BopFormatError(f"{split_dir}: no scene directories (<scene_id:06d>/) found")
    return scene_dirs


def _read_scene(rd: _Reader, split: str, sdir: Path, camera: CameraInfo, info: tuple[Path, dict],
                models: dict) -> tuple[list[Frame], list[str]]:
    """Frames of one scene directory and their out-of-view warnings; loads (into ``models``)
    and checks every model the scene references."""
    rel = f"{split}/{sdir.name}"
    cam_file, gt_file = sdir / "scene_camera.json", sdir / "scene_gt.json"
    cams = _parse_scene_camera(cam_file, rd.json(f"{rel}/scene_camera.json"), camera)
    gts = _parse_scene_gt(gt_file, rd.json(f"{rel}/scene_gt.json"))
    if not gts:
        raise BopFormatError(f"{gt_file}: no image is annotated (expected {{\"<im_id>\": [{{obj_id, "
                             f"cam_R_m2c, cam_t_m2c}}, ...]}})")
    for im_id in sorted(gts):
        if im_id not in cams:
            raise BopFormatError(f"{gt_file}: key '{im_id}': image id missing from {cam_file}")
        if not gts[im_id]:
            raise BopFormatError(f"{gt_file}: key '{im_id}': no object annotated in this image")
        for i, pose in enumerate(gts[im_id]):
            if pose.obj_id not in models:
                path, mesh = rd.model(pose.obj_id, gt_file, f"'{im_id}'[{i}].obj_id")
                _check_model_info(info[0], pose.obj_id, info[1].get(pose.obj_id), mesh, path)
                models[pose.obj_id] = mesh
    frames, warnings = [], []
    for im_id, c in cams.items():
        if im_id not in gts:
            raise BopFormatError(f"{cam_file}: key '{im_id}': image id missing from {gt_file} "
                                 "(every image needs its object annotations)")
        frame = Frame(split=split, scene_id=int(sdir.name), im_id=im_id, K=c["K"], width=camera.width,
                      height=camera.height, depth_scale=c["depth_scale"], R_w2c=c["R_w2c"], t_w2c_mm=c["t_w2c_mm"],
                      objects=gts[im_id])
        warnings += _check_visibility(gt_file, im_id, frame, models)
        frames.append(frame)
    return frames, warnings


def read_layout(root, split: str | None = None) -> BopLayout:
    """Read and fully validate a BOP root (camera, models_info, every scene of one split,
    every model the split references, and that each frame shows an object).

    ``split=None`` auto-detects the single sub-directory holding scene
    directories (e.g. ``train_pbr``).  Every file and directory read must resolve inside
    ``root`` (symlinks followed; loops reported).  Raises BopFormatError on any problem
    (BopPathError for paths, limits.InputTooLargeError for oversized models).
    """
    root = Path(root)
    try:
        resolve_checked(root, source=root, key="dataset root")
    except UnsafePathError as exc:
        raise BopPathError(str(exc)) from exc
    if not root.is_dir():
        raise BopFormatError(f"{root}: dataset root is not a directory")
    rd = _Reader(root)
    camera = _parse_camera(root / "camera.json", rd.json("camera.json", what="a JSON object of camera intrinsics"))
    info = _read_models_info(rd)
    split = split if split is not None else _detect_split(root)
    frames: list[Frame] = []
    models: dict[int, object] = {}
    warnings: list[str] = []
    for sdir in _scene_dirs(rd, split):
        f, w = _read_scene(rd, split, sdir, camera, info, models)
        frames += f
        warnings += w
    return BopLayout(root, split, camera, info[1], frames, models=models, digest=rd.hash.hexdigest(),
                     warnings=warnings)


# ----------------------------------------------------------------------------- writing

def _atomic_write(path: Path, data: bytes) -> None:
    """Atomic, fsynced, mode ``io.FILE_MODE`` (as every file under OUT); a full disk raises
    ``io.NoSpaceError`` naming ``path``."""
    io.write_bytes(path, data, fsync=True)


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode("utf-8"))


def _flat(a) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float64).ravel()]


def write_camera(root, camera: CameraInfo) -> None:
    """Write ``root/camera.json`` (cx, cy, fx, fy, width, height, depth_scale)."""
    path = Path(root) / "camera.json"
    K = camera.K
    data = {"cx": float(K[0, 2]), "cy": float(K[1, 2]), "fx": float(K[0, 0]), "fy": float(K[1, 1]),
            "width": int(camera.width), "height": int(camera.height),
            "depth_scale": float(camera.depth_scale)}
    _parse_camera(path, data)  # refuse to write what the reader would reject
    _write_json(path, data)


def _diameter(v: np.ndarray) -> float:
    """Largest distance between two vertices (as BOP's models_info 'diameter')."""
    pts = v
    if len(v) > 64:
        try:
            from scipy.spatial import ConvexHull
            pts = v[ConvexHull(v).vertices]
        except Exception:  # degenerate (flat) point sets: fall back to all points
            pts = v
    best = 0.0
    for i in range(0, len(pts), 1024):
        d = np.linalg.norm(pts[i:i + 1024, None, :] - pts[None, :, :], axis=-1)
        best = max(best, float(d.max()))
    return best


def write_models(root, models: dict) -> None:
    """Write ``models/obj_XXXXXX.ply`` (binary PLY, mm) for each {obj_id: Trimesh}
    and replace ``models/models_info.json`` with diameter, min_x/y/z, size_x/y/z (mm)."""
    mdir = Path(root) / "models"
    info = {}
    for obj_id in sorted(models):
        mesh = models[obj_id]
        if not isinstance(obj_id, (int, np.integer)) or obj_id < 1:
            raise ValueError(f"write_models: obj_id must be a positive integer, got {obj_id!r}")
        v = np.asarray(mesh.vertices, dtype=np.float64)
        if len(v) == 0 or len(mesh.faces) == 0 or not np.all(np.isfinite(v)):
            raise ValueError(f"write_models: mesh for obj_id {obj_id} is empty or non-finite")
        lo, hi = v.min(axis=0), v.max(axis=0)
        if np.max(hi - lo) < MODEL_MIN_EXTENT_MM:
            raise ValueError(f"write_models: mesh for obj_id {obj_id} looks like metres "
                             f"(max extent {np.max(hi - lo):g}); BOP models are in millimetres")
        _atomic_write(_model_path(Path(root), int(obj_id)), mesh.export(file_type="ply", encoding="binary"))
        info[str(int(obj_id))] = {
            "diameter": _diameter(v),
            "min_x": float(lo[0]), "min_y": float(lo[1]), "min_z": float(lo[2]),
            "size_x": float(hi[0] - lo[0]), "size_y": float(hi[1] - lo[1]), "size_z": float(hi[2] - lo[2]),
        }
    _write_json(mdir / "models_info.json", info)


def write_scene(root, split: str, scene_id: int, frames: list[Frame]) -> Path:
    """Write ``<root>/<split>/<scene_id:06d>/scene_camera.json`` and ``scene_gt.json``.

    Frames must belong to (split, scene_id) and have distinct im_ids.  The
    data are validated with the reader's rules before anything is written.
    Returns the scene directory.
    """
    sdir = Path(root) / split / f"{int(scene_id):06d}"
    cams, gts = {}, {}
    for fr in sorted(frames, key=lambda f: f.im_id):
        if fr.split != split or fr.scene_id != scene_id:
            raise ValueError(f"write_scene: frame ({fr.split}, {fr.scene_id}, {fr.im_id}) "
                             f"does not belong to ({split}, {scene_id})")
        k = str(int(fr.im_id))
        if k in cams:
            raise ValueError(f"write_scene: duplicate im_id {fr.im_id}")
        c = {"cam_K": _flat(fr.K)}
        if fr.R_w2c is not None:
            c["cam_R_w2c"] = _flat(fr.R_w2c)
            c["cam_t_w2c"] = _flat(fr.t_w2c_mm)
        c["depth_scale"] = float(fr.depth_scale)
        cams[k] = c
        gts[k] = [{"cam_R_m2c": _flat(o.R_m2c), "cam_t_m2c": _flat(o.t_m2c_mm), "obj_id": int(o.obj_id)}
                  for o in fr.objects]
    cam_path, gt_path = sdir / "scene_camera.json", sdir / "scene_gt.json"
    dummy = CameraInfo(K=np.eye(3), width=1, height=1)
    _parse_scene_camera(cam_path, cams, dummy)
    _parse_scene_gt(gt_path, gts)
    _write_json(cam_path, cams)
    _write_json(gt_path, gts)
    return sdir
