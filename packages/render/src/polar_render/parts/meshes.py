"""Part meshes from CAD exports: any common format -> the renderer's PLY (millimetres, crease normals).

A scene part names a mesh file (``objects.<id>.parts.<part>.mesh``). When the scene loads
(:func:`prepare`, called by the schema before anything is rendered) the file is read,
checked and, unless it already is what the renderer wants, converted into a *canonical
PLY* that Mitsuba, the layout sampler and the anomaly code read.

Formats (by file suffix)
------------------------
``.ply``, ``.stl`` (ASCII and binary), ``.obj``, ``.glb`` / ``.gltf`` (read with trimesh) and
``.step`` / ``.stp`` (tessellated by OpenCASCADE through the ``cascadio`` package, linear
deflection ``STEP_TOL_MM``). Scene graphs (glTF nodes, OBJ objects, STEP products) are
flattened with their transforms into one mesh per part.

Units
-----
Part key ``unit``: ``mm`` (default for PLY, STL, OBJ, which store no unit), ``cm``, ``m``
(default for glTF/GLB, whose specification is in metres) or ``in`` (25.4 mm). STEP files
declare their own unit, which OpenCASCADE applies; ``unit`` is refused for them. After the
conversion a largest extent below 1 mm is refused as "looks like metres" (as BOP models).

Normals
-------
Part key ``normals``: ``crease`` (default) recomputes the shading normals from the geometry,
whatever normals the file carries: coincident vertices are welded (positions equal to
``WELD_REL`` x the largest extent), and the corners of a vertex share one normal when their
faces are joined by edges whose dihedral angle is below ``crease_angle_deg`` (default 30);
that normal is the corner-angle-weighted mean of those faces' normals. So the corners of a
flat face carry exactly its normal (flat faces render flat, e.g. a 40 mm face exported with
corner-averaged normals), and finely tessellated curved faces (neighbouring facets closer
than the crease angle) render smooth. ``normals: file`` keeps the file's vertex normals as
they are (for meshes whose generator wrote exact normals, e.g. ``assets/``); the file must
have them (STL never does).

Mesh health (each message names the scene file and the part)
-------------------------------------------------------------
Errors: unreadable or empty files, unsupported suffixes, non-finite vertices, face indices
out of range, more faces than ``POLAR_MAX_MESH_FACES``, a largest extent below 1 mm after
the unit, every face degenerate. Warnings (:class:`MeshWarning`): an object is not watertight
(the union of its parts' meshes has open edges, T-junction seams aside: :func:`check_closed`,
:func:`open_edges`; the inside can show through holes, open seams and chipped corners; the
layout's physics uses the convex hull anyway), degenerate (zero-area) faces (dropped: they
render nothing), faces wound against their neighbours or closed shells wound inwards
(negative volume; flipped so that normals point outwards, else the renderer would shade the
inside of a one-sided material), file normals that point against their faces
(``normals: file``), more than ``HUGE_FACES`` faces (slow), a largest extent above
``HUGE_EXTENT_MM`` (a unit mistake?).

Face groups
-----------
Named face sets stored in the file: OBJ ``g`` groups and ``o`` objects (as trimesh names
them: ``<object>_<group>`` when both are present), glTF node names, STEP product names, and
a PLY integer face property ``group`` (group names are its values, e.g. ``"2"``). They let
an anomaly class be restricted to part of a part (``anomalies.classes.<c>.faces.group``).

Cache
-----
Canonical PLYs go to ``POLAR_MESH_CACHE`` (default ``$XDG_CACHE_HOME/polar_render/meshes``,
i.e. ``~/.cache/polar_render/meshes``), named ``<stem>-<key>.ply`` with ``key`` the SHA-256
of the source file's bytes, its format, the options (unit, normals, crease angle) and
``CONVERTER_VERSION``: an entry can never be stale, and every process (render workers
included) resolves the same file. Each entry has a ``.json`` report beside it (face groups,
warnings, sizes), written first; the PLY is written last, atomically, so its presence marks a
complete entry. A PLY in millimetres with ``normals: file``, no face groups and nothing to fix
is used in place (no copy); only its report is cached.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMATS = {".ply": "ply", ".stl": "stl", ".obj": "obj", ".glb": "glb", ".gltf": "gltf", ".step": "step",
           ".stp": "step"}
UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4}
DEFAULT_UNIT = {"ply": "mm", "stl": "mm", "obj": "mm", "glb": "m", "gltf": "m"}   # step: the file's own
NORMALS = ("crease", "file")
DEFAULT_CREASE_DEG = 30.0
MIN_EXTENT_MM = 1.0              # as bop.MODEL_MIN_EXTENT_MM: below this the file is in metres
HUGE_EXTENT_MM = 5000.0          # a part larger than 5 m: probably declared in the wrong unit
HUGE_FACES = 1_000_000           # slower loading, refinement and anomaly sampling
WELD_REL = 1e-7                  # welding tolerance x the largest extent
DEGENERATE_REL = 1e-12           # a face with area <= this x extent^2 is degenerate
STEP_TOL_MM = 0.01               # OpenCASCADE linear deflection of STEP tessellation (cascadio default, mm)
CONVERTER_VERSION = 1            # bump when the conversion's output changes: old cache entries are not reused
CACHE_ENV = "POLAR_MESH_CACHE"


class MeshError(ValueError):
    """A mesh cannot be used; the message names the file (callers prefix the scene and key)."""


class MeshWarning(UserWarning):
    """A mesh is usable but suspicious (its message names the scene file and the part)."""


def supported() -> str:
    return ", ".join(sorted(FORMATS))


def mesh_format(path: Path) -> str:
    """Format name of a mesh file from its suffix; MeshError for others."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise MeshError(f"{path}: unsupported mesh format {Path(path).suffix or '(no suffix)'!r}; "
                        f"supported: {supported()}")
    return fmt


