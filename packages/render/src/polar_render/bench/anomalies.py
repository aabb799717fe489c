"""``make bench`` part: seconds per sample for usb_brick with anomalies vs without.

Both configurations are the repository's usb_brick scene; "with" forces every sample to
be anomalous (``anomalies.probability = 1``), "without" removes the ``anomalies`` section
(no stain textures, no spare parts, no mask passes). They are run interleaved, A B A B,
in one process, so machine load affects both alike; the first sample of each run (scene
build and kernel compilation) is excluded. Target from issue 3: at most +20 %.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


from polar_render.config.scenes import load_scene, write_scene_variant
from polar_render.run.request import RenderRequest
from polar_render.run.runner import run


def _scene_file(tmp: Path, anomalies: dict | None, scene: str = "usb_brick") -> Path:
    """A copy of ``scene`` with its ``anomalies`` section replaced (None: removed)."""
    return write_scene_variant(tmp / ("with.yaml" if anomalies else "without.yaml"), scene, anomalies=anomalies)


PARTS = ("update_s", "stokes_render_s", "aov_render_s", "post_s")   # disjoint; they sum to the sample time


def _timings(out: Path) -> list[dict]:
    return [json.loads((d / "meta.json").read_text())["timings"] for d in sorted((out / "samples").iterdir())][1:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=5, help="samples per run (first excluded)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--spp", type=int, default=16)
    ap.add_argument("--res", default="640x480")
    args = ap.parse_args(argv)
    w, h = (int(x) for x in args.res.split("x"))
    cfg = load_scene("usb_brick")
    with_spec = {**cfg.anomalies, "probability": 1.0}
    times = {"with": [], "without": []}
    walls = {"with": [], "without": []}
    parts = {"with": [], "without": []}
    classes = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scenes = {"with": _scene_file(tmp, with_spec), "without": _scene_file(tmp, None)}
        for r in range(args.repeats):
            for name in ("without", "with"):
                out = tmp / f"{name}{r}"
                t = time.perf_counter()
                s = run(RenderRequest(scene=scenes[name], out=out, n=args.n, seed=r, spp=args.spp, res=(w, h),
                                      layout=None, progress=False))
                walls[name].append((time.perf_counter() - t) / max(s.rendered, 1))
                tim = _timings(out)
                times[name] += [sum(t[k] for k in PARTS) for t in tim]
                parts[name] += tim
                if name == "with":
                    for d in sorted((out / "samples").iterdir()):
                        classes += [a["class"] for a in json.loads((d / "meta.json").read_text())["anomaly_events"]]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"polar_render anomaly bench: usb_brick {w}x{h}, {args.spp} spp, {args.repeats} x {args.n - 1} samples each, "
          f"interleaved; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"  anomaly classes drawn: {', '.join(sorted(set(classes)))}")
    print(f"  {'':28s}{'without':>10s}{'with':>10s}")
    print(f"  {'render+masks s/sample (med)':28s}{med['without']:10.3f}{med['with']:10.3f}")
    print(f"  {'wall s/sample (mean/run)':28s}{statistics.mean(walls['without']):10.3f}{statistics.mean(walls['with']):10.3f}")
    for key in (*PARTS, "anomaly_apply_s", "anomaly_masks_s"):
        row = [statistics.mean(t.get(key, 0.0) for t in parts[n]) for n in ("without", "with")]
        print(f"  {'  ' + key + ' (mean)':28s}{row[0]:10.3f}{row[1]:10.3f}")
    ratio = med["with"] / med["without"]
    print(f"  ratio with/without: {ratio:.3f}  (target <= 1.20: {'OK' if ratio <= 1.2 else 'ABOVE TARGET'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
