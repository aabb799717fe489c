"""Procedural model of the Polar-Ano "USB brick" (all lengths in millimetres).

A USB stick shaped like two stacked 2x4 plastic construction bricks with a
metal USB-A plug sticking out of one short end.  Three parts, each its own
closed triangle mesh, all in ONE common model frame:

* origin at the centre of the axis-aligned bounding box of the whole object,
* +z up (the stud direction), +x along the long side of the bricks, plug at +x,
  +y completes a right-handed frame (width direction).

Dimensions (LEGO-like):

* each brick 31.8 (x) x 15.8 (y) x 9.6 (z), edges rounded with r = 0.3;
  ``brick_bottom`` z in [0, 9.6], ``brick_top`` z in [9.6, 19.2] before centring
  (the two coincide on their contact face, the rounded edges form a seam groove);
* 2x4 studs on ``brick_top``: d = 4.8, h = 1.7, pitch 8.0, 0.15 mm top bevel;
* ``plug``: USB-A shell 12.0 (y) x 4.5 (z), sticking 12.0 out of the +x end
  (embedded 1.0 into the bricks, so 13.0 long in total), centred on the brick
  seam; 0.3 shell wall, 1.95 high x 11.4 wide x 8.0 deep opening above a
  1.95 thick tongue, two 2.0 x 1.5 latch windows in the top wall and two
  0.3 deep dimples in the bottom wall.

Whole object bounding box: 43.8 x 15.8 x 20.9 mm.

Tessellation: no edge longer than ``MAX_EDGE_MM`` (0.8 mm), for later vertex
displacement (dents, scratches).  Normals: vertices are split along creases
sharper than ``CREASE_DEG`` (30 deg), so flat faces stay flat and the stud
cylinders and rounded brick edges shade smoothly; brick-surface normals are
analytic (exact rounded-box normals).  Because of the split vertices, a part
is watertight after welding coincident vertices (``weld``), and a displacement
applied to the vertices must be a function of position to keep it closed.

Regenerate the PLY assets with::

    python -m polar_render.parts.usb_brick assets/usb_brick
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["BRICK_SIZE_MM", "STUD_DIAMETER_MM", "STUD_HEIGHT_MM", "STUD_PITCH_MM", "PLUG_SIZE_MM",
           "MAX_EDGE_MM", "CREASE_DEG", "PART_NAMES", "build_usb_brick", "combined_mesh", "weld",
           "write_assets", "main"]

BRICK_SIZE_MM = (31.8, 15.8, 9.6)
EDGE_RADIUS_MM = 0.3
STUD_DIAMETER_MM = 4.8
STUD_HEIGHT_MM = 1.7
STUD_BEVEL_MM = 0.15
STUD_PITCH_MM = 8.0
PLUG_SIZE_MM = (12.0, 12.0, 4.5)   # protrusion (x), width (y), height (z)
PLUG_EMBED_MM = 1.0
PLUG_WALL_MM = 0.3
TONGUE_MM = 1.95
SLOT_DEPTH_MM = 8.0
MAX_EDGE_MM = 0.8
CREASE_DEG = 30.0
PART_NAMES = ("brick_top", "brick_bottom", "plug")

_GRID_STEP = 0.55          # base grid spacing: quad diagonal < 0.8 so little subdivision is needed
_N_SEG = 48                # stud segments around the circumference (at least; multiple of 8)
_STUD_SQUARE = 3.5         # half size of the square around each stud meshed as an annulus


# ----------------------------------------------------------------------------- helpers

def _lines(breaks, step=_GRID_STEP) -> np.ndarray:
    """Sorted grid coordinates containing ``breaks``, gaps subdivided to <= step."""
    b = np.unique(np.round(np.asarray(breaks, dtype=np.float64), 9))
    out = [b[:1]]
    for a, c in zip(b[:-1], b[1:]):
        n = max(1, int(np.ceil((c - a) / step - 1e-9)))
        out.append(np.linspace(a, c, n + 1)[1:])
    return np.concatenate(out)


def _voxel_surface(X, Y, Z, occ):
    """Boundary quads of the occupied cells of a tensor grid.

    ``occ[i, j, k]`` marks cell [X[i], X[i+1]] x [Y[j], Y[j+1]] x [Z[k], Z[k+1]].
    Returns (vertices (N,3), quads (Q,4) counter-clockwise seen from outside).
    """
    X, Y, Z = (np.asarray(a, dtype=np.float64) for a in (X, Y, Z))
    ny, nz = len(Y), len(Z)

    def nid(i, j, k):
        return (i * ny + j) * nz + k

    P = np.pad(np.asarray(occ, dtype=np.int8), 1)
    quads = []
    # x faces: line i between cells i-1 and i
    D = (P[1:] - P[:-1])[:, 1:-1, 1:-1]
    for sgn in (-1, 1):                       # -1: solid behind -> normal +x
        i, j, k = np.nonzero(D == sgn)
        q = np.stack([nid(i, j, k), nid(i, j + 1, k), nid(i, j + 1, k + 1), nid(i, j, k + 1)], 1)
        quads.append(q if sgn == -1 else q[:, ::-1])
    D = (P[:, 1:] - P[:, :-1])[1:-1, :, 1:-1]
    for sgn in (-1, 1):
        i, j, k = np.nonzero(D == sgn)
        q = np.stack([nid(i, j, k), nid(i, j, k + 1), nid(i + 1, j, k + 1), nid(i + 1, j, k)], 1)
        quads.append(q if sgn == -1 else q[:, ::-1])
    D = (P[:, :, 1:] - P[:, :, :-1])[1:-1, 1:-1, :]
    for sgn in (-1, 1):
        i, j, k = np.nonzero(D == sgn)
        q = np.stack([nid(i, j, k), nid(i + 1, j, k), nid(i + 1, j + 1, k), nid(i, j + 1, k)], 1)
        quads.append(q if sgn == -1 else q[:, ::-1])
    quads = np.concatenate(quads)
    grid = np.stack(np.meshgrid(X, Y, Z, indexing="ij"), -1).reshape(-1, 3)
    return grid, quads


def _quads_to_tris(q) -> np.ndarray:
    q = np.asarray(q)
    return np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])


def _round_box(v, lo, hi, r):
    """Map points on the surface of box [lo, hi] onto the box with edges rounded by r.

    Returns (mapped points, analytic outward unit normals)."""
    q = np.clip(v, np.asarray(lo) + r, np.asarray(hi) - r)
    d = v - q
    n = np.linalg.norm(d, axis=1, keepdims=True)
    n = np.where(n > 0, n, 1.0)
    return q + r * d / n, d / n


def _assemble(parts):
    """Concatenate (vertices, faces) pieces and weld vertices coinciding to 1e-6 mm."""
    verts, faces, off = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(np.asarray(f) + off)
        off += len(v)
    v = np.concatenate(verts)
    f = np.concatenate(faces)
    key = np.rint(v * 1e6).astype(np.int64)
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    f = inv.reshape(-1)[f]
    v = v[first]
    used, f = np.unique(f, return_inverse=True)
    return v[used], f.reshape(-1, 3)


def weld(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Copy of ``mesh`` with coincident vertices merged (normals dropped): the closed solid."""
    return trimesh.Trimesh(*_assemble([(np.asarray(mesh.vertices), np.asarray(mesh.faces))]), process=False)


