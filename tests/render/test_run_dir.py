"""The run directory OUT (issue 20, render part): one run at a time (lock), relocatable
(paths stored relative to OUT), readable by others but never world-writable, and a full
disk reported by file name, before work where it can be foreseen.

Renders are tiny (64x48, 1 spp): the plain scene on the BlenderProc fixture (3 frames),
or usb_brick with its own sampled layout where OUT/layout matters.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from polar_render import cli, io, pipeline, runlock
from polar_render.pipeline import RenderRequest, read_manifest, run

PLAIN_SCENE = Path(__file__).parent / "data" / "plain" / "scene.yaml"
FAST = ["--res", "64x48", "--spp", "1"]


def _cli(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main(["render", *args, "--quiet"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _counts(stdout: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+) rendered, (\d+) skipped, (\d+) failed", stdout)
    assert m, stdout
    return tuple(int(x) for x in m.groups())


def _plain(out: Path, layout: Path, *extra) -> list[str]:
    return ["--scene", str(PLAIN_SCENE), "--layout", str(layout), "--out", str(out), *FAST, *extra]


def _state(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _done(out: Path) -> list[str]:
    return sorted(p.parent.name for p in (out / "samples").glob("*/meta.json"))


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def _path_on(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


# ----------------------------------------------------------------------------- lock

def test_second_run_into_a_held_out_is_refused(tmp_path, capsys, bop_fixture_dir):
    """Another process holds OUT: the CLI refuses at once (exit 2), names its pid and host,
    and changes nothing; once it is released the same command renders."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom polar_render.runlock import hold\n"
                               "with hold(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n",
                               str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _state(out)
        rc, _, err = _cli(capsys, *_plain(out, bop_fixture_dir))
        assert rc == 2, err
        assert "Traceback" not in err
        assert f"{out}: another run holds this OUT (pid {holder.pid} on host " in err, err
        assert _state(out) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    rc, stdout, err = _cli(capsys, *_plain(out, bop_fixture_dir))
    assert rc == 0, err
    assert _counts(stdout) == (3, 0, 0)


def test_run_holds_out_while_it_renders(tmp_path, monkeypatch, bop_fixture_dir):
    """The lock is held for the whole run (here: while a sample renders) and released after."""
    out = tmp_path / "out"
    real, seen = pipeline.render_images, []

    def probe(*a, **kw):
        with pytest.raises(runlock.RunLockedError, match=rf"pid {os.getpid()} on host"):
            with runlock.hold(out):
                pass
        seen.append(True)
        return real(*a, **kw)

    monkeypatch.setattr(pipeline, "render_images", probe)
    s = run(RenderRequest(scene=PLAIN_SCENE, out=out, layout=bop_fixture_dir, n=2, res=(64, 48), spp=1,
                          progress=False))
    assert (s.rendered, len(seen)) == (2, 2)
    with runlock.hold(out):   # released
        pass
    assert not list(out.glob(runlock.HOLDER_PREFIX + "*"))


def test_shards_share_out_but_each_shard_runs_once(tmp_path, capsys, bop_fixture_dir):
    out = tmp_path / "out"
    with runlock.hold(out, (0, 2)):
        with runlock.hold(out, (1, 2)):        # another shard of the same run: allowed
            pass
        with pytest.raises(runlock.RunLockedError, match=r"shard 0/2 is already being rendered \(pid"):
            with runlock.hold(out, (0, 2)):
                pass
        rc, _, err = _cli(capsys, *_plain(out, bop_fixture_dir))   # unsharded while a shard runs
        assert rc == 2 and "another run holds this OUT" in err and "shard 0/2" in err, err
        rc, stdout, err = _cli(capsys, *_plain(out, bop_fixture_dir, "--shard", "1/2"))
        assert rc == 0, err
        assert _counts(stdout) == (1, 0, 0) and _done(out) == ["000001"]
    rc, stdout, err = _cli(capsys, *_plain(out, bop_fixture_dir, "--shard", "0/2"))
    assert rc == 0 and _counts(stdout) == (2, 0, 0), err
    assert _done(out) == ["000000", "000001", "000002"]


# ----------------------------------------------------------------------------- relocation

