"""End-to-end tests of the render pipeline and CLI: resume, refusal, bad input, edge cases.

Everything renders at 64x48 with 2 spp so the file runs in well under a minute.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from polar_render import io

from polar_render.outputs import load_sample
from polar_render.run.request import RenderRequest
from polar_render.run.runner import run
from polar_render.physics.polarization import aolp, dolp

from tests.render.run.conftest import FAST, cli_render, done_samples, plain_args, summary_counts

REPO = Path(__file__).resolve().parents[3]
PY = sys.executable
RES = "64x48"
W, H = 64, 48
SPP = "2"

PLAIN_SCENE = """\
name: plain
materials: {default: {type: pplastic, color: [0.2, 0.8], alpha: [0.05, 0.2]}}
render: {spp: 4, max_depth: 4}
"""
DARK_SCENE = PLAIN_SCENE.replace("name: plain", "name: dark") + """\
lights: {spot: {intensity: 0.0}}
background: {environment: {radiance: 0.0}}
"""


# ----------------------------------------------------------------------------- helpers

def _scene_file(tmp_path: Path, text: str = PLAIN_SCENE, name: str = "plain.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _bop_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def _cli_cmd(*args) -> list[str]:
    return [PY, "-m", "polar_render.cli", "render", *args, "--quiet"]


def _done(samples: Path) -> list[str]:
    if not samples.is_dir():
        return []
    return sorted(d.name for d in samples.iterdir() if not d.name.startswith(".") and (d / "meta.json").is_file())


def _assert_samples_equal(a: dict, b: dict, rtol=1e-4, atol=1e-6) -> tuple[float, float]:
    """Masks and depth exactly equal, Stokes within render tolerance; returns (max abs, max rel) diff."""
    for k in ("object_mask", "part_mask", "depth"):
        assert a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), k
    sa, sb = a["stokes"].astype(np.float64), b["stokes"].astype(np.float64)
    assert sa.shape == sb.shape
    assert np.allclose(sa, sb, rtol=rtol, atol=atol), float(np.max(np.abs(sa - sb)))
    ma, mb = a["meta"], b["meta"]
    assert ma["sampled"] == mb["sampled"]
    assert ma["parts"] == mb["parts"]
    fa, fb = dict(ma["frame"]), dict(mb["frame"])
    fa.pop("layout"), fb.pop("layout")          # absolute path of each run's own layout
    assert fa == fb
    diff = np.abs(sa - sb)
    rel = diff / np.maximum(np.abs(sb), 1e-6)
    return float(diff.max()), float(rel[np.abs(sb) > 1e-6].max(initial=0.0))


@pytest.fixture(scope="module")
def rendered_run(tmp_path_factory, bop_fixture_dir):
    """One tiny finished run of the plain scene on the BlenderProc fixture (3 frames)."""
    root = tmp_path_factory.mktemp("rendered")
    scene = _scene_file(root)
    out = root / "out"
    s = run(RenderRequest(scene=scene, out=out, n=2, res=(W, H), spp=int(SPP),
                                            layout=bop_fixture_dir, progress=False))
    assert (s.rendered, s.skipped, s.failed) == (2, 0, {})
    return scene, out


# ----------------------------------------------------------------------------- 1. resume

def test_interrupted_batch_resumes_exactly(tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    args = ["--scene", "usb_brick", "--n", "6", "--res", RES, "--spp", SPP, "--seed", "3"]
    samples = out / "samples"

    proc = subprocess.Popen(_cli_cmd(*args, "--out", str(out)), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(_done(samples)) < 2:
            assert proc.poll() is None, f"CLI ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no samples appeared"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # Killed mid-batch: every sample directory that exists is complete (atomic rename).
    finished = _done(samples)
    visible = sorted(d.name for d in samples.iterdir() if not d.name.startswith("."))
    assert visible == finished
    assert 2 <= len(finished) < 6, finished
    mtimes = {n: (samples / n / "meta.json").stat().st_mtime_ns for n in finished}

    r = subprocess.run(_cli_cmd(*args, "--out", str(out)), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert summary_counts(r.stdout) == (6 - len(finished), len(finished), 0)
    assert _done(samples) == [f"{i:06d}" for i in range(6)]
    assert not list(samples.glob(".tmp-*")), "leftover temporary directories"
    assert not list(samples.rglob(".*.part")), "leftover temporary files"
    for n, t in mtimes.items():
        assert (samples / n / "meta.json").stat().st_mtime_ns == t, f"sample {n} was redone"

    r = subprocess.run(_cli_cmd(*args, "--out", str(ref)), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    worst_abs = worst_rel = 0.0
    for i in range(6):
        a = load_sample(samples / f"{i:06d}")
        b = load_sample(ref / "samples" / f"{i:06d}")
        d_abs, d_rel = _assert_samples_equal(a, b)
        worst_abs, worst_rel = max(worst_abs, d_abs), max(worst_rel, d_rel)
    print(f"resumed vs one-go run: max |dStokes| = {worst_abs:.3g}, max rel = {worst_rel:.3g}")


# ----------------------------------------------------------------------------- 2. refusal


# ----------------------------------------------------------------------------- 3. bad BOP input

def _gt(root):
    return root / "train_pbr" / "000000" / "scene_gt.json"


def _bad_json(root):
    p = _gt(root)
    p.write_text(p.read_text()[:-40])


def _missing_model(root):
    (root / "models" / "obj_000002.ply").unlink()


def _not_orthonormal(root):
    _edit_json(_gt(root), lambda d: d["1"][0].__setitem__("cam_R_m2c", [1.05 * v for v in d["1"][0]["cam_R_m2c"]]))


def _metres(root):
    _edit_json(_gt(root), lambda d: d["0"][1].__setitem__("cam_t_m2c", [v / 1000 for v in d["0"][1]["cam_t_m2c"]]))


BAD_BOP = {
    "malformed_json": (_bad_json, ["scene_gt.json", "invalid JSON"]),
    "missing_model": (_missing_model, ["scene_gt.json", "'0'[1].obj_id", "obj_000002.ply"]),
    "not_orthonormal": (_not_orthonormal, ["scene_gt.json", "'1'[0].cam_R_m2c", "not a rotation"]),
    "metres": (_metres, ["scene_gt.json", "'0'[1].cam_t_m2c", "metres"]),
}


@pytest.mark.parametrize("case", sorted(BAD_BOP))
def test_bad_bop_input_via_cli(tmp_path, capsys, bop_fixture_dir, case):
    corrupt, needles = BAD_BOP[case]
    bop = _bop_copy(bop_fixture_dir, tmp_path / "bop")
    corrupt(bop)
    out = tmp_path / "out"
    rc, _, err = cli_render(capsys, "--scene", str(_scene_file(tmp_path)), "--res", RES, "--spp", SPP,
                      "--out", str(out), "--layout", str(bop))
    assert rc == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for s in needles:
        assert s in err, (s, err)
    assert str(bop) in err
    assert not (out / "samples").exists()
    assert not (out / "run.json").exists()


# ----------------------------------------------------------------------------- 4. unrenderable frames

def test_non_square_pixels_fail_each_sample(tmp_path, capsys, bop_fixture_dir):
    bop = _bop_copy(bop_fixture_dir, tmp_path / "bop")
    _edit_json(bop / "camera.json", lambda d: d.__setitem__("fy", 660.0))
    _edit_json(_gt(bop).with_name("scene_camera.json"),
               lambda d: [v["cam_K"].__setitem__(4, 660.0) for v in d.values()])
    scene = _scene_file(tmp_path)

    s = run(RenderRequest(scene=scene, out=tmp_path / "o1", res=(W, H), spp=2,
                                            layout=bop, progress=False))
    assert s.rendered == 0 and sorted(s.failed) == [0, 1, 2]
    assert all("non-square pixels" in why for why in s.failed.values()), s.failed
    assert _done(tmp_path / "o1" / "samples") == []

    rc, stdout, err = cli_render(capsys, "--scene", str(scene), "--res", RES, "--spp", SPP,
                           "--out", str(tmp_path / "o2"), "--layout", str(bop))
    assert rc == 1
    assert summary_counts(stdout) == (0, 0, 3)
    for i in range(3):
        assert re.search(rf"sample {i}: SceneError: non-square pixels.*fx=60(\.0)?, fy=66(\.0)?", err), err
    assert "Traceback" not in err
    assert not list((tmp_path / "o2").glob("samples/*"))


def test_frames_without_world_pose_fail_clearly(tmp_path, capsys, bop_fixture_dir):
    bop = _bop_copy(bop_fixture_dir, tmp_path / "bop")

    def drop_w2c(d):
        for v in d.values():
            del v["cam_R_w2c"], v["cam_t_w2c"]

    _edit_json(_gt(bop).with_name("scene_camera.json"), drop_w2c)
    rc, stdout, err = cli_render(capsys, "--scene", str(_scene_file(tmp_path)), "--n", "2", "--res", RES,
                           "--spp", SPP, "--out", str(tmp_path / "out"), "--layout", str(bop))
    assert rc == 1, err
    assert summary_counts(stdout) == (0, 0, 2)
    for i in range(2):
        assert re.search(rf"sample {i}: SceneError: .*cam_R_w2c", err), err
    assert "Traceback" not in err
    assert not list((tmp_path / "out").glob("samples/*"))


# ----------------------------------------------------------------------------- 5. zero intensity

def test_polarization_zero_intensity_unit():
    s0 = np.array([0.0, 0.0, 1e-12, 1.0, 2.0, -0.0], np.float32)
    s1 = np.array([0.0, 1e-9, 1e-13, 0.3, 0.0, 0.0], np.float32)
    s2 = np.array([0.0, -1e-9, 0.0, 0.4, -2.0, 0.0], np.float32)
    st = np.stack([s0, s1, s2, np.zeros_like(s0)])
    with np.errstate(all="raise"):
        d, a = dolp(st), aolp(st)
    assert d.dtype == np.float32 and a.dtype == np.float32
    assert np.all(np.isfinite(d)) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(d[[0, 1, 2, 5]], 0.0)
    np.testing.assert_array_equal(a[[0, 1, 2, 5]], 0.0)
    # (the sign of AoLP is a convention pinned in test_physics.py; only magnitudes here)
    assert d[3] == pytest.approx(0.5) and abs(a[3]) == pytest.approx(0.5 * np.arctan2(0.4, 0.3))
    assert d[4] == pytest.approx(1.0) and abs(a[4]) == pytest.approx(np.pi / 4)
    # an all-black image
    black = np.zeros((4, 5, 7, 3), np.float32)
    with np.errstate(all="raise"):
        assert not np.any(dolp(black)) and not np.any(aolp(black))


def test_black_render_has_zero_dolp_aolp(tmp_path, bop_fixture_dir):
    out = tmp_path / "out"
    s = run(RenderRequest(scene=_scene_file(tmp_path, DARK_SCENE, "dark.yaml"), out=out, n=1,
                                            res=(W, H), spp=2, layout=bop_fixture_dir, progress=False))
    assert (s.rendered, s.failed) == (1, {})
    smp = load_sample(out / "samples" / "000000")
    meta = smp["meta"]
    assert meta["sampled"]["spot"]["intensity"] == 0.0
    assert meta["sampled"]["environment"]["radiance"] == 0.0
    assert (smp["object_mask"] > 0).any(), "objects should still be in view (only unlit)"
    assert not np.any(smp["stokes"]) and not np.any(smp["intensity"])
    for k in ("dolp", "aolp"):
        assert smp[k].shape == (H, W, 3)
        assert np.all(np.isfinite(smp[k])) and not np.any(smp[k]), k
    for a in (0, 45, 90, 135):
        assert not np.any(smp[f"pol{a}"])
    assert meta["zero_intensity_pixels"] == H * W
    assert meta["nonfinite_stokes_values"] == 0
    assert np.isfinite(meta["exposure_scale"]) and meta["exposure_scale"] > 0


# ----------------------------------------------------------------------------- 6. corrupted outputs

def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _garbage(p: Path):
    p.write_bytes(b"\x89PNG not really" * 8)


@pytest.mark.parametrize("fname,damage", [("object_mask.png", _truncate), ("pol45.png", _garbage),
                                          ("part_mask.png", lambda p: p.write_bytes(b"")),
                                          ("stokes.tiff", _truncate), ("depth.tiff", _garbage)],
                         ids=["png-truncated", "png-garbage", "png-empty", "tiff-truncated", "tiff-garbage"])
def test_load_sample_corrupted_file_names_it(tmp_path, rendered_run, fname, damage):
    _, out = rendered_run
    d = shutil.copytree(out / "samples" / "000000", tmp_path / "s")
    load_sample(d)  # the copy is fine
    damage(d / fname)
    with pytest.raises(OSError) as ei:
        load_sample(d)
    assert str(d / fname) in str(ei.value)


def test_sample_without_meta_is_redone(tmp_path, rendered_run, bop_fixture_dir):
    scene, src = rendered_run
    out = shutil.copytree(src, tmp_path / "out")
    samples = out / "samples"
    t0 = (samples / "000000" / "meta.json").stat().st_mtime_ns
    ref = load_sample(samples / "000001")
    # A partial sample as an older version might have left it: files but no meta.json.
    (samples / "000001" / "meta.json").unlink()
    _garbage(samples / "000001" / "object_mask.png")
    (samples / "000001" / "stale.txt").write_text("old")
    s = run(RenderRequest(scene=scene, out=out, n=2, res=(W, H), spp=int(SPP),
                                            layout=bop_fixture_dir, progress=False))
    assert (s.rendered, s.skipped, s.failed) == (1, 1, {})
    assert (samples / "000000" / "meta.json").stat().st_mtime_ns == t0
    assert not (samples / "000001" / "stale.txt").exists()
    _assert_samples_equal(load_sample(samples / "000001"), ref)
    assert not list(samples.glob(".tmp-*"))


# ----------------------------------------------------------------------------- 7. hooks (benchmarks)

def test_hooks_observe_the_loop_without_changing_it(tmp_path, bop_fixture_dir):
    from polar_render.outputs import sample_dir, stokes_array
    from polar_render.run.request import RequestError
    from polar_render.run.runner import RunHooks

    events, rendered = [], {}

    def on_render(i, scene, images, appearance, mode, seconds):
        assert mode == "rgb" and seconds > 0 and images.stokes.shape == (4, H, W, 3)
        assert isinstance(appearance["render_seed"], int) and scene.structure.slots
        rendered[i] = images.stokes.copy()
        events.append(("render", i))

    hooks = RunHooks(on_sample=lambda i: events.append(("sample", i)), on_render=on_render,
                     on_write=lambda i, s: events.append(("write", i)) if s > 0 else None)
    out = tmp_path / "o"
    req = dict(scene=_scene_file(tmp_path), layout=bop_fixture_dir, n=2, res=(W, H), spp=1, progress=False)
    s = run(RenderRequest(out=out, **req), hooks)
    assert (s.rendered, s.failed) == (2, {})
    assert [e for e in events if e[0] != "write"] == [("sample", 0), ("render", 0), ("sample", 1), ("render", 1),
                                                      ("sample", None)]
    assert sorted(e for e in events if e[0] == "write") == [("write", 0), ("write", 1)]
    for i in range(2):   # what the hook saw is what was written
        assert np.array_equal(stokes_array(load_sample(sample_dir(out, i))), rendered[i])
    events.clear()
    assert run(RenderRequest(out=out, **req), hooks).skipped == 2   # complete samples: boundaries only
    assert events == [("sample", 0), ("sample", 1), ("sample", None)]
    with pytest.raises(RequestError, match="^hooks: "):
        run(RenderRequest(out=tmp_path / "w", workers=2, **req), hooks)


def _path_on(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


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
    rc, _, err = cli_render(capsys, "--scene", "usb_brick", "--n", "2", "--out", str(out), *FAST)
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
    rc, stdout, err = cli_render(capsys, *plain_args(out, bop_fixture_dir))
    assert rc == 1, err
    assert "Traceback" not in err
    assert re.search(r"error: \S*/samples/\.tmp-000001--\S*/stokes\.tiff: no space left on device; stopped after "
                     r"1 new samples", err), err
    assert done_samples(out) == ["000000"]
    assert sorted(os.listdir(out / "samples")) == ["000000"]
    assert _partials(out) == []
    monkeypatch.undo()
    rc, stdout, err = cli_render(capsys, *plain_args(out, bop_fixture_dir))
    assert rc == 0 and summary_counts(stdout) == (2, 1, 0), err