def cache_dir() -> Path:
    """Directory of canonical PLYs (``POLAR_MESH_CACHE``, else the user cache directory)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return (Path(base) / "polar_render" / "meshes").absolute()


# ----------------------------------------------------------------------------- reading

@dataclass
class RawMesh:
    """A mesh as read from a file, in the file's units. ``normals`` and ``uv`` are per vertex
    (or None when the file has none); ``groups`` maps a face group name to a bool (F,) mask."""
    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    uv: np.ndarray | None = None
    groups: dict = field(default_factory=dict)


def _has_normals(mesh) -> bool:
    """True when the loader stored per-vertex normals from the file (trimesh keeps them in
    its cache; otherwise it would compute them on first access). Checked on the loader's
    own mesh, before any copy or transform."""
    return "vertex_normals" in mesh._cache


def _uv(mesh):
    uv = getattr(getattr(mesh, "visual", None), "uv", None)
    return None if uv is None or len(uv) != len(mesh.vertices) else np.asarray(uv, np.float64)


def _piece(name, mesh, transform=None) -> tuple:
    """(name, vertices, faces, normals or None, uv or None) of a loaded trimesh mesh, moved
    by a 4x4 ``transform`` (normals by its inverse transpose; a mirroring transform also
    reverses the winding, so that faces keep facing outwards)."""
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    n = np.asarray(mesh.vertex_normals, np.float64) if _has_normals(mesh) else None
    if transform is not None:
        T = np.asarray(transform, np.float64)
        v = v @ T[:3, :3].T + T[:3, 3]
        if n is not None:
            n = n @ np.linalg.inv(T[:3, :3])
            n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)
        if np.linalg.det(T[:3, :3]) < 0:
            f = f[:, ::-1]
    return name, v, f, n, _uv(mesh)


def _concat(pieces: list) -> RawMesh:
    """One RawMesh from ``_piece`` tuples; each named piece is a face group (a single group
    holding every face is dropped: it restricts nothing). Normals/UVs are kept only when
    every piece has them."""
    if not pieces:
        return RawMesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    vs, fs, ns, uvs, off = [], [], [], [], 0
    for _, v, f, n, uv in pieces:
        vs.append(v)
        fs.append(f + off)
        ns.append(n)
        uvs.append(uv)
        off += len(v)
    faces = np.concatenate(fs)
    groups, start = {}, 0
    for (name, _, f, _, _) in pieces:
        if name:
            mask = groups.setdefault(str(name), np.zeros(len(faces), bool))
            mask[start:start + len(f)] = True
        start += len(f)
    if len(groups) == 1 and next(iter(groups.values())).all():
        groups = {}
    return RawMesh(np.concatenate(vs), faces,
                   np.concatenate(ns) if all(n is not None for n in ns) else None,
                   np.concatenate(uvs) if all(u is not None for u in uvs) else None, groups)


def _scene_pieces(scene) -> list:
    """``_piece`` tuples of every triangle mesh of a trimesh Scene, in its root frame, named
    by their node."""
    import trimesh

    out = []
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        geom = scene.geometry.get(geom_name)
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            out.append(_piece(node, geom, transform))
    return out


def _read_ply(path: Path, data: bytes) -> RawMesh:
    import io as _stdio

    import trimesh

    mesh = trimesh.load(_stdio.BytesIO(data), file_type="ply", process=False)   # force= would drop the normals
    if not isinstance(mesh, trimesh.Trimesh):
        raise MeshError(f"{path}: no triangle mesh in the file")
    raw = RawMesh(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64),
                  np.asarray(mesh.vertex_normals, np.float64) if _has_normals(mesh) else None, _uv(mesh))
    face = ((mesh.metadata.get("_ply_raw") or {}).get("face") or {}).get("data")
    names = face.dtype.names if isinstance(face, np.ndarray) else (tuple(face) if isinstance(face, dict) else ())
    if "group" in (names or ()) and len(raw.faces):
        g = np.asarray(face["group"]).reshape(-1)
        if len(g) != len(raw.faces):   # quads were triangulated: groups per polygon do not map
            raise MeshError(f"{path}: face property 'group' is given per polygon but the mesh has "
                            f"non-triangle faces; write triangles to use face groups")
        raw.groups = {str(int(k)): g == k for k in np.unique(g)}
    return raw


def _read_scene_file(path: Path, data: bytes, fmt: str) -> RawMesh:
    import io as _stdio

    import trimesh

    kw = {"split_groups": True, "split_objects": True, "group_material": False} if fmt == "obj" else {}
    if fmt == "gltf":   # external buffers and images are resolved next to the file, and must stay there
        _check_gltf_uris(path, data)
        scene = trimesh.load_scene(str(path), file_type=fmt, process=False)
    else:
        scene = trimesh.load_scene(_stdio.BytesIO(data), file_type=fmt, process=False, **kw)
    return _concat(_scene_pieces(scene))


def _check_gltf_uris(path: Path, data: bytes) -> None:
    """Every file a .gltf names (``buffers[i].uri``, ``images[i].uri``; ``data:`` URIs aside)
    resolves inside the .gltf's folder (``polar_render.paths.contained``)."""
    from polar_render.paths import UnsafePathError, contained

    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise MeshError(f"{path}: cannot read mesh (not a glTF JSON file?): {exc}") from None
    for key in ("buffers", "images"):
        for i, item in enumerate(doc.get(key) or [] if isinstance(doc, dict) else []):
            uri = item.get("uri") if isinstance(item, dict) else None
            if isinstance(uri, str) and not uri.startswith("data:"):
                try:
                    contained(path.parent, uri, source=path, key=f"{key}.{i}.uri")
                except UnsafePathError as exc:
                    raise MeshError(str(exc)) from None


