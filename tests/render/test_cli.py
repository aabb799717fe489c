"""Bad-input corpus of ``polar-render render`` (issues 16 and 20, render run).

Every case runs the real CLI entry point in-process (``cli.main``) against a copy of the
BlenderProc BOP fixture and checks that it (a) exits 2, (b) prints one message naming the
option, file or key and the problem, without a traceback, and (c) wrote nothing: OUT does
not exist afterwards (or is unchanged where the case puts something there), and the layout
copy and the scene file are byte-for-byte unchanged. Validation fires before rendering,
so each case takes well under a second once Mitsuba is imported. These corpora cut across
modules (request, plan, bop, schema, paths), so they stay with the entry point they drive.
Also: the default output folder of ``--scene`` (``scene_label``, the Makefile's OUT).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import trimesh

from polar_render import cli
from polar_render.cli import scene_label
from polar_render.config.scenes import REPO_ROOT

from tests.tree import snapshot

PLAIN_SCENE = Path(__file__).parent / "data" / "plain" / "scene.yaml"
GT = Path("train_pbr") / "000000" / "scene_gt.json"
CAM = Path("train_pbr") / "000000" / "scene_camera.json"
MODEL1 = Path("models") / "obj_000001.ply"
INFO = Path("models") / "models_info.json"


# ----------------------------------------------------------------------------- helpers

def copy_layout(src: Path, dst: Path) -> Path:
    """A writable copy of a (read-only) BOP layout."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for p in [dst, *dst.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return dst


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def gt(fn):
    return lambda c: edit_json(c.bop / GT, fn)


def info(fn):
    return lambda c: edit_json(c.bop / INFO, fn)


def write(rel, data: bytes):
    return lambda c: (c.bop / rel).write_bytes(data)


def ply_header_only(c):
    data = (c.bop / MODEL1).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    (c.bop / MODEL1).write_bytes(data[:end])


def ply_truncated(c):
    data = (c.bop / MODEL1).read_bytes()
    (c.bop / MODEL1).write_bytes(data[: len(data) - 40])


def ply_mesh(mesh: trimesh.Trimesh, rel=MODEL1, encoding="binary"):
    return lambda c: (c.bop / rel).write_bytes(mesh.export(file_type="ply", encoding=encoding))


def ply_no_faces(c):
    (c.bop / MODEL1).write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                                 b"property float z\nelement face 0\nproperty list uchar int vertex_indices\n"
                                 b"end_header\n0 0 0\n40 0 0\n0 30 0\n")


def ply_bad_index(c):
    (c.bop / MODEL1).write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                                 b"property float z\nelement face 1\nproperty list uchar int vertex_indices\n"
                                 b"end_header\n-20 -15 -10\n20 15 10\n0 30 0\n3 0 1 7\n")


def box(*extents_mm) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents_mm)


def all_poses(im: str, t):
    def f(d):
        for o in d[im]:
            o["cam_t_m2c"] = list(t)
    return gt(f)


def link(rel, target_fn):
    """Replace ``rel`` in the layout by a symlink to ``target_fn(ctx)``."""
    def f(c):
        p = c.bop / rel
        target = target_fn(c)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        p.symlink_to(target)
    return f


def outside_copy(rel):
    """A copy of layout file/dir ``rel`` outside the layout (for escaping symlinks)."""
    def f(c):
        src, dst = c.bop / rel, c.tmp / "elsewhere" / Path(rel).name
        dst.parent.mkdir(exist_ok=True)
        shutil.copytree(src, dst) if src.is_dir() else shutil.copyfile(src, dst)
        return dst
    return f


def add_loop_scene(c):
    (c.bop / "train_pbr" / "000001").symlink_to("000001")


def make_file(name):
    return lambda c: (c.tmp / name).write_text("not a directory\n")


class Ctx:
    def __init__(self, tmp: Path, bop: Path):
        self.tmp, self.bop, self.out = tmp, bop, tmp / "out"


BASE = ["--scene", "{scene}", "--layout", "{bop}", "--out", "{out}", "--res", "64x48", "--spp", "1"]


def P(id_, extra=(), needles=(), setup=None, base=BASE, env=None, out_is=None):
    """One case: CLI args (BASE + extra; argparse keeps the last of a repeated option), the
    substrings the message must contain, a setup on the layout copy, environment variables,
    and ``out_is`` (name of something the case creates at --out, which must survive)."""
    return pytest.param(list(base) + list(extra), list(needles), setup, env or {}, out_is, id=id_)