def test_moved_run_resumes_and_still_validates(tmp_path, capsys):
    """run.json and meta.json hold no absolute path: a run moved elsewhere resumes (skips
    its finished samples, reuses its own layout) and still refuses another configuration."""
    a = tmp_path / "a" / "out"
    args = ["--scene", "usb_brick", "--n", "2", "--seed", "4", *FAST]
    rc, _, err = _cli(capsys, *args, "--out", str(a))
    assert rc == 0, err
    docs = [json.loads((a / "run.json").read_text())] + [json.loads(p.read_text()) for p in a.glob("samples/*/meta.json")]
    for doc in docs:
        absolute = [s for s in _strings(doc) if s.startswith(str(tmp_path)) or s.startswith("/")]
        assert absolute == [], absolute
    assert docs[0]["layout"] == "layout" and docs[1]["frame"]["layout"] == "layout"

    b = tmp_path / "moved" / "elsewhere"
    b.parent.mkdir()
    shutil.move(a.parent, b)
    b = b / "out"
    finished = {n: (b / "samples" / n / "meta.json").stat().st_mtime_ns for n in _done(b)}
    layout_before = _state(b / "layout")
    rc, stdout, err = _cli(capsys, *args, "--out", str(b))
    assert rc == 0, err
    assert _counts(stdout) == (0, 2, 0)
    assert {n: (b / "samples" / n / "meta.json").stat().st_mtime_ns for n in _done(b)} == finished
    assert _state(b / "layout") == layout_before
    m = read_manifest(b)
    assert m["layout"] == str((b / "layout").resolve())
    assert Path(m["scene_file"]).is_file()   # scenes/usb_brick/scene.yaml, found from the moved OUT

    rc, stdout, err = _cli(capsys, *[x if x != "4" else "5" for x in args], "--out", str(b))
    assert rc == 2 and "already holds a run with different seed" in err, err
    rc, stdout, err = _cli(capsys, *[x if x != "2" else "3" for x in args], "--out", str(b))
    assert rc == 0 and _counts(stdout) == (1, 2, 0), err


def test_given_layout_is_matched_by_content(tmp_path, capsys, bop_fixture_dir):
    """A run of a given layout records the layout's path relative to OUT and its digest:
    moving OUT together with the layout resumes; a changed layout is refused."""
    a = tmp_path / "a"
    shutil.copytree(bop_fixture_dir, a / "bop", copy_function=shutil.copyfile)
    for p in [a / "bop", *(a / "bop").rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    rc, _, err = _cli(capsys, *_plain(a / "out", a / "bop", "--n", "2"))
    assert rc == 0, err
    assert json.loads((a / "out" / "run.json").read_text())["layout"] == "../bop"
    b = tmp_path / "b"
    shutil.move(a, b)
    rc, stdout, err = _cli(capsys, *_plain(b / "out", b / "bop", "--n", "2"))
    assert rc == 0 and _counts(stdout) == (0, 2, 0), err
    gt = b / "bop" / "train_pbr" / "000000" / "scene_gt.json"
    d = json.loads(gt.read_text())
    d["0"][0]["cam_t_m2c"][2] += 5.0
    gt.write_text(json.dumps(d))
    before = _state(b / "out")
    rc, _, err = _cli(capsys, *_plain(b / "out", b / "bop", "--n", "2"))
    assert rc == 2 and "already holds a run with different layout" in err, err
    assert _state(b / "out") == before


# ----------------------------------------------------------------------------- permissions

def test_no_world_writable_files_and_readable_layout(tmp_path):
    """Even with umask 000 nothing under OUT is world-writable; with umask 022 the layout
    files are readable by others (0644), like every other file of the run."""
    def render(out: Path, umask: int):
        r = subprocess.run([sys.executable, "-m", "polar_render.cli", "render", "--scene", "usb_brick", "--n", "1",
                            "--out", str(out), *FAST, "--quiet"], capture_output=True, text=True, timeout=300,
                           preexec_fn=lambda: os.umask(umask))
        assert r.returncode == 0, r.stderr[-3000:]
        return [out, *out.rglob("*")]

    for p in render(tmp_path / "open", 0o000):
        mode = p.lstat().st_mode & 0o777
        assert mode & 0o002 == 0, (p, oct(mode))
    for p in render(tmp_path / "usual", 0o022):
        mode = p.lstat().st_mode & 0o777
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))
    assert (tmp_path / "usual" / "layout" / "models" / "obj_000001.ply").is_file()


# ----------------------------------------------------------------------------- full disk

def _enospc_when(pred):
    real = io._write_all

    def write_all(fd, data):
        if pred(_path_on(fd)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)
    return write_all


def _partials(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith(".part") or p.name.startswith(".tmp-")]


