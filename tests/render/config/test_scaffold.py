"""New scene files for a user's part (polar_render.config.scaffold, ``polar-render new-scene``):
framing and anomaly sizes follow the part's size, every key of the written file is commented
and the scene renders by name, and the new-scene bad-input corpus (``CASES``: exit 2, the
message, nothing written, nothing lost)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
import yaml

from polar_render.cli import main
from polar_render.config.scenes import load_scene

from tests.render import cad_parts
from tests.render.conftest import new_scene_file
from tests.tree import snapshot


def _projected_fill(scene: Path, seed: int = 0) -> list[float]:
    """Per camera of one sampled scene: the part's projected larger extent / the shorter image
    side (station, drop), or its x extent / width and y extent / height, the larger (topdown)."""
    from polar_render.config.schema import layout_from_dict
    from polar_render.layout.embedded import camera_matrix, sample_scene

    cfg = load_scene(scene)
    lcfg = layout_from_dict(cfg.layout)
    mesh = trimesh.util.concatenate([trimesh.load(p.mesh, process=False) for p in cfg.objects[1].parts])
    objects, cameras = sample_scene({1: mesh}, lcfg, np.random.default_rng(seed))
    (_, T), K = objects[0], camera_matrix(lcfg)
    pw = mesh.vertices * 1e-3 @ T[:3, :3].T + T[:3, 3]
    out = []
    for R, t in cameras:
        pc = pw @ R.T + np.asarray(t) * 1e-3
        uv = pc[:, :2] / pc[:, 2:] * K[0, 0]
        ext = uv.max(0) - uv.min(0)
        out.append(float(max(ext[0] / lcfg.width, ext[1] / lcfg.height)) if lcfg.mode == "topdown"
                   else float(ext.max() / min(lcfg.width, lcfg.height)))
    return out


@pytest.mark.parametrize("mode, lo, hi", [("station", 0.55, 0.65), ("topdown", 0.7, 0.86), ("drop", 0.2, 0.55)])
def test_framing_follows_the_part_size(home, mode, lo, hi):
    """A 10 mm and a 400 mm bracket fill the same share of the frame (not an 80 px box)."""
    fills = {}
    for scale in (0.25, 10.0):
        b = cad_parts.bracket()
        b.apply_scale(scale)
        src = home / "src" / f"b{scale}.stl"
        src.write_bytes(b.export(file_type="stl"))
        scene = new_scene_file(home, f"s{int(scale * 100)}_{mode}", "--mesh", src, "--mode", mode)
        fills[scale] = _projected_fill(scene)
        assert lo <= min(fills[scale]) and max(fills[scale]) <= hi, (scale, fills[scale])
        tree = yaml.safe_load(scene.read_text())
        assert tree["anomalies"]["classes"]["dent"]["radius_mm"][1] == pytest.approx(3.0 * 40 * scale / 43.8, rel=0.01)
    assert np.mean(fills[0.25]) == pytest.approx(np.mean(fills[10.0]), rel=0.15)


def test_new_scene_file_comments_every_key_and_renders_by_name(home, monkeypatch):
    src_a, src_b = home / "src" / "body.stl", home / "src" / "lid.stl"
    src_a.write_bytes(cad_parts.bracket().export(file_type="stl"))
    lid = trimesh.creation.box((40, 30, 2))
    lid.apply_translation([0, 0, 11])
    src_b.write_bytes(lid.export(file_type="stl"))
    scene = new_scene_file(home, "assembly", "--mesh", src_a, "--mesh", src_b, "--material", "plastic",
                       "--material", "aluminium")
    text = scene.read_text()
    keys = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(keys) > 80
    uncommented = [ln for ln in keys if " # " not in ln]
    assert not uncommented, uncommented
    cfg = load_scene(scene)
    assert [p.name for p in cfg.objects[1].parts] == ["body", "lid"]
    classes = yaml.safe_load(text)["anomalies"]["classes"]
    assert classes["missing"]["parts"] == ["lid"] and classes["swapped"]["pairs"] == [["body", "lid"]]
    monkeypatch.chdir(home)
    assert main(["render", "--scene", "assembly", "--n", "1", "--res", "64x48", "--spp", "1", "--quiet"]) == 0
    assert (home / "out" / "assembly" / "samples" / "000000" / "meta.json").is_file()


def _stl_file(name: str, scale: float = 1.0):
    def make(d: Path) -> list:
        b = cad_parts.bracket()
        b.apply_scale(scale)
        (d / name).write_bytes(b.export(file_type="stl"))
        return ["--mesh", str(d / name)]
    return make


def _bytes_file(name: str, data: bytes):
    def make(d: Path) -> list:
        (d / name).write_bytes(data)
        return ["--mesh", str(d / name)]
    return make


def _and(*makers, extra=()):
    def make(d: Path) -> list:
        return [a for m in makers for a in m(d)] + list(extra)
    return make


def _existing(d: Path) -> list:
    (d.parent / "scenes" / "part").mkdir()
    (d.parent / "scenes" / "part" / "notes.txt").write_text("mine")
    return _stl_file("b.stl")(d)


STEP_BOX = cad_parts.box_step()


CASES = [
    pytest.param("my part", _stl_file("b.stl"), ["NAME", "'my part'"], id="name-with-space"),
    pytest.param("part", lambda d: ["--mesh", str(d / "nope.stl")], ["--mesh", "file not found"], id="mesh-missing"),
    pytest.param("part", lambda d: ["--mesh", str(d)], ["--mesh", "not a file"], id="mesh-is-directory"),
    pytest.param("part", _bytes_file("b.dae", b"<COLLADA/>"), ["unsupported mesh format '.dae'", ".glb"],
                 id="mesh-unsupported"),
    pytest.param("part", _stl_file("b.stl", 1e-3), ["b.stl", "looks like metres", "`unit: m`"],
                 id="mesh-metres-without-unit"),
    pytest.param("part", _and(_bytes_file("b.step", STEP_BOX.encode()), extra=["--unit", "mm"]),
                 ["b.step", "declares its own unit"], id="step-with-unit"),
    pytest.param("part", _bytes_file("b.step", b"ISO-10303-21;\nnot really\n"), ["b.step", "STEP"],
                 id="step-garbage"),
    pytest.param("part", _bytes_file("b.stl", b"\0" * 80 + (10).to_bytes(4, "little") + b"\0" * 50),
                 ["b.stl", "truncated binary STL", "10 facets"], id="stl-truncated"),
    pytest.param("part", _bytes_file("b.stl", b"solid x\nendsolid x\n"), ["b.stl", "empty"], id="stl-empty"),
    pytest.param("part", _bytes_file("b.obj", b"v 0 0 0\nv 10 0 nan\nv 0 10 0\nf 1 2 3\n"), ["b.obj", "non-finite"],
                 id="obj-nan-vertex"),
    pytest.param("part", _bytes_file("b.glb", b"glTF\x02\x00\x00\x00garbage"), ["b.glb", "cannot read mesh"],
                 id="glb-garbage"),
    pytest.param("part", _and(_stl_file("a.stl"), _stl_file("b.stl"), _stl_file("c.stl"),
                              extra=["--unit", "mm", "--unit", "cm"]), ["--unit", "once per --mesh (3)"],
                 id="unit-count-mismatch"),
    pytest.param("part", _and(_stl_file("a.stl"), extra=["--material", "gold"]), ["--material", "'gold'", "aluminium"],
                 id="material-unknown"),
    pytest.param("part", _and(_stl_file("a.stl"), extra=["--unit", "furlong"]), ["--unit", "invalid choice"],
                 id="unit-unknown"),
    pytest.param("part", _and(_stl_file("a.stl"), extra=["--mode", "orbit"]), ["--mode", "invalid choice"],
                 id="mode-unknown"),
    pytest.param("part", _existing, ["part", "already exists", "--force"], id="scene-exists"),
]


@pytest.mark.parametrize("name, make, needles", CASES)
def test_new_scene_bad_input(home, capsys, name, make, needles):
    args = make(home / "src")
    before = snapshot(home / "src"), snapshot(home / "scenes")
    rc = main(["new-scene", name, *args])
    err = capsys.readouterr().err
    assert rc == 2, err
    for s in needles:
        assert s in err, (s, err)
    assert "Traceback" not in err
    assert (snapshot(home / "src"), snapshot(home / "scenes")) == before   # nothing written, nothing lost
    assert not [p for p in (home / "scenes").iterdir() if p.name.startswith(".new-")]