NO_LAYOUT = ["--scene", "{scene}", "--out", "{out}", "--res", "64x48", "--spp", "1"]

CASES = [
    # --- CLI values -----------------------------------------------------------------
    P("spp-zero", ["--spp", "0"], ["--spp", "expected an integer >= 1", "got 0"]),
    P("spp-ldsampler-not-power-of-4", ["--scene", "usb_brick_station", "--spp", "32"], ["--spp", "32", "power of 4"],
      base=NO_LAYOUT),
    P("spp-negative", ["--spp", "-4"], ["--spp", ">= 1", "-4"]),
    P("spp-not-integer", ["--spp", "2.5"], ["argument --spp", "invalid int value"]),
    P("n-zero", ["--n", "0"], ["--n", "expected an integer >= 1", "got 0"]),
    P("n-negative", ["--n", "-1"], ["--n", ">= 1", "-1"]),
    P("n-zero-sampled-layout", ["--n", "0"], ["--n", ">= 1"], base=["--scene", "usb_brick", "--out", "{out}"]),
    P("n-not-integer", ["--n", "1.5"], ["argument --n", "invalid int value"]),
    P("seed-negative", ["--seed", "-1"], ["--seed", "expected an integer >= 0", "got -1"]),
    P("seed-too-large", ["--seed", str(2**64)], ["--seed", "<= 9223372036854775807"]),
    P("seed-not-integer", ["--seed", "abc"], ["argument --seed", "invalid int value: 'abc'"]),
    P("workers-zero", ["--workers", "0"], ["--workers", ">= 1", "got 0"]),
    P("workers-negative", ["--workers", "-2"], ["--workers", ">= 1", "-2"]),
    P("res-zero-width", ["--res", "0x10"], ["--res", "width and height must be >= 1", "0x10"]),
    P("res-letters", ["--res", "abc"], ["--res", "WIDTHxHEIGHT", "'abc'"]),
    P("res-missing-height", ["--res", "64x"], ["--res", "WIDTHxHEIGHT", "'64x'"]),
    P("res-three-numbers", ["--res", "64x48x3"], ["--res", "'64x48x3'"]),
    P("res-negative", ["--res=-64x48"], ["--res", "'-64x48'"]),
    P("res-too-many-pixels", ["--res", "100000x100000"], ["--res", "POLAR_MAX_IMAGE_PIXELS"]),
    P("shard-k-equals-n", ["--shard", "2/2"], ["--shard", "0 <= k < n", "2/2"]),
    P("shard-negative-k", ["--shard=-1/2"], ["--shard", "0 <= k < n", "-1/2"]),
    P("shard-letters", ["--shard", "a/b"], ["--shard", "k/n", "'a/b'"]),
    P("shard-zero-of-zero", ["--shard", "0/0"], ["--shard", "0/0"]),
    P("shard-no-slash", ["--shard", "3"], ["--shard", "'3'"]),
    P("noise-seed-negative", ["--noise-seed", "-3"], ["--noise-seed", ">= 0", "-3"]),
    P("executor-unknown", ["--executor", "slurm"], ["argument --executor", "invalid choice: 'slurm'"]),
    P("denoise-unknown", ["--denoise", "magic"], ["argument --denoise", "invalid choice: 'magic'"]),
    P("variant-unknown", ["--variant", "llvm_ad_nonsense_polarized"], ["--variant", "llvm_ad_nonsense_polarized"]),
    P("variant-not-polarized", ["--variant", "scalar_rgb"], ["--variant", "not polarized"]),
    P("out-is-a-file", ["--out", "{tmp}/afile"], ["--out", "afile", "not a directory"],
      setup=make_file("afile"), out_is="afile"),
    P("out-empty", ["--out", ""], ["--out", "non-empty path"]),
    P("scene-empty", ["--scene", ""], ["--scene", "non-empty path"]),
    P("layout-not-a-directory", ["--layout", "{tmp}/nowhere"], ["nowhere", "dataset root is not a directory"]),
    P("scene-unknown", ["--scene", "no_such_scene"], ["no_such_scene"]),
    P("scene-without-layout-section", [], ["plain", "scene.yaml", "no layout: section", "--layout"], base=NO_LAYOUT),
    P("light-variant-without-ring", ["--light-variant", "rot90"], ["scene.yaml", "--light-variant", "lights.ring"]),
    P("blenderproc-with-given-layout", ["--layout-backend", "blenderproc"],
      ["--layout-backend blenderproc", "cannot be combined with --layout"]),
    P("disk-too-small", [], ["out", "rendering 3 samples at 64x48", "GiB", "free"],
      env={"POLAR_DISK_MARGIN": "1e15"}),
    # --- BOP layout: frames -----------------------------------------------------------
    P("scene-gt-empty-object", [], ["scene_gt.json", "no image is annotated"], setup=write(GT, b"{}")),
    P("scene-gt-empty-file", [], ["scene_gt.json", "file is empty"], setup=write(GT, b"")),
    P("scene-gt-empty-frame", [], ["scene_gt.json", "key '1'", "no object annotated"],
      setup=gt(lambda d: d.__setitem__("1", []))),
    P("image-without-annotations", [], ["scene_camera.json", "key '2'", "missing from", "scene_gt.json"],
      setup=gt(lambda d: d.pop("2"))),
    P("all-objects-behind-camera", [], ["scene_gt.json", "key '1'", "no object can be seen", "behind the camera"],
      setup=all_poses("1", [0.0, 0.0, -450.0])),
    P("all-objects-right-of-image", [], ["scene_gt.json", "key '0'", "no object can be seen", "right of the image"],
      setup=all_poses("0", [5000.0, 0.0, 450.0])),
    P("all-objects-above-image", [], ["scene_gt.json", "key '2'", "above the image"],
      setup=all_poses("2", [0.0, -5000.0, 450.0])),
    # --- BOP layout: models -------------------------------------------------------------
    P("model-truncated", [], ["obj_000001.ply", "cannot read mesh"], setup=ply_truncated),
    P("model-garbage", [], ["obj_000001.ply", "cannot read mesh"], setup=write(MODEL1, b"garbage\x00\xff" * 40)),
    P("model-header-only", [], ["obj_000001.ply", "cannot read mesh"], setup=ply_header_only),
    P("model-empty-file", [], ["obj_000001.ply"], setup=write(MODEL1, b"")),
    P("model-no-faces", [], ["obj_000001.ply", "no vertices or faces"], setup=ply_no_faces),
    P("model-face-index-out-of-range", [], ["obj_000001.ply", "face vertex indices outside 0..2"],
      setup=ply_bad_index),
    P("model-in-metres", [], ["obj_000001.ply", "looks like metres", "multiply by 1000"],
      setup=ply_mesh(box(0.04, 0.03, 0.02))),
    P("model-too-many-faces", [], ["obj_000001.ply", "12 faces", "POLAR_MAX_MESH_FACES", "scene_gt.json"],
      env={"POLAR_MAX_MESH_FACES": "5"}),
    P("model-missing", [], ["scene_gt.json", "obj_id", "obj_000001.ply", "not found"],
      setup=lambda c: (c.bop / MODEL1).unlink()),
    P("models-info-missing", [], ["models_info.json", "file not found"], setup=lambda c: (c.bop / INFO).unlink()),
    P("models-info-without-entry", [], ["models_info.json", "no entry for obj_id 2"],
      setup=info(lambda d: d.pop("2"))),
    P("models-info-disagrees", [], ["models_info.json", "'1'.size_x", "disagree"],
      setup=info(lambda d: d["1"].__setitem__("size_x", 0.04))),
    P("models-info-bad-diameter", [], ["models_info.json", "'2'.diameter"],
      setup=info(lambda d: d["2"].__setitem__("diameter", -1))),
    P("model-other-size-than-info", [], ["models_info.json", "obj_000001.ply", "disagree"],
      setup=ply_mesh(box(80.0, 30.0, 20.0))),
    # --- BOP layout: paths ----------------------------------------------------------------
    P("models-dir-symlink-escapes", [], ["models", "outside", "paths in data files must stay inside"],
      setup=link("models", outside_copy("models"))),
    P("model-file-symlink-escapes", [], ["obj_000001.ply", "outside"],
      setup=link(MODEL1, outside_copy(MODEL1))),
    P("scene-dir-symlink-escapes", [], ["train_pbr/000000", "outside"],
      setup=link("train_pbr/000000", outside_copy("train_pbr/000000"))),
    P("camera-json-symlink-escapes", [], ["camera.json", "outside"],
      setup=link("camera.json", outside_copy("camera.json"))),
    P("camera-json-symlink-loop", [], ["camera.json", "symlink loop"],
      setup=link("camera.json", lambda c: c.bop / "camera.json")),
    P("scene-dir-symlink-loop", [], ["train_pbr/000001", "symlink loop"], setup=add_loop_scene),
    P("scene-gt-symlink-loop", [], ["scene_gt.json", "symlink loop"],
      setup=link(GT, lambda c: c.bop / GT)),
    P("layout-root-symlink-loop", ["--layout", "{tmp}/loop"], ["loop", "symlink loop"],
      setup=lambda c: (c.tmp / "loop").symlink_to(c.tmp / "loop")),
    P("out-symlink-loop", ["--out", "{tmp}/outloop"], ["--out", "outloop", "symlink loop"],
      setup=lambda c: (c.tmp / "outloop").symlink_to(c.tmp / "outloop"), out_is="outloop"),
]


