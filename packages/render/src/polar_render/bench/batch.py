"""``make bench`` part (issue 8): batch throughput and memory.

1. samples/s of usb_brick (anomalies off, 640x480, 16 spp) rendered by 1 and 2 local
   worker processes and by Ray with 2 workers, wall clock including worker start-up and
   the per-worker kernel compilation; scaling efficiency = (rate_2 / rate_1) / 2; Ray
   overhead = wall(Ray, 2) / wall(local, 2).
2. Resident memory (VmRSS) of one process after each of 200 samples of usb_brick with its
   anomalies on (every code path), small images; the bound checked is growth after
   sample 10 < 100 MB.
On a 2-core machine the Mitsuba LLVM backend already uses both cores in one process, so
two workers mostly add start-up cost here; the executors are built for machines with
more cores or GPUs.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from polar_render.run.request import RenderRequest
from polar_render.run.runner import RunHooks, run


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def throughput(n: int, res, spp: int) -> dict:
    from polar_render.bench.anomalies import _scene_file

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = _scene_file(tmp, None)
        for name, kw in (("local x1", {}), ("local x2", {"workers": 2}), ("ray x2", {"workers": 2, "executor": "ray"})):
            t = time.perf_counter()
            s = run(RenderRequest(scene=scene, out=tmp / name.replace(" ", "_"), n=n, res=res, spp=spp, seed=0,
                                  progress=False, **kw))
            wall = time.perf_counter() - t
            out[name] = {"wall_s": wall, "rate": s.rendered / wall, "failed": len(s.failed)}
    return out


def rss_over(n: int, res, spp: int) -> list[float]:
    """Resident memory (MB) after each of ``n`` rendered samples of usb_brick (anomalies on)."""
    rss = []
    hooks = RunHooks(on_render=lambda *_: rss.append(_rss_mb()))
    with tempfile.TemporaryDirectory() as tmp:
        run(RenderRequest(scene="usb_brick", out=Path(tmp) / "o", n=n, res=res, spp=spp, seed=1, progress=False),
            hooks)
    return rss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--rss-samples", type=int, default=200)
    args = ap.parse_args(argv)
    print(f"polar_render batch bench: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    tp = throughput(args.n, (640, 480), 16)
    print(f"  usb_brick 640x480 16 spp, {args.n} samples, wall incl. start-up and compile per worker")
    for k, v in tp.items():
        print(f"  {k:10s} {v['rate']:6.3f} samples/s  ({v['wall_s']:6.1f} s, {v['failed']} failed)")
    eff = tp["local x2"]["rate"] / tp["local x1"]["rate"] / 2
    print(f"  scaling efficiency (2 local workers): {eff:.2f}   Ray overhead vs local x2: "
          f"{tp['ray x2']['wall_s'] / tp['local x2']['wall_s']:.2f}x")
    rss = rss_over(args.rss_samples, (160, 120), 4)
    base = rss[min(9, len(rss) - 1)]
    growth = max(rss[10:] or [base]) - base
    marks = ", ".join(f"#{i + 1}: {rss[i]:.0f}" for i in (0, 9, len(rss) // 2 - 1, len(rss) - 1))
    print(f"  RSS over {len(rss)} samples (MB; usb_brick with anomalies, 160x120): {marks}; "
          f"growth after #10: {growth:.1f} MB (bound 100 MB: {'OK' if growth < 100 else 'ABOVE'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