def _read_stl(path: Path, data: bytes) -> RawMesh:
    import io as _stdio
    import struct

    import trimesh

    if len(data) >= 84 and not data[:5].lower().startswith(b"solid"):   # binary: 80-byte header, count, 50 B/facet
        n = struct.unpack("<I", data[80:84])[0]
        if len(data) < 84 + 50 * n:
            raise MeshError(f"{path}: truncated binary STL: its header declares {n} facets "
                            f"({84 + 50 * n} bytes), the file has {len(data)} bytes")

    mesh = trimesh.load(_stdio.BytesIO(data), file_type="stl", force="mesh", process=False)
    return RawMesh(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64))


def _read_step(path: Path, data: bytes) -> RawMesh:
    try:
        import cascadio
    except ImportError:   # pragma: no cover - cascadio is a dependency of polar-render
        raise MeshError(f"{path}: reading STEP needs the 'cascadio' package (pip install cascadio)") from None
    import io as _stdio

    import trimesh

    glb = cascadio.load(data, file_type="step", tol_linear=STEP_TOL_MM, use_parallel=False)
    if not glb:
        raise MeshError(f"{path}: OpenCASCADE could not read the STEP file")
    scene = trimesh.load_scene(_stdio.BytesIO(glb), file_type="glb", process=False)
    return _concat(_scene_pieces(scene))


