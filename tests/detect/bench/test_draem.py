"""Smoke test of the DRÆM benchmark (polar_detect.bench.draem; timed runs are ``make bench``):
the numbers it reports are the quotients of the times it measures, and the parameter count is
the model's. A fake clock advancing 1 s per reading makes every interval exactly 1 s."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import torch

from polar_detect.bench import draem as bench
from polar_detect.models.draem.model import DRAEM, WIDTHS


def test_reported_numbers_are_consistent(monkeypatch, one_thread):
    clock = itertools.count()
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    r = bench.bench_one(WIDTHS["small"], batch=2, size=32, steps=3, device=torch.device("cpu"))
    assert r["batch"] == 2
    assert r["step_s"] == 1.0                       # mean of the 3 timed steps (warm-up left out)
    assert r["infer_ips"] == 3 * 2 / 1.0            # max(2, steps) passes x batch / elapsed
    assert r["params"] == sum(p.numel() for p in DRAEM(3, *WIDTHS["small"]).parameters())
    assert next(clock) == 1 + 2 * 3 + 2             # warm-up start, 3 timed steps, 1 inference interval
