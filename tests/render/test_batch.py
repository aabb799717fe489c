"""Batch execution: worker processes, shards and retries do not change any sample."""
from __future__ import annotations

import numpy as np

from polar_render import pipeline
from polar_render.io import clean_partial
from polar_render.pipeline import RenderRequest, parse_shard, run

from .conftest import samples

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
    real = pipeline.render_images
    calls = {"n": 0}

    def flaky(scene, frame, appearance, mode, anomalies=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the second sample fails once
            raise RuntimeError("transient failure")
        return real(scene, frame, appearance, mode, anomalies)

    monkeypatch.setattr(pipeline, "render_images", flaky)
    s = run(RenderRequest(out=tmp_path / "r", **{**KW, "n": 3}))
    assert (s.rendered, s.failed) == (3, {})
    # a sample that always fails is reported after the bounded retries, the batch goes on
    def broken_frame_1(scene, frame, appearance, mode, anomalies=None):
        if frame.im_id == 1:
            raise RuntimeError("degenerate layout")
        return real(scene, frame, appearance, mode, anomalies)

    monkeypatch.setattr(pipeline, "render_images", broken_frame_1)
    s = run(RenderRequest(out=tmp_path / "r2", retries=2, **{**KW, "n": 3}))
    assert s.rendered == 2 and list(s.failed) == [1] and "degenerate layout" in s.failed[1]


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