READERS = {"ply": _read_ply, "stl": _read_stl, "obj": lambda p, d: _read_scene_file(p, d, "obj"),
           "glb": lambda p, d: _read_scene_file(p, d, "glb"), "gltf": lambda p, d: _read_scene_file(p, d, "gltf"),
           "step": _read_step}


def read_mesh(path: Path, data: bytes | None = None, where: str = "") -> RawMesh:
    """Read a mesh file (format by suffix), checked for emptiness, finite vertices and valid
    face indices; MeshError naming the file otherwise. Units as stored (STEP: metres)."""
    from polar_render.limits import check_face_count

    path = Path(path)
    fmt = mesh_format(path)
    data = path.read_bytes() if data is None else data
    try:
        raw = READERS[fmt](path, data)
    except MeshError:
        raise
    except Exception as exc:   # trimesh and its parsers raise many types for damaged files
        raise MeshError(f"{path}: cannot read mesh (truncated or not a {fmt.upper()} file?): "
                        f"{type(exc).__name__}: {exc}") from None
    if len(raw.vertices) == 0 or len(raw.faces) == 0:
        raise MeshError(f"{path}: mesh is empty (no vertices or faces)")
    check_face_count(len(raw.faces), path, where=where)
    if raw.faces.min() < 0 or raw.faces.max() >= len(raw.vertices):
        raise MeshError(f"{path}: face vertex indices outside 0..{len(raw.vertices) - 1}")
    if not np.all(np.isfinite(raw.vertices)):
        raise MeshError(f"{path}: mesh has non-finite vertices")
    return raw


# ----------------------------------------------------------------------------- geometry

def _face_normals(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit face normals (zero for degenerate faces), face areas)."""
    c = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n2 = np.linalg.norm(c, axis=1)
    return c / np.maximum(n2, 1e-300)[:, None], 0.5 * n2


def weld(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(welded vertices, faces on them): vertices closer than ``WELD_REL`` x the largest
    extent (on a grid of that size) become one; face order is kept."""
    ext = float(np.max(v.max(0) - v.min(0))) if len(v) else 0.0
    tol = max(ext * WELD_REL, 1e-12)
    _, first, inv = np.unique(np.round(v / tol).astype(np.int64), axis=0, return_index=True, return_inverse=True)
    return v[first], inv.reshape(-1)[f]


def _adjacency(f: np.ndarray):
    """(face pairs (E, 2), their shared vertices (E, 2), edges with one face (count)) of a
    welded mesh; edges shared by more than two faces join nothing (non-manifold)."""
    edges = np.sort(np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 1).reshape(-1, 2), axis=1)
    face_of = np.repeat(np.arange(len(f)), 3)
    uniq, inv, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    two = np.flatnonzero(counts[inv] == 2)
    order = two[np.argsort(inv[two], kind="stable")]
    pairs = face_of[order].reshape(-1, 2)
    shared = edges[order[::2]]
    return pairs, shared, int((counts == 1).sum())


MAX_SEAM_EDGES = 20_000   # open edges checked for T-junctions; beyond, every open edge counts


