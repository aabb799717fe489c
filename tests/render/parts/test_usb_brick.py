"""Tests for the procedural USB brick model (mm, common model frame)."""
from pathlib import Path

import numpy as np
import pytest
import trimesh

from polar_render.parts import usb_brick as ub

REPO = Path(__file__).resolve().parents[3]
TOL = 1e-6


@pytest.fixture(scope="module")
def parts():
    return ub.build_usb_brick()


def _max_edge(m):
    e = m.vertices[m.edges_unique]
    return float(np.linalg.norm(e[:, 0] - e[:, 1], axis=1).max())


def test_parts_closed_and_outward(parts):
    assert list(parts) == ["brick_top", "brick_bottom", "plug"]
    for name, m in parts.items():
        solid = ub.weld(m)
        assert solid.is_watertight, name
        assert solid.is_winding_consistent, name
        assert solid.volume > 0, name
    # brick volume: box minus rounded edges; studs add 8 cylinders
    L, W, H = ub.BRICK_SIZE_MM
    vb = ub.weld(parts["brick_bottom"]).volume
    assert 0.995 * L * W * H < vb < L * W * H
    studs = 8 * np.pi * (ub.STUD_DIAMETER_MM / 2) ** 2 * ub.STUD_HEIGHT_MM
    assert ub.weld(parts["brick_top"]).volume == pytest.approx(vb + studs, rel=2e-3)


def test_dimensions_and_frame(parts):
    L, W, H = ub.BRICK_SIZE_MM
    np.testing.assert_allclose(parts["brick_bottom"].extents, [L, W, H], atol=1e-6)
    np.testing.assert_allclose(parts["brick_top"].extents, [L, W, H + ub.STUD_HEIGHT_MM], atol=1e-6)
    np.testing.assert_allclose(parts["plug"].extents, [12.0 + ub.PLUG_EMBED_MM, 12.0, 4.5], atol=1e-6)
    allm = ub.combined_mesh(parts)
    np.testing.assert_allclose(allm.extents, [L + 12.0, W, 2 * H + ub.STUD_HEIGHT_MM], atol=1e-6)
    np.testing.assert_allclose(allm.bounds.sum(axis=0), 0.0, atol=1e-6)   # bbox centred on origin
    # plug at +x, studs at +z, bottom brick below top brick
    assert parts["plug"].bounds[1, 0] == pytest.approx(allm.bounds[1, 0])
    assert parts["brick_top"].bounds[1, 2] == pytest.approx(allm.bounds[1, 2])
    assert parts["brick_bottom"].bounds[1, 2] == pytest.approx(parts["brick_top"].bounds[0, 2])


def test_fine_tessellation(parts):
    for name, m in parts.items():
        assert _max_edge(m) <= ub.MAX_EDGE_MM + TOL, name


def test_normals(parts):
    for name, m in parts.items():
        n = np.asarray(m.vertex_normals)
        assert n.shape == m.vertices.shape
        np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-9)
        # vertex normals agree with their faces (<= 30 deg crease, smooth rounded edges)
        cos = np.einsum("fkj,fj->fk", n[m.faces], m.face_normals)
        assert cos.min() > np.cos(np.radians(ub.CREASE_DEG)), name
    # flat faces stay exactly flat: bottom face of the bottom brick
    b = parts["brick_bottom"]
    v, n = b.vertices, b.vertex_normals
    bottom = np.isclose(v[:, 2], v[:, 2].min()) & (np.abs(v[:, 0] - v[:, 0].mean()) < 15) & (np.abs(v[:, 1]) < 7)
    assert bottom.sum() > 100
    np.testing.assert_allclose(n[bottom], [[0, 0, -1]] * bottom.sum(), atol=1e-12)
    # stud cylinder sides: horizontal normals (round, smooth) at mid stud height
    t = parts["brick_top"]
    ztop = t.vertices[:, 2].max()
    mid = np.abs(t.vertices[:, 2] - (ztop - 0.8)) < 0.3
    assert mid.sum() > 8 * 48
    assert np.abs(t.vertex_normals[mid, 2]).max() < 1e-9
    # cylinder normals are radial: pair each vertex with its stud centre (8 mm grid)
    p = t.vertices[mid]
    cx = t.bounds[:, 0].mean() + (np.floor((p[:, 0] - t.bounds[:, 0].mean()) / 8.0) + 0.5) * 8.0
    cy = np.sign(p[:, 1]) * 4.0
    radial = np.stack([p[:, 0] - cx, p[:, 1] - cy], 1)
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", radial, t.vertex_normals[mid, :2]).min() > 0.999


