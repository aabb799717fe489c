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
message names the file and, where relevant, the offending key.  Non-square
pixels (fx != fy) are accepted here; the renderer refuses them.  Writes are
atomic (temporary file in the target directory + ``os.replace``).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .geometry import is_rotation

__all__ = [
    "BopFormatError", "CameraInfo", "ObjectPose", "Frame", "BopLayout",
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

def _read_json(path: Path):
    if not path.is_file():
        raise BopFormatError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BopFormatError(f"{path}: cannot read: {e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BopFormatError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e


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


def _parse_camera(path: Path, data) -> CameraInfo:
    if not isinstance(data, dict):
        raise BopFormatError(f"{path}: expected a JSON object at top level")
    for k in ("fx", "fy", "cx", "cy", "width", "height"):
        if k not in data:
            raise BopFormatError(f"{path}: missing key '{k}'")
    fx, fy = (_scalar(path, f"'{k}'", data[k], positive=True) for k in ("fx", "fy"))
    cx, cy = (_scalar(path, f"'{k}'", data[k]) for k in ("cx", "cy"))
    w, h = (_scalar(path, f"'{k}'", data[k], positive=True, integer=True) for k in ("width", "height"))
    ds = _scalar(path, "'depth_scale'", data.get("depth_scale", 1.0), positive=True)
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return CameraInfo(K=K, width=w, height=h, depth_scale=ds)


def _parse_scene_camera(path: Path, data, default: CameraInfo) -> dict[int, dict]:
    """-> {im_id: dict(K, depth_scale, R_w2c, t_w2c_mm)}"""
    if not isinstance(data, dict):
        raise BopFormatError(f"{path}: expected a JSON object keyed by image id")
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


def _parse_scene_gt(path: Path, data) -> dict[int, tuple[ObjectPose, ...]]:
    if not isinstance(data, dict):
        raise BopFormatError(f"{path}: expected a JSON object keyed by image id")
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


def _is_scene_dir(p: Path) -> bool:
    return p.is_dir() and p.name.isdigit() and (
        (p / "scene_gt.json").exists() or (p / "scene_camera.json").exists())


# ----------------------------------------------------------------------------- layout

class BopLayout:
    """A validated BOP dataset root with one split loaded.

    Attributes: ``root`` (Path), ``split`` (str), ``camera`` (CameraInfo from
    camera.json), ``models_info`` ({obj_id: dict} from models_info.json, mm;
    empty if that file is absent).
    """

    def __init__(self, root: Path, split: str, camera: CameraInfo,
                 models_info: dict[int, dict], frames: list[Frame]):
        self.root = Path(root)
        self.split = split
        self.camera = camera
        self.models_info = models_info
        self._frames = sorted(frames, key=lambda f: (f.scene_id, f.im_id))

    def __repr__(self) -> str:
        return f"BopLayout(root={str(self.root)!r}, split={self.split!r}, frames={len(self._frames)})"

    def model_path(self, obj_id: int) -> Path:
        """``root/models/obj_{obj_id:06d}.ply``."""
        return _model_path(self.root, obj_id)

    def load_model(self, obj_id: int):
        """Load the model mesh (trimesh.Trimesh, millimetres, no processing).

        Raises BopFormatError if the file is unreadable, empty, or its largest
        bounding-box extent is below 1 (mm), i.e. it looks like metres."""
        import trimesh

        path = self.model_path(obj_id)
        if not path.is_file():
            raise BopFormatError(f"{path}: model file for obj_id {obj_id} not found")
        try:
            mesh = trimesh.load(path, force="mesh", process=False)
        except Exception as e:  # trimesh raises many types
            raise BopFormatError(f"{path}: cannot read mesh: {e}") from e
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0 or len(mesh.faces) == 0:
            raise BopFormatError(f"{path}: mesh is empty (no vertices or faces)")
        if not np.all(np.isfinite(mesh.vertices)):
            raise BopFormatError(f"{path}: mesh has non-finite vertices")
        ext = float(np.max(mesh.extents))
        if ext < MODEL_MIN_EXTENT_MM:
            raise BopFormatError(f"{path}: max extent {ext:g} < {MODEL_MIN_EXTENT_MM:g}: model looks like "
                                 "metres; BOP models are in millimetres - multiply by 1000")
        return mesh

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
    cands = sorted(d.name for d in root.iterdir()
                   if d.is_dir() and any(_is_scene_dir(s) for s in d.iterdir()))
    if not cands:
        raise BopFormatError(f"{root}: no split directory found (a sub-directory holding "
                             "<scene_id:06d>/scene_gt.json and scene_camera.json)")
    if len(cands) > 1:
        raise BopFormatError(f"{root}: several splits found {cands}; pass split= to choose one")
    return cands[0]


def read_layout(root, split: str | None = None) -> BopLayout:
    """Read and fully validate a BOP root (camera, models_info, every scene of one split).

    ``split=None`` auto-detects the single sub-directory holding scene
    directories (e.g. ``train_pbr``).  Raises BopFormatError on any problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise BopFormatError(f"{root}: dataset root is not a directory")
    cam_path = root / "camera.json"
    camera = _parse_camera(cam_path, _read_json(cam_path))

    info_path = root / "models" / "models_info.json"
    models_info: dict[int, dict] = {}
    if info_path.exists():
        raw = _read_json(info_path)
        if not isinstance(raw, dict):
            raise BopFormatError(f"{info_path}: expected a JSON object keyed by obj_id")
        for k, v in raw.items():
            if not isinstance(v, dict):
                raise BopFormatError(f"{info_path}: key '{k}': expected an object")
            models_info[_im_key(info_path, k)] = v

    if split is None:
        split = _detect_split(root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise BopFormatError(f"{split_dir}: split directory not found")
    scene_dirs = sorted((d for d in split_dir.iterdir() if d.is_dir() and d.name.isdigit()),
                        key=lambda d: int(d.name))
    if not scene_dirs:
        raise BopFormatError(f"{split_dir}: no scene directories (<scene_id:06d>/) found")

    frames: list[Frame] = []
    for sdir in scene_dirs:
        scene_id = int(sdir.name)
        cam_file, gt_file = sdir / "scene_camera.json", sdir / "scene_gt.json"
        cams = _parse_scene_camera(cam_file, _read_json(cam_file), camera)
        gts = _parse_scene_gt(gt_file, _read_json(gt_file))
        for im_id in sorted(gts):
            if im_id not in cams:
                raise BopFormatError(f"{gt_file}: key '{im_id}': image id missing from {cam_file}")
            for i, pose in enumerate(gts[im_id]):
                mp = _model_path(root, pose.obj_id)
                if not mp.is_file():
                    raise BopFormatError(f"{gt_file}: key '{im_id}'[{i}].obj_id: model file for "
                                         f"obj_id {pose.obj_id} not found (expected {mp})")
        for im_id, c in cams.items():
            frames.append(Frame(split=split, scene_id=scene_id, im_id=im_id, K=c["K"],
                                width=camera.width, height=camera.height, depth_scale=c["depth_scale"],
                                R_w2c=c["R_w2c"], t_w2c_mm=c["t_w2c_mm"], objects=gts.get(im_id, ())))
    return BopLayout(root, split, camera, models_info, frames)


# ----------------------------------------------------------------------------- writing

def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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