def open_edges(v: np.ndarray, f: np.ndarray) -> int:
    """Open edges (one face) of a mesh after welding, not counting T-junction seams: an open
    edge whose midpoint lies on another open edge (a long edge facing a row of short ones, a
    gap of zero width, e.g. a flat bottom of two triangles under finely split sides)."""
    vw, fw = weld(v, f)
    edges = np.sort(np.stack([fw[:, [0, 1]], fw[:, [1, 2]], fw[:, [2, 0]]], 1).reshape(-1, 2), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    e = uniq[counts == 1]
    if len(e) == 0 or len(e) > MAX_SEAM_EDGES:
        return int(len(e))
    a, b = vw[e[:, 0]], vw[e[:, 1]]
    mid, ab = (a + b) / 2, b - a
    tol = max(float(np.max(vw.max(0) - vw.min(0))) * 1e-6, 1e-9)
    covered = np.zeros(len(e), bool)
    for s0 in range(0, len(e), 256):
        p = mid[s0:s0 + 256, None, :]
        t = np.clip(np.einsum("pkj,kj->pk", p - a[None], ab) / np.maximum(np.einsum("kj,kj->k", ab, ab), 1e-300), 0, 1)
        d = np.linalg.norm(p - (a[None] + t[..., None] * ab[None]), axis=2)
        d[np.arange(d.shape[0]), np.arange(s0, s0 + d.shape[0])] = np.inf   # not itself
        covered[s0:s0 + 256] = (d <= tol).any(1)
    return int((~covered).sum())


def crease_normals(v: np.ndarray, f: np.ndarray, crease_deg: float, uv: np.ndarray | None = None):
    """Split vertices along creases and compute per-corner normals (module docstring).

    ``v`` (V, 3) and ``f`` (F, 3) in mm (any vertex sharing is fine: positions are welded
    first), ``uv`` (V, 2) or None. Returns (vertices, faces, unit normals, uv or None):
    one output vertex per (welded position, smoothing group, uv); faces keep their order."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    vw, fw = weld(v, f)
    fn, _ = _face_normals(vw, fw)
    pairs, shared, _ = _adjacency(fw)
    cos = np.einsum("ij,ij->i", fn[pairs[:, 0]], fn[pairs[:, 1]])
    smooth = cos > np.cos(np.radians(crease_deg)) if crease_deg > 0 else np.zeros(len(pairs), bool)
    pairs, shared = pairs[smooth], shared[smooth]
    F = len(f)
    rows, cols = [], []
    for k in range(2):
        e = shared[:, k]
        rows.append(pairs[:, 0] * 3 + np.argmax(fw[pairs[:, 0]] == e[:, None], axis=1))
        cols.append(pairs[:, 1] * 3 + np.argmax(fw[pairs[:, 1]] == e[:, None], axis=1))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    g = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(3 * F, 3 * F))
    _, label = connected_components(g, directed=False)
    if uv is not None:   # a uv seam splits a smoothing group too
        key = np.column_stack([label, uv[f.reshape(-1)]])
        _, label = np.unique(key, axis=0, return_inverse=True)
        label = label.reshape(-1)
    # number groups in order of first appearance: deterministic output
    _, first, inv = np.unique(label, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    label = rank[inv.reshape(-1)]
    G = len(first)
    corner_v = fw.reshape(-1)
    pos = np.zeros((G, 3))
    pos[label] = vw[corner_v]
    tri = vw[fw]
    angles = np.zeros((F, 3))
    for k in range(3):
        a, b = tri[:, (k + 1) % 3] - tri[:, k], tri[:, (k + 2) % 3] - tri[:, k]
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        angles[:, k] = np.arccos(np.clip(np.einsum("ij,ij->i", a, b) / np.maximum(den, 1e-300), -1.0, 1.0))
    nrm = np.zeros((G, 3))
    np.add.at(nrm, label, (fn[:, None, :] * angles[:, :, None]).reshape(-1, 3))
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-300)   # callers drop degenerate faces first
    out_uv = None
    if uv is not None:
        out_uv = np.zeros((G, 2))
        out_uv[label] = uv[f.reshape(-1)]
    return pos, label.reshape(F, 3), nrm, out_uv


def _components(f: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(f), len(f)))
    return connected_components(g, directed=False)[1]


def orient(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Faces wound consistently and closed shells outwards: (faces, faces flipped to agree
    with their neighbours, closed shells turned outwards). Works on the welded mesh; the
    returned faces index ``v`` like the input."""
    import trimesh

    vw, fw = weld(v, f)
    m = trimesh.Trimesh(vw, fw, process=False)
    flipped_winding = 0
    if not m.is_winding_consistent:
        trimesh.repair.fix_winding(m)
        new = np.asarray(m.faces)
        flip = ~np.all(new == fw, axis=1)
        flipped_winding = int(flip.sum())
        f = f.copy()
        f[flip] = f[flip][:, ::-1]
        fw = new
    pairs, _, _ = _adjacency(fw)
    comp = _components(fw, pairs)
    # closed shells: components none of whose edges is open
    edges = np.sort(np.stack([fw[:, [0, 1]], fw[:, [1, 2]], fw[:, [2, 0]]], 1).reshape(-1, 2), axis=1)
    _, inv, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    open_face = (counts[inv.reshape(-1)] != 2).reshape(-1, 3).any(1)
    n_comp = comp.max() + 1
    closed = np.bincount(comp, weights=open_face, minlength=n_comp) == 0
    tri = vw[fw]
    vol = np.bincount(comp, weights=np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0,
                      minlength=n_comp)
    inward = closed & (vol < 0)
    if inward.any():
        flip = inward[comp]
        f = f.copy()
        f[flip] = f[flip][:, ::-1]
    return f, flipped_winding, int(inward.sum())


# ----------------------------------------------------------------------------- preparation

@dataclass(frozen=True)
class MeshOptions:
    """How a part's mesh file becomes the renderer's mesh (scene keys of the part)."""
    unit: str | None = None            # None: the format's default (DEFAULT_UNIT; STEP: its own)
    normals: str = "crease"
    crease_angle_deg: float = DEFAULT_CREASE_DEG

    def key(self) -> str:
        return json.dumps([self.unit, self.normals, float(self.crease_angle_deg)])


@dataclass
class Prepared:
    """The outcome of :func:`prepare`: the PLY the renderer reads (``path``: the source
    itself or a cache entry), and the report (sizes, face groups, warnings)."""
    path: Path
    source: Path
    faces: int
    extent_mm: list
    groups: list
    warnings: list
    open_edges: int       # edges with one face (0: every shell of the part is closed)


def _cache_key(data: bytes, fmt: str, opts: MeshOptions) -> str:
    h = hashlib.sha256()
    h.update(f"polar_render.meshes/{CONVERTER_VERSION}/{fmt}/{opts.key()}/".encode())
    h.update(data)
    return h.hexdigest()[:24]


def _stem(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem)[:40] or "mesh"


def _runs(mask: np.ndarray) -> list:
    """[[start, stop), ...] index ranges where ``mask`` is True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(d == 1), np.flatnonzero(d == -1)], 1).tolist()


def _from_runs(runs, n: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    for a, b in runs:
        mask[a:b] = True
    return mask


def ply_bytes(v: np.ndarray, f: np.ndarray, n: np.ndarray | None, uv: np.ndarray | None) -> bytes:
    """Binary little-endian PLY: float32 x y z [nx ny nz] [u v], uchar-int triangle lists."""
    props = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    cols = [v]
    if n is not None:
        props += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        cols.append(n)
    if uv is not None:
        props += [("u", "<f4"), ("v", "<f4")]
        cols.append(uv)
    vert = np.zeros(len(v), dtype=props)
    flat = np.concatenate(cols, axis=1)
    for k, (name, _) in enumerate(props):
        vert[name] = flat[:, k]
    face = np.zeros(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"] = 3
    face["i"] = f
    header = ["ply", "format binary_little_endian 1.0", "comment polar_render canonical mesh (mm)",
              f"element vertex {len(v)}", *[f"property float {p}" for p, _ in props],
              f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    return ("\n".join(header) + "\n").encode() + vert.tobytes() + face.tobytes()


def _convert(path: Path, data: bytes, fmt: str, opts: MeshOptions, where: str = ""):
    """(vertices mm, faces, normals, uv, groups, warnings, open edges, passthrough)."""
    raw = read_mesh(path, data, where)
    unit = opts.unit or DEFAULT_UNIT.get(fmt, "m")   # STEP: cascadio returns metres
    v = raw.vertices * UNITS_MM[unit]
    ext = float(np.max(v.max(0) - v.min(0)))
    if ext < MIN_EXTENT_MM:
        hint = ("the STEP file's unit is used as declared" if fmt == "step" else
                f"set the part's unit (mm, cm, m, in; now {unit!r}), e.g. `unit: m` for a file in metres")
        raise MeshError(f"{path}: max extent {ext:g} mm < {MIN_EXTENT_MM:g} mm: model looks like metres; the "
                        f"scene's meshes must end up in millimetres: {hint}")
    notes = []
    if ext > HUGE_EXTENT_MM:
        notes.append(f"largest extent {ext / 1000:.1f} m: is unit {unit!r} right?")
    f, n, uv, groups = raw.faces, raw.normals, raw.uv, raw.groups
    if len(f) > HUGE_FACES:
        notes.append(f"{len(f):,} faces (> {HUGE_FACES:,}): loading, mesh refinement and anomaly sampling are slow; "
                     f"decimate the export if possible")
    fn, area = _face_normals(v, f)
    degenerate = (area <= DEGENERATE_REL * ext * ext) | (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    if degenerate.all():
        raise MeshError(f"{path}: every face has zero area (nothing to render)")
    if degenerate.any():
        notes.append(f"{int(degenerate.sum())} degenerate (zero-area) faces dropped")
        f = f[~degenerate]
        groups = {k: m[~degenerate] for k, m in groups.items()}
    f2, flipped, inward = orient(v, f)
    if flipped:
        notes.append(f"{flipped} faces were wound against their neighbours: flipped to agree")
    if inward:
        notes.append(f"{inward} closed shell(s) wound inwards (negative volume): flipped so that normals "
                     f"point outwards")
    f = f2
    n_open = open_edges(v, f)   # reported per object (check_closed): parts may close each other
    passthrough = fmt == "ply" and unit == "mm" and opts.normals == "file" and not groups and \
        not (degenerate.any() or flipped or inward)
    if opts.normals == "file":
        if n is None:
            what = "STL stores none" if fmt == "stl" else "the file has none"
            raise MeshError(f"{path}: normals: file needs vertex normals, but {what}; use normals: crease")
        fn, _ = _face_normals(v, f)
        against = float(np.mean(np.einsum("ij,ij->i", n[f].reshape(-1, 3), np.repeat(fn, 3, axis=0)) < 0))
        if against > 0.5:
            notes.append(f"{against:.0%} of the file's vertex normals point against their faces (inverted); "
                         f"use normals: crease")
        out_v, out_f, out_n, out_uv = v, f, n, uv
    else:
        out_v, out_f, out_n, out_uv = crease_normals(v, f, float(opts.crease_angle_deg), uv)
    return out_v, out_f, out_n, out_uv, groups, notes, n_open, passthrough


_PREPARED: dict = {}   # (path, mtime_ns, size, options, face limit, cache dir) -> Prepared (this process)


def prepare(path: str | os.PathLike, opts: MeshOptions = MeshOptions(), *, where: str = "") -> Prepared:
    """Read, check and (if needed) convert one part mesh; returns its :class:`Prepared`.

    ``where`` (``<scene file>: objects.<id>.parts.<part>``) prefixes every warning, which is
    issued as a :class:`MeshWarning` once per process and file version. Raises MeshError
    (or ``limits.InputTooLargeError``) naming the file."""
    from polar_render.limits import check_mesh_file, max_mesh_faces

    path = Path(path)
    fmt = mesh_format(path)
    if fmt == "step" and opts.unit is not None:
        raise MeshError(f"{path}: a STEP file declares its own unit (applied when it is read): leave out unit")
    st = path.stat()
    memo = (str(path), st.st_mtime_ns, st.st_size, opts, max_mesh_faces(), str(cache_dir()))
    if memo in _PREPARED:
        return _PREPARED[memo]
    check_mesh_file(path, where=where)   # face count from the header, before reading it all
    data = path.read_bytes()
    key = _cache_key(data, fmt, opts)
    cdir = cache_dir()
    ply, report_path = cdir / f"{_stem(path)}-{key}.ply", cdir / f"{_stem(path)}-{key}.json"
    report = _read_report(report_path)
    if report is None or (not report["passthrough"] and not ply.is_file()):
        v, f, n, uv, groups, notes, n_open, passthrough = _convert(path, data, fmt, opts, where)
        report = {"source": path.name, "format": fmt, "options": json.loads(opts.key()), "faces": int(len(f)),
                  "extent_mm": [float(x) for x in v.max(0) - v.min(0)], "open_edges": int(n_open),
                  "warnings": notes, "passthrough": bool(passthrough),
                  "groups": {k: _runs(m) for k, m in groups.items()}}
        _write_cache(report_path, report, None if passthrough else (ply, ply_bytes(v, f, n, uv)))
    out = Prepared(path if report["passthrough"] else ply, path, int(report["faces"]), report["extent_mm"],
                   sorted(report["groups"]), list(report["warnings"]), int(report["open_edges"]))
    for note in out.warnings:
        warnings.warn(MeshWarning(f"{where}: {note}" if where else f"{path}: {note}"), stacklevel=2)
    _PREPARED[memo] = out
    return out


def _read_report(path: Path) -> dict | None:
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and {"passthrough", "groups", "warnings", "faces", "open_edges"} <= set(report) \
        else None


def _write_cache(report_path: Path, report: dict, ply) -> None:
    """Write the report, then the PLY (atomically, last: its presence marks a complete
    entry). A report-only entry (the source is used in place) that cannot be written is
    skipped; a conversion that cannot be stored is an error naming POLAR_MESH_CACHE."""
    from polar_render import io

    try:
        io.write_json(report_path, report)
        if ply is not None:
            io.write_bytes(ply[0], ply[1])
    except OSError as exc:
        if ply is None:
            return
        raise MeshError(f"cannot write the converted mesh to {ply[0].parent} ({exc.strerror or exc}); "
                        f"set {CACHE_ENV} to a writable directory") from None


def face_groups(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Face group name -> bool (F,) mask of a canonical PLY written by :func:`prepare` (read
    from its report); {} for any other file (a source PLY used in place has no groups)."""
    path = Path(path)
    report = _read_report(path.with_suffix(".json")) if path.suffix == ".ply" and path.parent == cache_dir() else None
    if report is None:
        return {}
    return {k: _from_runs(r, int(report["faces"])) for k, r in report["groups"].items()}


def face_normals(path: str | os.PathLike) -> np.ndarray:
    """(F, 3) unit face normals (zero for degenerate faces) of a PLY, in its file order."""
    import trimesh

    m = trimesh.load(str(path), file_type="ply", process=False, force="mesh")
    return _face_normals(np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64))[0]


