"""Foreign parts for tests, built by hand (no CAD kernel): a 40 x 30 x 10 mm bracket with a
through hole (288 triangles, flat faces, a smooth 32-segment hole) and writers for the formats a
CAD user exports: STL (binary, ASCII), OBJ (with face groups and corner-averaged normals), GLB
(in metres, as glTF specifies), PLY (mm or metres) and STEP (an AP214 B-rep box written entity by
entity)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

SIZE_MM = (40.0, 30.0, 10.0)
HOLE_R_MM = 6.0


def bracket(segments: int = 32) -> trimesh.Trimesh:
    """Closed, outward-wound bracket: a 40 x 30 x 10 mm block (x, y, z; bottom at z = 0, centred
    in xy) with a vertical through hole of radius 6 mm. The top and bottom annuli are strips
    between the hole's circle and the rectangle (its corners included), so every face of the
    block is flat and large, as a CAD export has it."""
    W, D, H = SIZE_MM
    ang = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = []
    for a in ang:
        d = np.array([np.cos(a), np.sin(a)])
        t = min((W / 2) / abs(d[0]) if abs(d[0]) > 1e-12 else np.inf,
                (D / 2) / abs(d[1]) if abs(d[1]) > 1e-12 else np.inf)
        ring.append((a, d * t, HOLE_R_MM * d))
    for cx, cy in ((W / 2, D / 2), (-W / 2, D / 2), (-W / 2, -D / 2), (W / 2, -D / 2)):
        a = np.arctan2(cy, cx) % (2 * np.pi)
        ring.append((a, np.array([cx, cy]), HOLE_R_MM * np.array([np.cos(a), np.sin(a)])))
    ring.sort(key=lambda x: x[0])
    outer, inner = np.array([x[1] for x in ring]), np.array([x[2] for x in ring])
    m = len(ring)
    v = np.concatenate([np.column_stack([pts, np.full(m, z)]) for z in (0.0, H) for pts in (outer, inner)])

    def o(k, top):
        return (2 * m if top else 0) + k % m

    def i(k, top):
        return (2 * m if top else 0) + m + k % m

    f = []
    for k in range(m):
        f += [[o(k, 1), o(k + 1, 1), i(k + 1, 1)], [o(k, 1), i(k + 1, 1), i(k, 1)]]          # top, +z
        f += [[o(k, 0), i(k + 1, 0), o(k + 1, 0)], [o(k, 0), i(k, 0), i(k + 1, 0)]]          # bottom, -z
        f += [[o(k, 0), o(k + 1, 0), o(k + 1, 1)], [o(k, 0), o(k + 1, 1), o(k, 1)]]          # outer wall
        f += [[i(k, 0), i(k + 1, 1), i(k + 1, 0)], [i(k, 0), i(k, 1), i(k + 1, 1)]]          # hole wall
    mesh = trimesh.Trimesh(v, np.array(f), process=False)
    assert mesh.is_watertight and mesh.volume > 0
    return mesh


def averaged_normals(mesh: trimesh.Trimesh) -> np.ndarray:
    """Per-vertex normals as common exporters write them: the mean of the normals of the faces
    around each shared vertex (corners of flat faces get tilted normals)."""
    n = np.zeros_like(mesh.vertices)
    for k in range(3):
        np.add.at(n, mesh.faces[:, k], mesh.face_normals)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def write_obj(path: Path, mesh: trimesh.Trimesh, scale: float = 1.0) -> Path:
    """OBJ with corner-averaged normals (``vn``) and face groups ``top`` (faces facing +z) and
    ``rest``, as ``o bracket`` (group names: ``bracket_top``, ``bracket_rest``)."""
    v, n = mesh.vertices * scale, averaged_normals(mesh)
    top = mesh.face_normals[:, 2] > 0.99
    lines = ["# test bracket", "o bracket"] + [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in n]
    for name, sel in (("top", top), ("rest", ~top)):
        lines.append(f"g {name}")
        lines += [f"f {a + 1}//{a + 1} {b + 1}//{b + 1} {c + 1}//{c + 1}" for a, b, c in mesh.faces[sel]]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ply(path: Path, mesh: trimesh.Trimesh, scale: float = 1.0, groups: bool = False) -> Path:
    """Binary PLY, optionally with an integer face property ``group`` (1 = top, 0 = rest)."""
    v = np.asarray(mesh.vertices * scale, np.float32)
    f = np.asarray(mesh.faces, np.int32)
    vert = np.zeros(len(v), [("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    vert["x"], vert["y"], vert["z"] = v.T
    dt = [("n", "u1"), ("i", "<i4", (3,))] + ([("g", "<i4")] if groups else [])
    face = np.zeros(len(f), dt)
    face["n"], face["i"] = 3, f
    if groups:
        face["g"] = (mesh.face_normals[:, 2] > 0.99).astype(np.int32)
    head = ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}", "property float x",
            "property float y", "property float z", f"element face {len(f)}",
            "property list uchar int vertex_indices"] + (["property int group"] if groups else []) + ["end_header"]
    path.write_bytes(("\n".join(head) + "\n").encode() + vert.tobytes() + face.tobytes())
    return path


def write_glb(path: Path, mesh: trimesh.Trimesh, scale: float = 1e-3) -> Path:
    """GLB (default: in metres, the glTF unit) with one node ``bracket``."""
    m = mesh.copy()
    m.apply_scale(scale)
    scene = trimesh.Scene()
    scene.add_geometry(m, geom_name="bracket", node_name="bracket")
    path.write_bytes(scene.export(file_type="glb"))
    return path


def box_step(size_mm=(40.0, 30.0, 10.0), unit: str = "MILLI") -> str:
    """AP214 STEP text of an axis-aligned box with one corner at the origin: a manifold B-rep
    (6 planar faces, 12 edge curves, 8 vertices) in ``unit`` (SI prefix of metre; '' = metres)."""
    sx, sy, sz = size_mm
    ents: list[str] = []

    def add(text: str) -> str:
        ents.append(text)
        return f"#{len(ents)}"

    P = [(x, y, z) for z in (0, sz) for y in (0, sy) for x in (0, sx)]
    pts = [add(f"CARTESIAN_POINT('',({x:.6f},{y:.6f},{z:.6f}))") for x, y, z in P]
    vtx = [add(f"VERTEX_POINT('',{p})") for p in pts]
    dirs: dict = {}

    def direction(v):
        if v not in dirs:
            dirs[v] = add(f"DIRECTION('',({v[0]:.1f},{v[1]:.1f},{v[2]:.1f}))")
        return dirs[v]

    edges: dict = {}

    def edge(a: int, b: int):
        key = (min(a, b), max(a, b))
        if key not in edges:
            i, j = key
            delta = [P[j][k] - P[i][k] for k in range(3)]
            length = max(abs(x) for x in delta)
            vec = add(f"VECTOR('',{direction(tuple(x / length for x in delta))},{length:.6f})")
            line = add(f"LINE('',{pts[i]},{vec})")
            edges[key] = add(f"EDGE_CURVE('',{vtx[i]},{vtx[j]},{line},.T.)")
        return edges[key], a < b

    faces = [((0, 2, 3, 1), (0, 0, -1)), ((4, 5, 7, 6), (0, 0, 1)), ((0, 1, 5, 4), (0, -1, 0)),
             ((2, 6, 7, 3), (0, 1, 0)), ((0, 4, 6, 2), (-1, 0, 0)), ((1, 3, 7, 5), (1, 0, 0))]
    adv = []
    for loop, n in faces:
        oriented = []
        for k in range(4):
            e, same = edge(loop[k], loop[(k + 1) % 4])
            oriented.append(add(f"ORIENTED_EDGE('',*,*,{e},{'.T.' if same else '.F.'})"))
        loop_id = add("EDGE_LOOP('',(" + ",".join(oriented) + "))")
        bound = add(f"FACE_OUTER_BOUND('',{loop_id},.T.)")
        ref = (1, 0, 0) if n[0] == 0 else (0, 1, 0)
        place = add(f"AXIS2_PLACEMENT_3D('',{pts[loop[0]]},{direction(n)},{direction(ref)})")
        plane = add(f"PLANE('',{place})")
        adv.append(add(f"ADVANCED_FACE('',({bound}),{plane},.T.)"))
    shell = add("CLOSED_SHELL('',(" + ",".join(adv) + "))")
    solid = add(f"MANIFOLD_SOLID_BREP('part',{shell})")
    origin = add("CARTESIAN_POINT('',(0.,0.,0.))")
    axes = add(f"AXIS2_PLACEMENT_3D('',{origin},{direction((0, 0, 1))},{direction((1, 0, 0))})")
    prefix = f".{unit}." if unit else "$"
    lu = add(f"( LENGTH_UNIT() NAMED_UNIT(*) SI_UNIT({prefix},.METRE.) )")
    au = add("( NAMED_UNIT(*) PLANE_ANGLE_UNIT() SI_UNIT($,.RADIAN.) )")
    su = add("( NAMED_UNIT(*) SI_UNIT($,.STERADIAN.) SOLID_ANGLE_UNIT() )")
    unc = add(f"UNCERTAINTY_MEASURE_WITH_UNIT(LENGTH_MEASURE(1.E-07),{lu},'distance_accuracy_value','')")
    ctx = add(f"( GEOMETRIC_REPRESENTATION_CONTEXT(3) GLOBAL_UNCERTAINTY_ASSIGNED_CONTEXT(({unc})) "
              f"GLOBAL_UNIT_ASSIGNED_CONTEXT(({lu},{au},{su})) REPRESENTATION_CONTEXT('',''))")
    rep = add(f"ADVANCED_BREP_SHAPE_REPRESENTATION('',({axes},{solid}),{ctx})")
    app = add("APPLICATION_CONTEXT('automotive design')")
    add(f"APPLICATION_PROTOCOL_DEFINITION('international standard','automotive_design',2000,{app})")
    pc = add(f"PRODUCT_CONTEXT('',{app},'mechanical')")
    prod = add(f"PRODUCT('box','box','',({pc}))")
    pdf = add(f"PRODUCT_DEFINITION_FORMATION('','',{prod})")
    pdc = add(f"PRODUCT_DEFINITION_CONTEXT('part definition',{app},'design')")
    pd = add(f"PRODUCT_DEFINITION('design','',{pdf},{pdc})")
    pds = add(f"PRODUCT_DEFINITION_SHAPE('','',{pd})")
    add(f"SHAPE_DEFINITION_REPRESENTATION({pds},{rep})")
    head = ("ISO-10303-21;\nHEADER;\nFILE_DESCRIPTION(('box'),'2;1');\n"
            "FILE_NAME('box.step','2024-01-01T00:00:00',(''),(''),'','','');\n"
            "FILE_SCHEMA(('AUTOMOTIVE_DESIGN { 1 0 10303 214 1 1 1 1 }'));\nENDSEC;\nDATA;\n")
    return head + "".join(f"#{k + 1}={e};\n" for k, e in enumerate(ents)) + "ENDSEC;\nEND-ISO-10303-21;\n"


# format id -> (file name, writer(path), --unit to pass or None)
FORMATS = {
    "stl-binary": ("bracket.stl", lambda p: p.write_bytes(bracket().export(file_type="stl")), None),
    "stl-ascii": ("bracket.stl", lambda p: p.write_text(bracket().export(file_type="stl_ascii")), None),
    "obj": ("bracket.obj", lambda p: write_obj(p, bracket()), None),
    "glb-metres": ("bracket.glb", lambda p: write_glb(p, bracket()), None),
    "ply": ("bracket.ply", lambda p: write_ply(p, bracket(), groups=True), None),
    "ply-metres": ("bracket_m.ply", lambda p: write_ply(p, bracket(), scale=1e-3), "m"),
    "step": ("box.step", lambda p: p.write_text(box_step()), None),
}
