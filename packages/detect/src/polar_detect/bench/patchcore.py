"""Sequential vs original PatchCore: peak training memory, training time, AUROC.

    python -m polar_detect.bench.patchcore [--n 50] [--size 256] [--quick]

For N and 4N training images (same resolution, synthetic brushed plates with obvious
anomalies, generated on access so the dataset holds no pixels) each (method, N) is
trained in a fresh subprocess. Memory = peak RSS during ``fit`` minus RSS just before it
(VmHWM after resetting it through /proc/self/clear_refs), with glibc's mmap threshold fixed
(4 MiB) so freed large buffers go back to the OS. The backbone is loaded and run three
times before the baseline is taken, so the number is what training adds on top of one
warm forward pass: features, coreset or memory bank, distance chunks (activations that fit
in heap memory retained from the warm-up are not counted again). Not tracemalloc: torch's CPU allocations
bypass Python's allocator and would be invisible to it. Both methods use the same
backbone, batch size and test split; image and pixel AUROC are on that test split.
Targets (issue 6): Sequential flat in N and >= 5x below the original at 4N; AUROC within
1 point.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# fixed (non-adaptive) glibc mmap threshold: buffers >= 4 MiB are mmapped and returned to the
# OS when freed, so RSS tracks them; smaller ones come from the heap.
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": str(4 << 20)}


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(spec: dict) -> dict:
    """Runs inside the subprocess: train one model, measure, evaluate."""
    import torch
    from polar_detect.metrics import binary_auroc as auroc
    from polar_detect.models.patchcore import PatchCore, SequentialPatchCore
    from polar_detect.models.patchcore.synth import SyntheticPlates
    torch.set_num_threads(spec.get("threads", 1))
    train = SyntheticPlates(spec["n"], spec["size"], 0.0, seed=spec["seed"], split="train")
    if spec["method"] == "sequential":
        model = SequentialPatchCore(coreset_size=spec["coreset_size"], batch_size=spec["batch"])
        fit_kw = {"epochs": spec["epochs"], "early_stop": True}
    else:
        model = PatchCore(ratio=spec["ratio"], batch_size=spec["batch"])
        fit_kw = {}
    # warm-up: allocator pools, conv workspaces, lazy init -- not part of the training cost
    with torch.no_grad():
        for _ in range(3):
            model.patch_features(torch.stack([train[0]["image"]] * spec["batch"]))
    import gc
    gc.collect()
    if not _reset_peak():
        raise RuntimeError("cannot reset peak RSS (/proc/self/clear_refs)")
    base = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    model.fit(train, **fit_kw)
    seconds = time.perf_counter() - t0
    peak = _rss_kib("VmHWM")
    out = {**spec, "peak_mib": (peak - base) / 1024, "fit_s": seconds,
           "memory_points": len(model.memory), "history": model.history}
    if spec.get("test", 0):
        test = SyntheticPlates(spec["test"], spec["size"], 0.5, seed=spec["seed"], split="test")
        s, y, pm, px = [], [], [], []
        for it, sc, m in model.predict_dataset(test):
            s.append(sc)
            y.append(it["label"])
            pm.append(m.numpy().ravel())
            px.append(it["mask"].numpy().ravel() > 0.5)
        out["image_auroc"] = auroc(s, y)
        out["pixel_auroc"] = auroc(np.concatenate(pm), np.concatenate(px))
    return out


def run_child(spec: dict, timeout: float = 600) -> dict:
    env = {**os.environ, **MMAP_ENV}
    r = subprocess.run([sys.executable, "-m", "polar_detect.bench.patchcore", "--child",
                        json.dumps(spec)], capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"bench child failed ({spec}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m polar_detect.bench.patchcore")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=25, help="N (the larger run uses 4N)")
    ap.add_argument("--size", type=int, default=256, help="image side (pixels)")
    ap.add_argument("--test", type=int, default=24, help="test images (half anomalous)")
    ap.add_argument("--coreset-size", type=int, default=1024)
    ap.add_argument("--ratio", type=float, default=0.01, help="original PatchCore coreset ratio")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (both methods)")
    ap.add_argument("--quick", action="store_true", help="N=8, 128 px (smoke run)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.quick:
        args.n, args.size, args.test, args.coreset_size = 8, 128, 16, 512
    rows = []
    for n in (args.n, 4 * args.n):
        for method in ("sequential", "original"):
            spec = {"threads": args.threads, "method": method, "n": n, "size": args.size, "test": args.test,
                    "coreset_size": args.coreset_size, "ratio": args.ratio, "epochs": args.epochs,
                    "batch": args.batch, "seed": args.seed}
            r = run_child(spec)
            rows.append(r)
            print(f"  {method:10s} N={n:4d}: peak {r['peak_mib']:7.1f} MiB  fit {r['fit_s']:6.1f} s  "
                  f"|M|={r['memory_points']:5d}  image AUROC {r['image_auroc']:.3f}  "
                  f"pixel AUROC {r['pixel_auroc']:.3f}", file=sys.stderr, flush=True)
    by = {(r["method"], r["n"]): r for r in rows}
    n1, n4 = args.n, 4 * args.n
    print(f"\nSequential vs original PatchCore, {args.size}x{args.size} synthetic plates, "
          f"efficientnet_lite0, batch {args.batch}, {args.threads} thread(s), |M|={args.coreset_size}, "
          f"ratio {args.ratio}, {args.epochs} epoch(s) max, test {args.test} images "
          f"(peak = RSS high-water mark during fit minus RSS before it)")
    print(f"{'method':12s}{'N':>6s}{'peak MiB':>10s}{'fit s':>8s}{'|M|':>7s}{'img AUROC':>11s}{'px AUROC':>10s}")
    for r in rows:
        print(f"{r['method']:12s}{r['n']:6d}{r['peak_mib']:10.1f}{r['fit_s']:8.1f}"
              f"{r['memory_points']:7d}{r['image_auroc']:11.3f}{r['pixel_auroc']:10.3f}")
    s1, s4 = by[("sequential", n1)], by[("sequential", n4)]
    o4 = by[("original", n4)]
    growth = s4["peak_mib"] / max(s1["peak_mib"], 1e-9)
    ratio = o4["peak_mib"] / max(s4["peak_mib"], 1e-9)
    d_img = abs(s4["image_auroc"] - o4["image_auroc"]) * 100
    d_px = abs(s4["pixel_auroc"] - o4["pixel_auroc"]) * 100
    print(f"sequential peak 4N/N = {growth:.2f} (target ~1: flat); original/sequential at 4N = "
          f"{ratio:.1f}x (target >= 5x); |dAUROC| at 4N: image {d_img:.1f}, pixel {d_px:.1f} "
          f"points (target <= 1)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "growth": growth, "ratio": ratio}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