@pytest.mark.parametrize("argv, needles, setup, env, out_is", CASES)
def test_bad_input(tmp_path, capsys, monkeypatch, bop_fixture_dir, argv, needles, setup, env, out_is):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("POLAR_RENDER_VARIANT", raising=False)
    ctx = Ctx(tmp_path, copy_layout(bop_fixture_dir, tmp_path / "bop"))
    if setup is not None:
        setup(ctx)
    args = [a.format(scene=PLAIN_SCENE, bop=ctx.bop, out=ctx.out, tmp=tmp_path) for a in argv]
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    before = {"bop": snapshot(ctx.bop), "scene": PLAIN_SCENE.read_bytes(), "out": snapshot(out) if out else {}}

    rc = cli.main(["render", *args, "--quiet"])
    err = capsys.readouterr().err

    assert rc == 2, err
    assert "Traceback" not in err
    assert err.count("error:") == 1, err
    for s in needles:
        assert s in err, (s, err)
    if out_is is None:
        assert not ctx.out.exists(), f"{ctx.out} was created: {sorted(os.listdir(ctx.out))}"
    assert snapshot(out) == before["out"] if out else True
    assert snapshot(ctx.bop) == before["bop"], "the layout was modified"
    assert PLAIN_SCENE.read_bytes() == before["scene"]


