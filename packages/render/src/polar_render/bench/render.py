"""Render benchmark (``make bench``): layout, end-to-end pipeline and raw ``mi.render`` side by side.

Run as ``python -m polar_render.bench.render [--n 10] [--spp 16] [--res 640x480] [--json PATH]``.

What is measured, all in one process on the same machine:

* **layout**: ``generate_layout`` (embedded pybullet sampler) for ``--layout-scenes`` scenes
  into a temporary directory, seconds per scene;
* **end to end**: the runner's ``run`` on ``--n`` samples into a temporary directory. Wall
  time per sample is taken at the boundaries of the runner's sample loop (``RunHooks.on_sample``),
  so it includes everything the loop does. The first sample carries the one-time scene build
  and kernel compilation and is reported separately;
* **raw**: ``MitsubaScene.render_stokes`` (``mi.render`` of the Stokes pass plus the
  transfer to numpy) on the very scene object the pipeline used, already updated, same
  spp, after one warm-up call; median of ``--raw-repeats`` calls;
* **recompilation**: with ``drjit.JitFlag.KernelHistory`` on, JIT kernels with
  ``cache_hit == 0`` launched per sample (target 0 after the first sample);
* **write profile**: the cost of each file of one sample (``write_sample``).

The pipeline overhead is end-to-end seconds per sample / raw Stokes seconds (target <= 1.15).
With ``--denoise oidn`` the samples are denoised and the raw render counts the guide pass
and the denoiser too (``render.radiance_outputs`` on the raw render's output).
Image quality per second of rendering: ``python -m polar_render.bench.quality``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from polar_render import io
from polar_render.outputs import META_FILE, sample_dir
from polar_render.run.plan import layout_config, object_models_mm
from polar_render.run.request import RenderRequest, parse_res
from polar_render.run.runner import RunHooks, run
from polar_render.run.sample import radiance_outputs, squeeze_mono

TARGET_OVERHEAD = 1.15
WIDTH = 64   # report width


# --------------------------------------------------------------------------- machine facts
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts(mi) -> dict:
    import drjit as dr

    facts = {"cpu_model": cpu_model(), "cores_logical": os.cpu_count(),
             "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
             "platform": platform.platform(), "python": platform.python_version(),
             "mitsuba": mi.__version__, "drjit": dr.__version__, "variant": mi.variant(),
             "numpy": np.__version__, "libllvm": os.environ.get("DRJIT_LIBLLVM_PATH", "")}
    try:
        facts["drjit_threads"] = dr.thread_count()
    except Exception:  # noqa: BLE001 - informative only
        pass
    for mod in ("tifffile", "cv2", "pybullet"):
        try:
            m = __import__(mod)
            facts[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001
            facts[mod] = "missing"
    return facts


# --------------------------------------------------------------------------- kernel history
_SEEN: set = set()

def _jit_stats(entries) -> dict:
    import drjit as dr

    jit = [e for e in entries if e.get("type") == dr.KernelType.JIT]
    compiled = [e for e in jit if not e.get("cache_hit")]
    # Drjit reports kernels loaded from its on-disk cache as cache hits too, so a kernel that
    # differs per sample (a baked literal) hides behind the disk cache on a rerun with the
    # same seed. Counting hashes this process has not launched before catches it anyway.
    new = {e["hash"] for e in jit if e["hash"] not in _SEEN}
    _SEEN.update(new)
    return {"jit_launches": len(jit), "compiled": len(compiled), "new_hashes": len(new),
            "compiled_from_scratch": sum(1 for e in compiled if not e.get("cache_disk")),
            "backend_ms": float(sum(e.get("backend_time", 0.0) for e in compiled))}


class _Probe:
    """Hooks of the end-to-end run (:class:`RunHooks`): wall time and drained kernel history at
    every boundary of the sample loop; after each sample, a raw Stokes render of the scene it
    left updated (interleaved with the run so both see the same machine load, outside the
    sample's wall time); the seconds of each ``write_sample``."""

    def __init__(self, denoise: str):
        self.denoise = denoise
        self.marks: list = []      # (i, end of the previous sample, kernel history, start of sample i)
        self.raw: list = []        # (seconds, kernel history) of a raw render after each sample
        self.write_s: dict = {}    # sample index -> write_sample seconds
        self.captured: dict = {"denoise": denoise}   # the last sample's scene, appearance, mode, images

    def hooks(self) -> RunHooks:
        return RunHooks(on_sample=self.boundary, on_render=self.rendered, on_write=self.written)

    def rendered(self, i, scene, images, appearance, mode, seconds) -> None:
        self.captured.update(scene=scene, appearance=appearance, mode=mode, images=images)

    def written(self, i: int, seconds: float) -> None:
        self.write_s[i] = seconds

    def boundary(self, i) -> None:
        import drjit as dr

        t_end = time.perf_counter()   # end of the previous sample
        hist = dr.kernel_history()
        sc = self.captured.get("scene")
        if sc is not None:
            t = time.perf_counter()
            seed = int(self.captured["appearance"]["render_seed"]) + 7919
            raw = sc.render_stokes(seed)
            if self.denoise != "none":  # the render includes guide pass + denoiser, as in bench_raw
                radiance_outputs(raw, self.captured["mode"], sc, seed, self.denoise)
            self.raw.append((time.perf_counter() - t, dr.kernel_history()))
        self.marks.append((i, t_end, hist, time.perf_counter()))  # last: start of the next sample


# --------------------------------------------------------------------------- measurements
def bench_layout(cfg, res, n_scenes: int, seed: int) -> dict:
    from polar_render.layout.embedded import generate_layout

    lcfg = layout_config(cfg, res)
    models = object_models_mm(cfg, lcfg.instances)
    import pybullet  # noqa: F401 - import cost is not per scene
    with tempfile.TemporaryDirectory(prefix="bench-layout-") as tmp:
        t = time.perf_counter()
        generate_layout(Path(tmp) / "layout", models, lcfg, seed, range(n_scenes), progress=False)
        total = time.perf_counter() - t
    return {"scenes": n_scenes, "total_s": total, "per_scene_s": total / n_scenes,
            "cameras_per_scene": lcfg.cameras_per_scene}


def bench_pipeline(scene: str, n: int, spp: int, res, seed: int, out: Path, denoise: str = "none") -> dict:
    """The production run (``run``) of ``n`` samples, observed through :class:`_Probe`."""
    from polar_render.config.scenes import load_scene

    probe = _Probe(denoise)
    summary = run(RenderRequest(scene=scene, out=out, n=n, seed=seed, spp=spp, res=res, progress=False,
                                denoise=denoise), probe.hooks())
    if summary.failed:
        raise RuntimeError(f"benchmark samples failed: {summary.failed}")
    if summary.rendered != n:
        raise RuntimeError(f"expected {n} rendered samples, got {summary.rendered} ({summary.skipped} skipped)")
    marks = probe.marks
    sample_s = [marks[k + 1][1] - marks[k][3] for k in range(len(marks) - 1)]
    kernels = [_jit_stats(marks[k + 1][2]) for k in range(len(marks) - 1)]
    setup_kernels = _jit_stats(marks[0][2])
    timings = [dict(load_sample_meta(out, i)["timings"], write_s=probe.write_s[i]) for i in range(n)]
    probe.captured.update(meta=load_sample_meta(out, n - 1), sensor=load_scene(scene).sensor)
    raw = probe.raw  # raw[k] follows sample k
    raw_kernels = [_jit_stats(h) for _, h in raw]
    return {"summary": summary, "sample_s": sample_s, "kernels": kernels, "setup_kernels": setup_kernels,
            "raw_interleaved_s": [r for r, _ in raw], "raw_interleaved_kernels": raw_kernels,
            "timings": timings, "captured": probe.captured}


def load_sample_meta(out: Path, i: int) -> dict:
    """meta.json of sample ``i`` of run ``out``."""
    return io.read_json_object(sample_dir(out, i) / META_FILE)


def bench_raw(captured: dict, repeats: int) -> dict:
    """render_stokes / render_aov on the pipeline's own, already updated scene."""
    import drjit as dr

    sc, seed = captured["scene"], int(captured["appearance"]["render_seed"])
    dr.kernel_history()
    sc.render_stokes(seed)  # warm-up
    warm = _jit_stats(dr.kernel_history())
    stokes = []
    for k in range(repeats):
        t = time.perf_counter()
        sc.render_stokes(seed + 1 + k)
        stokes.append(time.perf_counter() - t)
    stokes_k = _jit_stats(dr.kernel_history())
    denoise = captured.get("denoise", "none")
    if denoise != "none":  # the render includes the guide pass and the denoiser (sample.radiance_outputs)
        raw_img = sc.render_stokes(seed)
        extra = []
        for k in range(repeats):
            t = time.perf_counter()
            radiance_outputs(raw_img, captured["mode"], sc, seed + 1 + k, denoise)
            extra.append(time.perf_counter() - t)
        stokes = [a + b for a, b in zip(stokes, extra)]
    aov = []
    for _ in range(repeats):
        t = time.perf_counter()
        sc.render_aov()
        aov.append(time.perf_counter() - t)
    aov_k = _jit_stats(dr.kernel_history())
    return {"stokes_s": stokes, "stokes_median_s": statistics.median(stokes), "aov_s": aov,
            "aov_median_s": statistics.median(aov), "warmup_kernels": warm,
            "timed_compiled": stokes_k["compiled"] + aov_k["compiled"]}


def _time(fn, repeats=3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def profile_write(captured: dict) -> dict:
    """Cost of each file of one sample (best of 3), plus write_sample as a whole."""
    import tifffile

    from polar_render.physics.polarization import aolp, dolp, polarizer_images
    from polar_render.run.sample import NOISY_COMPRESS, ZERO_S0, exposure_scale, write_sample

    im = captured["images"]
    st = im.stokes
    stokes_hwc = np.concatenate([st[k] for k in range(4)], axis=-1)
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-write-") as tmp:
        d = Path(tmp)
        out["write_sample_total"] = _time(lambda: write_sample(Path(tempfile.mkdtemp(dir=d)), im,
                                                                captured["meta"], captured["sensor"]))
        out[f"stokes.tiff ({stokes_hwc.shape[-1]}ch) as written"] = _time(lambda: io.write_float_tiff(d / "s.tiff", stokes_hwc,
                                                                                compress=NOISY_COMPRESS))
        out["  same, zlib level 1"] = _time(lambda: io.write_float_tiff(d / "z.tiff", stokes_hwc, compress=True))
        out["  same, uncompressed"] = _time(lambda: tifffile.imwrite(
            d / "u.tiff", stokes_hwc, photometric="minisblack", planarconfig="contig"))
        out["4x polarizer images (numpy)"] = _time(lambda: polarizer_images(st))
        pols = polarizer_images(st)
        scale = exposure_scale(st, captured["sensor"])
        out["exposure_scale (percentile)"] = _time(lambda: exposure_scale(st, captured["sensor"]))
        dn = {a: np.clip(np.rint(i * scale), 0, 65535).astype(np.uint16) for a, i in pols.items()}
        out["4x pol PNG16 encode+write"] = _time(lambda: [io.write_png16(d / f"p{a}.png", x, compress=False) for a, x in dn.items()])
        out["intensity.tiff"] = _time(lambda: io.write_float_tiff(d / "i.tiff", squeeze_mono(st[0]),
                                                                           compress=NOISY_COMPRESS))
        out["dolp+aolp (numpy)"] = _time(lambda: (dolp(st, ZERO_S0), aolp(st, ZERO_S0)))
        dl, al = squeeze_mono(dolp(st, ZERO_S0)), squeeze_mono(aolp(st, ZERO_S0))
        out["dolp.tiff+aolp.tiff"] = _time(lambda: (io.write_float_tiff(d / "d.tiff", dl, compress=NOISY_COMPRESS),
                                                     io.write_float_tiff(d / "a.tiff", al, compress=NOISY_COMPRESS)))
        out["normals.tiff+depth.tiff"] = _time(lambda: (io.write_float_tiff(d / "n.tiff", im.normals),
                                                         io.write_float_tiff(d / "z.tiff", im.depth)))
        out["2x mask PNG16"] = _time(lambda: (io.write_png16(d / "o.png", im.object_mask),
                                               io.write_png16(d / "q.png", im.part_mask)))
    return out


# --------------------------------------------------------------------------- report
def _fmt(s: float) -> str:
    return f"{s:8.3f} s"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="polar_render.bench.render", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scene", default="usb_brick")
    ap.add_argument("--n", type=int, default=10, help="samples rendered end to end (>= 2; the first is reported apart)")
    ap.add_argument("--spp", type=int, default=16)
    ap.add_argument("--res", default="640x480")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout-scenes", type=int, default=8)
    ap.add_argument("--raw-repeats", type=int, default=7)
    ap.add_argument("--variant", default=None, help="Mitsuba variant (default: scene file / auto)")
    ap.add_argument("--denoise", default="none", choices=["none", "oidn"],
                    help="render with this denoiser; the raw render then counts guide pass + denoising")
    ap.add_argument("--json", default=None, help="also write the results as JSON to this path")
    return ap


def _setup(args, res):
    """Scene config, active Mitsuba module (kernel history on) and the machine facts, printed."""
    import drjit as dr

    from polar_render.config.scenes import load_scene
    from polar_render.mitsuba.variants import activate

    cfg = load_scene(args.scene)
    if args.variant:
        os.environ["POLAR_RENDER_VARIANT"] = args.variant
    mi = activate(args.variant or cfg.render.get("variant", "auto"), mono=cfg.sensor["mode"] == "mono")
    dr.set_flag(dr.JitFlag.KernelHistory, True)
    facts = machine_facts(mi)
    print(f"polar_render bench: scene {cfg.name}, {res[0]}x{res[1]}, {args.spp} spp, "
          f"{args.n} samples end to end, denoise {args.denoise}", flush=True)
    print("machine")
    for k, v in facts.items():
        print(f"  {k:15s} {v}")
    sys.stdout.flush()
    return cfg, facts


def _bench_runs(args, cfg, res) -> tuple[dict, dict, dict]:
    """End-to-end run, raw renders and write profile, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        scene = args.scene
        if cfg.anomalies:  # this bench measures the clean render path; bench.anomalies the rest
            from polar_render.bench.anomalies import _scene_file

            scene = _scene_file(Path(tmp), None, args.scene)
            print("(anomalies disabled for this bench: see `python -m polar_render.bench.anomalies`)", flush=True)
        pr = bench_pipeline(scene, args.n, args.spp, res, args.seed, Path(tmp) / "out", args.denoise)
        print(f"pipeline: {pr['summary'].line()}", flush=True)
        raw = bench_raw(pr["captured"], args.raw_repeats)
        wp = profile_write(pr["captured"])
    return pr, raw, wp


def steady_state(pr: dict, raw: dict) -> dict:
    """Per-sample numbers over samples 2..N: end to end (mean, median), overheads against the
    raw render (median and paired with the interleaved raw renders), the time breakdown."""
    steady = pr["sample_s"][1:]
    e2e = statistics.mean(steady)
    inter = pr["raw_interleaved_s"][1:len(pr["sample_s"])]   # raw render right after samples 2..N
    keys = ("update_s", "stokes_render_s", "aov_render_s", "post_s")
    br = {k: statistics.mean(t[k] for t in pr["timings"][1:]) for k in keys}
    br["other_s (loop, waiting for the writer)"] = e2e - sum(br.values())
    return {"steady": steady, "e2e": e2e, "e2e_med": statistics.median(steady), "raw_s": raw["stokes_median_s"],
            "overhead": e2e / raw["stokes_median_s"], "inter": inter,
            "overhead_paired": statistics.median([a / b for a, b in zip(steady, inter)]), "breakdown": br,
            # files are written by a background thread while the next sample renders: not additive
            "write_s": statistics.mean(t["write_s"] for t in pr["timings"][1:])}


def _print_metrics(lay: dict, pr: dict, raw: dict, st: dict, args) -> None:
    print(f"{'layout, per scene':44s} {_fmt(lay['per_scene_s'])}")
    print(f"{'first sample (scene build + JIT compile)':44s} {_fmt(pr['sample_s'][0])}")
    print(f"{'end to end per sample (mean of %d)' % len(st['steady']):44s} {_fmt(st['e2e'])}")
    print(f"{'end to end per sample (median)':44s} {_fmt(st['e2e_med'])}")
    label = "raw render_stokes" + (" + guides + denoise" if args.denoise != "none" else "")
    print(f"{label + ' (median of %d)' % args.raw_repeats:44s} {_fmt(st['raw_s'])}")
    print(f"{'raw render_aov (median of %d)' % args.raw_repeats:44s} {_fmt(raw['aov_median_s'])}")
    print(f"{'raw render_stokes interleaved (mean of %d)' % len(st['inter']):44s} "
          f"{_fmt(statistics.mean(st['inter']))}")
    ok = "OK" if st["overhead"] <= TARGET_OVERHEAD else "ABOVE TARGET"
    print(f"{'overhead = e2e mean / raw median':44s} {st['overhead']:10.3f} x  <= {TARGET_OVERHEAD}  {ok}")
    ok = "OK" if st["overhead_paired"] <= TARGET_OVERHEAD else "ABOVE TARGET"
    print(f"{'overhead, paired (median e2e_i / raw_i)':44s} {st['overhead_paired']:10.3f} x  <= {TARGET_OVERHEAD}  {ok}")
    _print_kernels(pr, raw)


def _print_kernels(pr: dict, raw: dict) -> None:
    first_k, later = pr["kernels"][0], pr["kernels"][1:]
    compiled_after_first = [k["compiled"] for k in later]
    print(f"{'JIT kernels compiled, first sample':44s} {first_k['compiled']:12d}  "
          f"({first_k['backend_ms']:.0f} ms LLVM backend)")
    rc = "OK" if not any(compiled_after_first) else "RECOMPILING"
    print(f"{'JIT kernels compiled (cache_hit=0) per later':44s} {str(compiled_after_first):>12s}  0  {rc}")
    new_after_first = [k["new_hashes"] for k in later]
    rc = ("OK" if not any(new_after_first) else "RECOMPILING (hidden by disk cache)" if not any(compiled_after_first)
          else "RECOMPILING")
    print(f"{'  kernels new to this process per later':44s} {str(new_after_first):>12s}  0  {rc}")
    print(f"{'  LLVM compile ms per later sample':44s} {str([round(k['backend_ms']) for k in later]):>12s}")
    print(f"{'JIT launches per later sample':44s} {str([k['jit_launches'] for k in later]):>12s}")
    print(f"{'JIT compiled in raw timed calls':44s} {raw['timed_compiled']:12d}  0")


def _print_details(pr: dict, raw: dict, wp: dict, st: dict, facts: dict) -> None:
    e2e = st["e2e"]
    print("per-sample breakdown (mean over samples 2..N, meta.json timings + write)")
    for k, v in st["breakdown"].items():
        print(f"  {k:42s} {_fmt(v)}  {100 * v / e2e:5.1f} %")
    print(f"  {'total':42s} {_fmt(e2e)}")
    print(f"  {'write_s (background thread, overlapped)':42s} {_fmt(st['write_s'])}")
    print(f"  {'beyond raw stokes (e2e - raw)':42s} {_fmt(e2e - st['raw_s'])}  "
          f"{100 * (e2e - st['raw_s']) / st['raw_s']:5.1f} % of raw")
    print("-" * WIDTH)
    print("write profile, one sample (best of 3)")
    for k, v in wp.items():
        print(f"  {k:42s} {_fmt(v)}")
    print("=" * WIDTH)
    print(f"per-sample wall times: {', '.join(f'{s:.3f}' for s in pr['sample_s'])} s")
    for key in ("stokes_render_s", "write_s"):
        print(f"  {key + ':':20s} " + ", ".join(f"{t[key]:.3f}" for t in pr["timings"]) + " s")
    print(f"raw after each sample: {', '.join(f'{s:.3f}' for s in pr['raw_interleaved_s'])} s")
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"load average now (other processes compete for the {facts['cores_usable']} cores): {load}")
    except OSError:
        pass
    print(f"raw stokes times:      {', '.join(f'{s:.3f}' for s in raw['stokes_s'])} s")


def _result(cfg, res, args, facts, lay, pr, raw, wp, st) -> dict:
    return {"machine": facts, "scene": cfg.name, "res": list(res), "spp": args.spp, "n": args.n,
            "layout": lay, "first_sample_s": pr["sample_s"][0], "sample_s": pr["sample_s"],
            "end_to_end_s": st["e2e"], "end_to_end_median_s": st["e2e_med"], "raw": raw, "overhead": st["overhead"],
            "overhead_paired": st["overhead_paired"], "raw_interleaved_s": pr["raw_interleaved_s"],
            "sample_timings": pr["timings"],
            "target_overhead": TARGET_OVERHEAD, "breakdown_s": st["breakdown"], "write_profile_s": wp,
            "kernels_first_sample": pr["kernels"][0], "kernels_per_sample": pr["kernels"],
            "kernels_setup": pr["setup_kernels"], "pipeline_seconds": pr["summary"].seconds,
            "pipeline_layout_seconds": pr["summary"].layout_seconds}


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.n < 2:
        ap.error("--n must be >= 2 (the first sample is excluded from the steady-state numbers)")
    res = parse_res(args.res)
    cfg, facts = _setup(args, res)
    lay = bench_layout(cfg, res, args.layout_scenes, args.seed)
    print(f"\nlayout: {lay['scenes']} scenes in {lay['total_s']:.2f} s", flush=True)
    pr, raw, wp = _bench_runs(args, cfg, res)
    st = steady_state(pr, raw)
    print("\n" + "=" * WIDTH)
    print(f"{'metric':44s} {'value':>12s}  target")
    print("-" * WIDTH)
    _print_metrics(lay, pr, raw, st, args)
    print("-" * WIDTH)
    _print_details(pr, raw, wp, st, facts)
    if args.json:
        io.write_json(Path(args.json), _result(cfg, res, args, facts, lay, pr, raw, wp, st))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