_CLOSED: dict = {}   # tuple of PLY paths -> open edges of their union (this process)


def check_closed(parts: list, where: str) -> int:
    """Warn (:class:`MeshWarning`) when an object is not watertight: the union of its parts'
    meshes (``parts``: [(part name, Prepared)]; parts may close each other, like a plate's top
    face and its body) has open edges. Returns their number."""
    import trimesh

    if all(p.open_edges == 0 for _, p in parts):
        return 0
    key = tuple(str(p.path) for _, p in parts)
    if key not in _CLOSED:
        vs, fs, off = [], [], 0
        for _, p in parts:
            m = trimesh.load(str(p.path), file_type="ply", process=False)
            vs.append(np.asarray(m.vertices, np.float64))
            fs.append(np.asarray(m.faces, np.int64) + off)
            off += len(m.vertices)
        _CLOSED[key] = open_edges(np.concatenate(vs), np.concatenate(fs))
        if _CLOSED[key]:
            open_parts = ", ".join(name for name, p in parts if p.open_edges)
            warnings.warn(MeshWarning(
                f"{where}: not watertight: {_CLOSED[key]} open edges (part(s) {open_parts}: holes or unwelded "
                f"seams); the inside can show through them and through chipped corners"), stacklevel=2)
    return _CLOSED[key]
