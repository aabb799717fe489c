"""Procedural model of the Sequential-PatchCore aluminium plate (all lengths in millimetres).

A flat, uncoated aluminium plate, 120 (x) x 100 (y) x 2 (z) mm, as two parts in ONE
common model frame:

* origin at the centre of the plate's bounding box, +z up (the inspected face),
  +x along the long side (the brushing direction), +y across (right-handed);
* ``plate_top``: the top face z = +1 only, a regular grid with no edge longer than
  ``MAX_EDGE_MM`` (1 mm, diagonals included). Water stains interpolate Perlin noise per
  vertex and dents/bumps displace vertices, so this face must be finely tessellated;
* ``plate_body``: the four sides and the bottom face. The sides are tessellated with the
  top face's spacing along their top edge (no T-junction gaps when a dent near the edge
  moves top-face vertices), the bottom is two triangles. Anomalies name only
  ``plate_top``: an area-weighted dent on the (invisible) bottom face would be wasted.

Normals: flat per face (vertices split at the 90 degree edges).
UVs: ``u = (x + 60) / 120``, ``v = (y + 50) / 100`` on every vertex, so Mitsuba's shading
tangent ``dp/du`` is +x on the top face: a ``brushed_conductor`` material's ``alpha_u`` is
the GGX roughness along +x (the brushing direction), ``alpha_v`` across it.

Regenerate the PLY assets with::

    python -m polar_render.parts.aluminum_plate assets/aluminum_plate
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import trimesh

__all__ = ["PLATE_SIZE_MM", "MAX_EDGE_MM", "PART_NAMES", "build_plate", "write_assets", "main"]

PLATE_SIZE_MM = (120.0, 100.0, 2.0)
MAX_EDGE_MM = 1.0
PART_NAMES = ("plate_top", "plate_body")


def _grid_steps(max_edge: float = MAX_EDGE_MM) -> tuple[int, int]:
    """Segments along x and y so that the quad diagonal (the longest edge) is <= max_edge."""
    lx, ly, _ = PLATE_SIZE_MM
    s = max_edge / np.sqrt(2.0) * (1.0 - 1e-6)
    return int(np.ceil(lx / s)), int(np.ceil(ly / s))


def _uv(v: np.ndarray) -> np.ndarray:
    lx, ly, _ = PLATE_SIZE_MM
    return np.stack([(v[:, 0] + lx / 2) / lx, (v[:, 1] + ly / 2) / ly], 1)


def _grid(a: np.ndarray, b: np.ndarray):
    """Vertices (len(a)*len(b), 2) and counter-clockwise (in the a-b plane) triangles."""
    A, B = np.meshgrid(a, b, indexing="ij")
    nb = len(b)
    i, j = np.meshgrid(np.arange(len(a) - 1), np.arange(nb - 1), indexing="ij")
    v00, v10, v11, v01 = i * nb + j, (i + 1) * nb + j, (i + 1) * nb + j + 1, i * nb + j + 1
    f = np.concatenate([np.stack([v00, v10, v11], -1).reshape(-1, 3), np.stack([v00, v11, v01], -1).reshape(-1, 3)])
    return np.stack([A.ravel(), B.ravel()], 1), f


def _mesh(v, f, normal) -> trimesh.Trimesh:
    m = trimesh.Trimesh(v, f, process=False)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    if np.any(fn @ np.asarray(normal, float) <= 0):
        m.faces = f[:, ::-1]
    m.vertex_normals = np.tile(np.asarray(normal, float), (len(v), 1))
    return m


def build_plate(max_edge: float = MAX_EDGE_MM) -> dict[str, trimesh.Trimesh]:
    """{part name: mesh} in the common model frame (mm), with vertex normals and UVs."""
    lx, ly, lz = PLATE_SIZE_MM
    nx, ny = _grid_steps(max_edge)
    xs, ys = np.linspace(-lx / 2, lx / 2, nx + 1), np.linspace(-ly / 2, ly / 2, ny + 1)
    zs = np.linspace(-lz / 2, lz / 2, max(1, int(np.ceil(lz / (max_edge / np.sqrt(2))))) + 1)
    ab, f = _grid(xs, ys)
    top = _mesh(np.column_stack([ab, np.full(len(ab), lz / 2)]), f, (0, 0, 1))
    pieces = []
    for sign in (-1.0, 1.0):   # sides y = +-ly/2 (grid over x, z) and x = +-lx/2 (grid over y, z)
        ab, f = _grid(xs, zs)
        pieces.append(_mesh(np.column_stack([ab[:, 0], np.full(len(ab), sign * ly / 2), ab[:, 1]]), f, (0, sign, 0)))
        ab, f = _grid(ys, zs)
        pieces.append(_mesh(np.column_stack([np.full(len(ab), sign * lx / 2), ab[:, 0], ab[:, 1]]), f, (sign, 0, 0)))
    ab, f = _grid(np.array([-lx / 2, lx / 2]), np.array([-ly / 2, ly / 2]))
    pieces.append(_mesh(np.column_stack([ab, np.full(len(ab), -lz / 2)]), f, (0, 0, -1)))
    v = np.concatenate([p.vertices for p in pieces])
    n = np.concatenate([p.vertex_normals for p in pieces])
    off = np.cumsum([0] + [len(p.vertices) for p in pieces[:-1]])
    f = np.concatenate([p.faces + o for p, o in zip(pieces, off)])
    body = trimesh.Trimesh(v, f, process=False)
    body.vertex_normals = n
    parts = {"plate_top": top, "plate_body": body}
    for m in parts.values():
        m.visual = trimesh.visual.TextureVisuals(uv=_uv(np.asarray(m.vertices)))
    return parts


def _write_ply(path: Path, m: trimesh.Trimesh) -> None:
    """Binary PLY: x y z nx ny nz u v (float32), triangle list (uint8 count, int32 indices)."""
    v = np.asarray(m.vertices, np.float32)
    n = np.asarray(m.vertex_normals, np.float32)
    uv = np.asarray(m.visual.uv, np.float32)
    f = np.asarray(m.faces, np.int32)
    header = ("ply\nformat binary_little_endian 1.0\ncomment polar_render.parts.aluminum_plate, units: mm\n"
              f"element vertex {len(v)}\n" + "".join(f"property float {k}\n" for k in ("x", "y", "z", "nx", "ny", "nz", "u", "v"))
              + f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    vert = np.concatenate([v, n, uv], 1).astype("<f4")
    face = np.zeros(len(f), dtype=[("n", "u1"), ("i", "<i4", 3)])
    face["n"], face["i"] = 3, f
    with open(path, "wb") as fh:
        fh.write(header.encode())
        fh.write(vert.tobytes())
        fh.write(face.tobytes())


def write_assets(out_dir: str | Path, max_edge: float = MAX_EDGE_MM) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, m in build_plate(max_edge).items():
        paths[name] = out / f"{name}.ply"
        _write_ply(paths[name], m)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", nargs="?", default="assets/aluminum_plate")
    ap.add_argument("--max-edge-mm", type=float, default=MAX_EDGE_MM)
    a = ap.parse_args(argv)
    for name, p in write_assets(a.out_dir, a.max_edge_mm).items():
        m = trimesh.load(p, process=False)
        print(f"{p}: {len(m.vertices)} vertices, {len(m.faces)} triangles, {p.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