def test_write_assets(tmp_path, parts):
    paths = ub.write_assets(tmp_path / "usb")
    names = sorted(p.name for p in paths)
    assert names == ["README.md", "brick_bottom.ply", "brick_top.ply", "plug.ply"]
    assert sum(p.stat().st_size for p in paths) < 10e6
    readme = (tmp_path / "usb" / "README.md").read_text()
    assert "python -m polar_render.parts.usb_brick assets/usb_brick" in readme
    for name in ub.PART_NAMES:
        raw = (tmp_path / "usb" / f"{name}.ply").read_bytes()
        header = raw[: raw.index(b"end_header")].decode()
        assert "binary_little_endian" in header and "property float nx" in header
        m = trimesh.load(tmp_path / "usb" / f"{name}.ply", process=False)
        np.testing.assert_allclose(m.vertices, parts[name].vertices, atol=1e-5)
        np.testing.assert_allclose(m.vertex_normals, parts[name].vertex_normals, atol=1e-6)
        assert ub.weld(m).is_watertight, name   # still closed after float32 export


def test_committed_assets_up_to_date(parts):
    d = REPO / "assets" / "usb_brick"
    if not (d / "brick_top.ply").exists():
        pytest.skip("assets/usb_brick not generated")
    for name in ub.PART_NAMES:
        m = trimesh.load(d / f"{name}.ply", process=False)
        assert len(m.faces) == len(parts[name].faces), f"{name}: regenerate assets/usb_brick"
        np.testing.assert_allclose(m.vertices, parts[name].vertices, atol=1e-5)


def test_studs_are_round_on_the_pitch_grid(parts):
    """Eight studs of the top brick: centred on the 8 mm pitch grid, cylinders of the stud
    diameter up to the bevel, closed by a flat cap at the stud height (the annuli around
    them lie in the top face)."""
    m = parts["brick_top"]
    top = m.bounds[1, 2] - ub.STUD_HEIGHT_MM
    v = np.asarray(m.vertices)
    above = v[v[:, 2] > top + 1e-6]
    x0, y0 = m.bounds[:, :2].mean(axis=0)   # the brick's centre in the model frame
    centres = [(x0 + x, y0 + y) for x in (np.arange(4) - 1.5) * ub.STUD_PITCH_MM
               for y in (np.arange(2) - 0.5) * ub.STUD_PITCH_MM]
    owner = np.argmin([np.hypot(above[:, 0] - x, above[:, 1] - y) for x, y in centres], axis=0)
    R = ub.STUD_DIAMETER_MM / 2
    for k, (x, y) in enumerate(centres):
        pts = above[owner == k]
        r = np.hypot(pts[:, 0] - x, pts[:, 1] - y)
        assert len(pts) > 100, k
        assert r.max() == pytest.approx(R, abs=1e-9), k                  # round, of the stud diameter
        side = pts[r > R - 1e-9]
        assert side[:, 2].max() <= top + ub.STUD_HEIGHT_MM - ub.STUD_BEVEL_MM + 1e-9   # bevel below the cap
        assert pts[:, 2].max() == pytest.approx(top + ub.STUD_HEIGHT_MM, abs=1e-9)
        apex = pts[r < 1e-9]
        assert len(apex) == 1 and apex[0, 2] == pytest.approx(top + ub.STUD_HEIGHT_MM)
    # between the studs the top face is flat: nothing above it outside the stud circles
    r_any = np.min([np.hypot(above[:, 0] - x, above[:, 1] - y) for x, y in centres], axis=0)
    assert r_any.max() <= R + 1e-9
