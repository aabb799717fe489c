"""Batch execution: worker processes, shards and retries do not change any sample."""
from __future__ import annotations

import numpy as np

from polar_render.io import clean_partial
from polar_render.run import sample as run_sample
from polar_render.run.request import RenderRequest, parse_shard
from polar_render.run.runner import run

from tests.render.conftest import samples

KW = dict(scene="usb_brick", n=6, res=(96, 72), spp=2, seed=5, progress=False)
FILES = ("stokes", "pol0", "dolp", "aolp", "normals", "depth", "object_mask", "part_mask", "anomaly_mask")


def _equal_runs(a, b):
    sa, sb = samples(a), samples(b)
    assert [s["meta"]["index"] for s in sa] == [s["meta"]["index"] for s in sb] == list(range(6))
    for x, y in zip(sa, sb):
        for k in FILES:
            assert np.array_equal(x[k], y[k]), k
        assert x["meta"]["sampled"] == y["meta"]["sampled"]


def test_workers_and_shards_give_the_same_samples(tmp_path):
    one = tmp_path / "one"
    assert not run(RenderRequest(out=one, **KW)).failed
    two = tmp_path / "two"
    s = run(RenderRequest(out=two, workers=2, **KW))
    assert (s.rendered, s.failed) == (6, {})
    _equal_runs(one, two)
    sharded = tmp_path / "sharded"
    for k in range(3):
        s = run(RenderRequest(out=sharded, shard=(k, 3), **KW))
        assert s.rendered == 2
    _equal_runs(one, sharded)


def test_retry_then_report(tmp_path, monkeypatch):
    real = run_sample.render_images
    calls = {"n": 0}

    def flaky(scene, frame, appearance, mode, anomalies=None, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the second sample fails once
            raise RuntimeError("transient failure")
        return real(scene, frame, appearance, mode, anomalies, **kw)

    monkeypatch.setattr(run_sample, "render_images", flaky)
    s = run(RenderRequest(out=tmp_path / "r", **{**KW, "n": 3}))
    assert (s.rendered, s.failed) == (3, {})
    # a sample that always fails is reported after the bounded retries, the batch goes on
    def broken_frame_1(scene, frame, appearance, mode, anomalies=None, **kw):
        if frame.im_id == 1:
            raise RuntimeError("degenerate layout")
        return real(scene, frame, appearance, mode, anomalies, **kw)

    monkeypatch.setattr(run_sample, "render_images", broken_frame_1)
    s = run(RenderRequest(out=tmp_path / "r2", retries=2, **{**KW, "n": 3}))
    assert s.rendered == 2 and list(s.failed) == [1] and "degenerate layout" in s.failed[1]
    import json
    status = json.loads((tmp_path / "r2" / "run.json").read_text())["status"]
    assert (status["complete"], status["total"], status["missing"]) == (2, 3, [1])
    assert "degenerate layout" in status["failed_last_run"]["1"]


def test_parse_shard_and_live_tmp_dirs_are_kept(tmp_path):
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "x", "1/0"):
        try:
            parse_shard(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
    import os
    import socket

    host = socket.gethostname().replace("-", "_")
    live = tmp_path / f".tmp-000001--{host}--{os.getpid()}"
    dead = tmp_path / f".tmp-000002--{host}--999999999"
    other = tmp_path / f".tmp-000004--another_host--1"
    old = tmp_path / ".tmp-000003-12"
    for d in (live, dead, old, other):
        d.mkdir()
    assert clean_partial(tmp_path) == 2
    assert live.exists() and other.exists() and not dead.exists() and not old.exists()


def test_ray_executor_gives_the_same_samples(tmp_path):
    """EXECUTOR=ray with 2 workers on a local Ray instance (127.0.0.1) equals the local run."""
    one = tmp_path / "one"
    assert not run(RenderRequest(out=one, **KW)).failed
    ray_out = tmp_path / "ray"
    s = run(RenderRequest(out=ray_out, workers=2, executor="ray", **KW))
    assert (s.rendered, s.failed) == (6, {})
    _equal_runs(one, ray_out)


def test_killed_worker_then_rerun_gives_the_uninterrupted_set(tmp_path):
    """Kill one of two local worker processes mid-run: its unfinished samples are reported
    as failed (no hang), and a rerun renders exactly those, matching an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--scene", "usb_brick", "--n", "8", "--res", "96x72", "--spp", "2", "--seed", "5", "--quiet"]
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "polar_render.cli", "render", *args, "--out", str(ref)], check=True,
                   capture_output=True, timeout=300)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "polar_render.cli", "render", *args, "--out", str(out),
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "samples").glob("*/meta.json")):
        time.sleep(0.05)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = [int(c) for c in children
               if "spawn_main" in open(f"/proc/{c}/cmdline", "rb").read().decode(errors="replace")]
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    done = sorted(p.parent.name for p in (out / "samples").glob("*/meta.json"))
    if proc.returncode == 0:   # the killed worker had already finished its samples
        assert len(done) == 8
    else:
        assert proc.returncode == 1 and "worker failed" in err
    rerun = subprocess.run([sys.executable, "-m", "polar_render.cli", "render", *args, "--out", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{8 - len(done)} rendered, {len(done)} skipped" in rerun.stdout
    assert not list((out / "samples").glob(".tmp-*"))
    for a, b in zip(samples(ref), samples(out)):
        for k in FILES:
            assert np.array_equal(a[k], b[k]), k