def test_corpus_size():
    assert len(CASES) >= 35


def test_python_api_is_as_strict_as_the_cli(tmp_path):
    """RenderRequest validates on construction and again when run() starts (fields may be
    changed in between), with the messages the CLI prints."""
    from polar_render.run.request import RenderRequest, RequestError
    from polar_render.run.runner import run

    for bad, option in ((dict(spp=0), "--spp"), (dict(n=0), "--n"), (dict(seed=-1), "--seed"),
                        (dict(workers=0), "--workers"), (dict(res=(0, 10)), "--res"), (dict(shard=(2, 2)), "--shard"),
                        (dict(noise_seed=-1), "--noise-seed"), (dict(n=True), "--n"), (dict(spp=2.0), "--spp"),
                        (dict(executor="slurm"), "--executor"), (dict(indices=[-1]), "indices")):
        with pytest.raises(RequestError, match=f"^{option}: "):
            RenderRequest(scene=PLAIN_SCENE, out=tmp_path / "out", **bad)
    req = RenderRequest(scene=PLAIN_SCENE, out=tmp_path / "out")
    req.spp = 0
    with pytest.raises(RequestError, match="^--spp: expected an integer >= 1, got 0"):
        run(req)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arg, label", [("usb_brick", "usb_brick"), ("scenes/bracket/scene.yaml", "bracket"),
                                        ("/p/to/bracket/scene.yaml", "bracket"), ("/p/my_part.yaml", "my_part"),
                                        ("scenes/bracket/", "bracket"), ("scenes/bracket", "bracket")])
def test_default_output_folder_is_the_scene_name(arg, label):
    assert scene_label(arg) == label
    made = subprocess.run(["make", "-n", "render", f"SCENE={arg}"], cwd=REPO_ROOT, capture_output=True, text=True,
                          env={**os.environ, "MAKEFLAGS": ""})
    assert f"--out out/{label} " in made.stdout, made.stdout + made.stderr