def test_disk_full_while_writing_the_layout(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(io, "_write_all", _enospc_when(lambda p: "/layout/" in p))
    rc, _, err = _cli(capsys, "--scene", "usb_brick", "--n", "2", "--out", str(out), *FAST)
    assert rc == 2, err
    assert "Traceback" not in err
    assert re.search(r"error: \S*/out/layout/camera\.json: no space left on device", err), err
    assert _partials(out) == []
    assert [p for p in (out / "layout").rglob("*") if p.is_file()] == []   # nothing under a final name
    assert not (out / "run.json").exists() and not (out / "samples").exists()


def test_disk_full_while_writing_a_sample(tmp_path, capsys, monkeypatch, bop_fixture_dir):
    """Sample 1 hits a full disk: the run stops (exit 1) naming the file, sample 0 stays
    complete, nothing partial is left, the lock is released and a rerun finishes the rest."""
    out = tmp_path / "out"
    monkeypatch.setattr(io, "_write_all", _enospc_when(lambda p: "/samples/.tmp-000001--" in p))
    rc, stdout, err = _cli(capsys, *_plain(out, bop_fixture_dir))
    assert rc == 1, err
    assert "Traceback" not in err
    assert re.search(r"error: \S*/samples/\.tmp-000001--\S*/stokes\.tiff: no space left on device; stopped after "
                     r"1 new samples", err), err
    assert _done(out) == ["000000"]
    assert sorted(os.listdir(out / "samples")) == ["000000"]
    assert _partials(out) == []
    monkeypatch.undo()
    rc, stdout, err = _cli(capsys, *_plain(out, bop_fixture_dir))
    assert rc == 0 and _counts(stdout) == (2, 1, 0), err


def test_short_writes_are_completed_and_a_stalled_write_is_a_full_disk(tmp_path, monkeypatch):
    """The kernel reports a full disk as a short write first: short writes are retried,
    a write that makes no progress is ENOSPC, named by file."""
    real, calls = os.write, []

    def short(fd, data):
        calls.append(len(data))
        return real(fd, bytes(data[: max(1, len(data) // 2)]))

    monkeypatch.setattr(io.os, "write", short)
    io.write_bytes(tmp_path / "a.bin", bytes(range(256)) * 4)
    monkeypatch.setattr(io.os, "write", real)
    assert (tmp_path / "a.bin").read_bytes() == bytes(range(256)) * 4 and len(calls) > 5

    monkeypatch.setattr(io.os, "write", lambda fd, data: 0 if len(data) < 600 else real(fd, bytes(data[:500])))
    with pytest.raises(io.NoSpaceError, match=r"b\.bin: no space left on device"):
        io.write_bytes(tmp_path / "b.bin", b"x" * 1000)
    monkeypatch.setattr(io.os, "write", real)
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


# ----------------------------------------------------------------------------- disk estimate

def test_free_space_checked_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from polar_render import limits

    need = 2 * pipeline.sample_bytes(64, 48, 3)
    monkeypatch.setattr(limits.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12, need // 2))
    out = tmp_path / "out"
    rc, _, err = _cli(capsys, "--scene", "usb_brick", "--n", "2", "--out", str(out), *FAST)
    assert rc == 2, err
    assert f"{out}: rendering 2 samples at 64x48 and their layout needs about" in err and "free" in err, err
    assert not out.exists()


def test_sample_size_estimate_is_a_close_upper_bound(tmp_path, bop_fixture_dir):
    """The estimate must not be exceeded by a real sample, nor overstate it wildly."""
    out = tmp_path / "out"
    run(RenderRequest(scene=PLAIN_SCENE, out=out, layout=bop_fixture_dir, n=1, res=(96, 72), spp=1, progress=False))
    actual = sum(p.stat().st_size for p in (out / "samples" / "000000").iterdir())
    estimate = pipeline.sample_bytes(96, 72, 3)
    assert actual <= estimate <= 1.5 * actual, (actual, estimate)


def test_blenderproc_full_disk_is_named(tmp_path, monkeypatch):
    """`blenderproc run` dying of a full disk is reported as such (not as a bare exit status)."""
    from polar_render import blenderproc_compat, layout_blenderproc
    from polar_render.config import load_scene

    blender = tmp_path / "blender-4.2.0-linux-x64"
    blender.mkdir()
    monkeypatch.setattr(blenderproc_compat, "versions", lambda: {"blenderproc": "2.8.0", "bpy": None})
    monkeypatch.setattr(layout_blenderproc.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, stderr="Traceback ...\nOSError: [Errno 28] No space left on device: '/x/000000/depth.png'\n"))
    cfg = load_scene("usb_brick")
    lcfg = pipeline.layout_config(cfg, (64, 48))
    models = pipeline.object_models_mm(cfg, lcfg.instances)
    with pytest.raises(io.NoSpaceError, match=r"lay: no space left on device while BlenderProc wrote the layout"):
        layout_blenderproc.generate_layout_blenderproc(tmp_path / "lay", models, lcfg, 0, range(1), progress=False,
                                                       blender=str(blender))
    monkeypatch.setattr(layout_blenderproc.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 3, stderr="Blender crashed\n"))
    with pytest.raises(layout_blenderproc.LayoutBackendError, match="failed with exit status 3"):
        layout_blenderproc.generate_layout_blenderproc(tmp_path / "lay", models, lcfg, 0, range(1), progress=False,
                                                       blender=str(blender))