def _split_normals(v, f, crease_deg, analytic=None, analytic_faces=None):
    """Split vertices along creases and compute per-vertex normals.

    Corners of a vertex are grouped when their faces share an edge with a
    dihedral angle below ``crease_deg``; each group becomes one vertex whose
    normal is the angle-weighted mean of its face normals, or ``analytic(p)``
    when all of the group's faces are flagged in ``analytic_faces``.
    Returns a Trimesh with ``vertex_normals`` set.
    """
    m = trimesh.Trimesh(v, f, process=False)
    F = len(f)
    adj, edges = m.face_adjacency, m.face_adjacency_edges
    ok = m.face_adjacency_angles < np.radians(crease_deg)
    adj, edges = adj[ok], edges[ok]
    rows, cols = [], []
    for e in range(2):
        ve = edges[:, e]
        c0 = adj[:, 0] * 3 + np.argmax(f[adj[:, 0]] == ve[:, None], axis=1)
        c1 = adj[:, 1] * 3 + np.argmax(f[adj[:, 1]] == ve[:, None], axis=1)
        rows.append(c0)
        cols.append(c1)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    g = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(3 * F, 3 * F))
    _, label = connected_components(g, directed=False)
    # renumber groups in order of first appearance (deterministic output)
    _, first, inv = np.unique(label, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    label = rank[inv]
    G = len(order)
    corner_v = f.reshape(-1)
    pos = np.zeros((G, 3))
    pos[label] = v[corner_v]
    w = (m.face_normals[:, None, :] * m.face_angles[:, :, None]).reshape(-1, 3)
    nrm = np.zeros((G, 3))
    np.add.at(nrm, label, w)
    if analytic is not None:
        flag = np.repeat(np.asarray(analytic_faces, dtype=bool), 3)
        all_flag = np.ones(G, dtype=bool)
        np.logical_and.at(all_flag, label, flag)
        nrm[all_flag] = analytic(pos[all_flag])
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    out = trimesh.Trimesh(pos, label.reshape(F, 3), vertex_normals=nrm, process=False)
    return out


def _finish(v, f, analytic=None, analytic_faces=None) -> trimesh.Trimesh:
    """Check closedness, subdivide to MAX_EDGE_MM, split normals at CREASE_DEG."""
    solid = trimesh.Trimesh(v, f, process=False)
    if not (solid.is_watertight and solid.is_winding_consistent and solid.volume > 0):
        raise RuntimeError("usb_brick: internal error, part is not a closed outward-oriented surface")
    v2, f2, idx = trimesh.remesh.subdivide_to_size(v, f, max_edge=MAX_EDGE_MM * 0.98, return_index=True)
    af = None if analytic_faces is None else np.asarray(analytic_faces)[idx]
    return _split_normals(np.asarray(v2), np.asarray(f2), CREASE_DEG, analytic, af)


# ----------------------------------------------------------------------------- parts

_STUD_XS = (np.arange(4) - 1.5) * STUD_PITCH_MM   # stud centres (mm, brick frame): 4 along x ...
_STUD_YS = (np.arange(2) - 0.5) * STUD_PITCH_MM   # ... by 2 along y
_ANNULUS_RINGS = 5                                 # rings of the circle -> square blend around a stud


def _brick(z0: float, studs: bool):
    """Brick body (x, y centred, z in [z0, z0 + 9.6]), optionally with 2x4 studs."""
    L, W, H = BRICK_SIZE_MM
    r = EDGE_RADIUS_MM
    lo, hi = np.array([-L / 2, -W / 2, z0]), np.array([L / 2, W / 2, z0 + H])
    X, Y, grid, quads = _box_grid(lo, hi, r, studs)
    gv, gn = _round_box(grid, lo, hi, r)
    pieces = [(gv, _quads_to_tris(quads))]
    n_box = 2 * len(quads)
    if studs:
        annuli, stud_meshes = [], []
        prof = _stud_profile()
        for cx in _STUD_XS:
            for cy in _STUD_YS:
                circ, perim = _stud_outline(X, Y, cx, cy)
                annuli.append(_annulus(circ, perim, np.array([cx, cy]), hi[2]))
                n_box += len(annuli[-1][1])
                stud_meshes.append(_stud(circ, np.array([cx, cy]), hi[2], prof))
        pieces += annuli + stud_meshes
    # faces flagged for analytic (rounded-box) normals: the box surface incl. annuli
    v, f = _assemble(pieces)
    flags = np.zeros(len(f), bool)
    flags[:n_box] = True
    return _finish(v, f, lambda p: _round_box(p, lo, hi, r)[1], flags)


def _box_grid(lo, hi, r: float, studs: bool):
    """Grid lines X, Y and the surface (nodes, quads) of the brick's box: refined near the
    rounded edges and, with studs, through the stud squares (same angles as the stud circles),
    whose top-face quads are dropped (the annuli replace them)."""
    xb = [lo[0], lo[0] + r / 2, lo[0] + r, hi[0] - r, hi[0] - r / 2, hi[0]]
    yb = [lo[1], lo[1] + r / 2, lo[1] + r, hi[1] - r, hi[1] - r / 2, hi[1]]
    zb = [lo[2], lo[2] + r / 2, lo[2] + r, hi[2] - r, hi[2] - r / 2, hi[2]]
    theta = np.radians(np.arange(-45.0, 45.0 + 1e-9, 360.0 / _N_SEG))   # one square side
    t = np.tan(theta)
    t[0], t[-1] = -1.0, 1.0
    a = _STUD_SQUARE
    if studs:
        xb += [c + a * tt for c in _STUD_XS for tt in t]
        yb += [c + a * tt for c in _STUD_YS for tt in t]
    X, Y, Z = _lines(xb), _lines(yb), _lines(zb)
    grid, quads = _voxel_surface(X, Y, Z, np.ones((len(X) - 1, len(Y) - 1, len(Z) - 1), bool))
    if studs:
        ctr = grid[quads].mean(axis=1)
        top = np.isclose(ctr[:, 2], hi[2])
        inside = np.zeros(len(quads), bool)
        for cx in _STUD_XS:
            for cy in _STUD_YS:
                inside |= top & (np.abs(ctr[:, 0] - cx) < a) & (np.abs(ctr[:, 1] - cy) < a)
        quads = quads[~inside]
    return X, Y, grid, quads


def _stud_profile() -> list[tuple[float, float]]:
    """Stud profile (radius, height above the top face, mm): side, 45-deg bevel, cap rings."""
    R = STUD_DIAMETER_MM / 2
    hs = STUD_HEIGHT_MM - STUD_BEVEL_MM
    b = STUD_BEVEL_MM
    prof = [(R, z) for z in np.linspace(0, hs, int(np.ceil(hs / 0.45)) + 1)]
    prof += [(R - b + b * np.cos(p), hs + b * np.sin(p)) for p in np.radians([45.0, 90.0])]
    nc = int(np.ceil((R - b) / 0.45))
    prof += [(rr, STUD_HEIGHT_MM) for rr in np.linspace(R - b, 0, nc + 1)[1:-1]]
    return prof


def _stud_outline(X, Y, cx: float, cy: float):
    """(circle, square) outlines of the stud at (cx, cy), relative to its centre: the square
    perimeter through the grid nodes (counter-clockwise) and the stud circle at the same angles."""
    a = _STUD_SQUARE
    xr = X[np.abs(X - cx) <= a + 1e-9] - cx
    yr = Y[np.abs(Y - cy) <= a + 1e-9] - cy
    perim = np.concatenate([
        np.stack([np.full(len(yr) - 1, xr[-1]), yr[:-1]], 1),
        np.stack([xr[::-1][:-1], np.full(len(xr) - 1, yr[-1])], 1),
        np.stack([np.full(len(yr) - 1, xr[0]), yr[::-1][:-1]], 1),
        np.stack([xr[:-1], np.full(len(xr) - 1, yr[0])], 1)])
    ang = np.arctan2(perim[:, 1], perim[:, 0])
    return STUD_DIAMETER_MM / 2 * np.stack([np.cos(ang), np.sin(ang)], 1), perim


def _annulus(circ, perim, c, top: float):
    """Annulus on the top face around one stud: rings blending its circle into its square."""
    N = len(circ)
    k = np.arange(N)
    k1 = (k + 1) % N
    s = np.linspace(0, 1, _ANNULUS_RINGS + 1)
    ring = circ[None] + s[:, None, None] * (perim - circ)[None]
    av = np.concatenate([ring.reshape(-1, 2) + c, np.full((ring.size // 2, 1), top)], 1)
    q = [np.stack([i * N + k, (i + 1) * N + k, (i + 1) * N + k1, i * N + k1], 1) for i in range(_ANNULUS_RINGS)]
    return av, _quads_to_tris(np.concatenate(q))


def _stud(circ, c, top: float, prof):
    """One stud: surface of revolution of ``prof`` over ``circ``, closed by an apex on the axis."""
    R = STUD_DIAMETER_MM / 2
    N = len(circ)
    k = np.arange(N)
    k1 = (k + 1) % N
    sv = [np.concatenate([c + rr * (circ / R), np.full((N, 1), top + zz)], 1) for rr, zz in prof]
    sv.append(np.array([[c[0], c[1], top + STUD_HEIGHT_MM]]))
    sv = np.concatenate(sv)
    q = [np.stack([i * N + k, i * N + k1, (i + 1) * N + k1, (i + 1) * N + k], 1) for i in range(len(prof) - 1)]
    sf = _quads_to_tris(np.concatenate(q))
    last = (len(prof) - 1) * N
    return sv, np.concatenate([sf, np.stack([last + k, last + k1, np.full(N, len(sv) - 1)], 1)])


def _plug(x0: float, zc: float):
    """USB-A plug from x0 - PLUG_EMBED_MM to x0 + protrusion, centred on y = 0, z = zc."""
    Lp, Wp, Hp = PLUG_SIZE_MM
    t = PLUG_WALL_MM
    xa, xe = x0 - PLUG_EMBED_MM, x0 + Lp
    ya, ye = -Wp / 2, Wp / 2
    za, ze = zc - Hp / 2, zc + Hp / 2
    z_tongue = za + t + TONGUE_MM
    xs = xe - SLOT_DEPTH_MM
    win_x = (xe - 5.0, xe - 3.0)          # latch windows 2.0 (x) x 1.5 (y)
    win_y = [(-3.75 - 0.75, -3.75 + 0.75), (3.75 - 0.75, 3.75 + 0.75)]
    X = _lines([xa, xs, *win_x, xe])
    Y = _lines([ya, ya + t, ye - t, ye, *[w for p in win_y for w in p]])
    Z = _lines([za, za + t, z_tongue, ze - t, ze])
    cx, cy, cz = (0.5 * (A[1:] + A[:-1]) for A in (X, Y, Z))
    CX, CY, CZ = np.meshgrid(cx, cy, cz, indexing="ij")
    occ = np.ones(CX.shape, bool)
    occ &= ~((CX > xs) & (np.abs(CY) < Wp / 2 - t) & (CZ > z_tongue) & (CZ < ze - t))   # opening
    in_win = (CX > win_x[0]) & (CX < win_x[1]) & np.any(
        [(CY > w0) & (CY < w1) for w0, w1 in win_y], axis=0)
    occ &= ~(in_win & (CZ > ze - t))            # windows through the top wall
    occ &= ~(in_win & (CZ < za + t))            # dimples in the bottom wall (tongue behind)
    grid, quads = _voxel_surface(X, Y, Z, occ)
    v, f = _assemble([(grid, _quads_to_tris(quads))])
    return _finish(v, f)


def build_usb_brick() -> dict[str, trimesh.Trimesh]:
    """Build the three parts {"brick_top", "brick_bottom", "plug"} (mm, common model frame).

    Each mesh has split-vertex normals (``mesh.vertex_normals``, unit length);
    ``weld(mesh)`` is watertight.  Frame: origin at the whole object's
    bounding-box centre, +z = studs, +x = long side towards the plug.
    """
    L, W, H = BRICK_SIZE_MM
    parts = {
        "brick_top": _brick(H, studs=True),
        "brick_bottom": _brick(0.0, studs=False),
        "plug": _plug(L / 2, H),
    }
    lo = np.min([p.bounds[0] for p in parts.values()], axis=0)
    hi = np.max([p.bounds[1] for p in parts.values()], axis=0)
    shift = -(lo + hi) / 2
    out = {}
    for name in PART_NAMES:
        p = parts[name]
        out[name] = trimesh.Trimesh(p.vertices + shift, p.faces, vertex_normals=p.vertex_normals,
                                    process=False)
    return out


def combined_mesh(parts: dict[str, trimesh.Trimesh] | None = None) -> trimesh.Trimesh:
    """All parts concatenated into one mesh (mm), e.g. as the BOP model of the object."""
    parts = build_usb_brick() if parts is None else parts
    ms = [parts[n] for n in PART_NAMES]
    v = np.concatenate([m.vertices for m in ms])
    n = np.concatenate([m.vertex_normals for m in ms])
    offs = np.cumsum([0] + [len(m.vertices) for m in ms[:-1]])
    f = np.concatenate([m.faces + o for m, o in zip(ms, offs)])
    return trimesh.Trimesh(v, f, vertex_normals=n, process=False)


_README = """# USB brick model (Polar-Ano)

Procedural model of the Polar-Ano "USB brick": a USB stick shaped like two
stacked 2x4 plastic construction bricks with a metal USB-A plug at one end.
Generated by `polar_render.parts.usb_brick` -- do not edit by hand; regenerate with

    python -m polar_render.parts.usb_brick assets/usb_brick

(from the repository root, with the project virtualenv).

## Files (binary PLY, units: millimetres, per-vertex normals nx, ny, nz)

| file | part | triangles | vertices |
|---|---|---|---|
{rows}

## Frame

One common model frame for all parts: origin at the centre of the axis-aligned
bounding box of the whole object; +z up (stud direction); +x along the long side
of the bricks, towards the plug; +y across (right-handed).

## Dimensions (mm)

* each brick 31.8 (x) x 15.8 (y) x 9.6 (z), edges rounded r = 0.3;
  bottom brick below, top brick above, touching on z = -0.85 (the seam);
* 2 x 4 studs on the top brick: diameter 4.8, height 1.7, pitch 8.0, 0.15 top bevel;
* USB-A plug: 12.0 wide (y) x 4.5 high (z), protrudes 12.0 from the +x end
  (plus 1.0 embedded in the bricks), centred on the seam; 0.3 shell wall,
  1.95 x 11.4 opening 8.0 deep above a 1.95 thick tongue (tongue is part of
  `plug`), two 2.0 x 1.5 latch windows on top, two dimples below;
* whole object bounding box {bbox}.

## Mesh properties

* no edge longer than 0.8 mm (for later vertex displacement: dents, scratches);
* vertices are split along creases sharper than 30 deg, so flat faces shade flat
  and studs / rounded edges shade smoothly; each part is watertight after
  merging coincident vertices (trimesh `merge_vertices`, ignoring normals).
  Displacements must be a function of position to keep the parts closed.
"""


def write_assets(out_dir) -> list[Path]:
    """Write brick_top.ply, brick_bottom.ply, plug.ply (binary, mm, vertex normals) and
    README.md into ``out_dir``.  Returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = build_usb_brick()
    paths, rows = [], []
    for name in PART_NAMES:
        m = parts[name]
        p = out / f"{name}.ply"
        p.write_bytes(trimesh.exchange.ply.export_ply(m, encoding="binary", vertex_normal=True,
                                                      include_attributes=False))
        paths.append(p)
        rows.append(f"| `{p.name}` | {name} | {len(m.faces)} | {len(m.vertices)} |")
    ext = combined_mesh(parts).extents
    readme = out / "README.md"
    readme.write_text(_README.format(rows="\n".join(rows),
                                     bbox=" x ".join(f"{e:.1f}" for e in ext)))
    paths.append(readme)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write the USB brick PLY assets (mm).")
    ap.add_argument("out_dir", nargs="?", default="assets/usb_brick")
    args = ap.parse_args(argv)
    total = 0
    for p in write_assets(args.out_dir):
        size = p.stat().st_size
        total += size
        extra = ""
        if p.suffix == ".ply":
            m = trimesh.load(p, process=False)
            extra = f"  {len(m.faces)} triangles, {len(m.vertices)} vertices"
        print(f"{p}  {size / 1e6:.2f} MB{extra}")
    print(f"total {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
