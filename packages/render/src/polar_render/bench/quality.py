"""Image quality per second of rendering: raw vs OIDN-denoised Stokes against a reference.

Run as ``python -m polar_render.bench.quality [SCENE ...] [--res 640x480] [--spp 4,8,16,32,64]
[--modes raw,oidn] [--samples 2] [--ref-spp 1024] [--mono] [--json PATH]``
(``make bench`` runs it on ``usb_brick`` and, when its scene file exists, ``usb_brick_station``).

For each scene, ``--samples`` samples (indices 0..k-1 of ``--seed``) are rendered through
the runner's ``run`` (the production code path) at every spp x mode, and compared on the
pixels of the parts (``part_mask > 0``) with a reference: the same samples at
``--ref-spp`` (sum of 64-spp passes with distinct seeds, as one ``mi.render`` of 1024 spp
at 640x480 would need a 300 M-lane wavefront), cone-projected, stored with its two
independent halves (even and odd passes). References are computed once and cached in
``--cache`` (default ``out/bench_cache``), keyed by scene digest, sample, variant,
resolution, reference spp and seed; a cached reference without halves is recomputed. So
that every sample carries the measured anomaly classes, the scene is benchmarked with its
anomalies restricted to water stains and dents at probability 1 (a scene without those
classes is measured as is).

Columns (means over samples; luminance = Rec. 709 of RGB, or Y for a mono sensor):

* ``render s``: seconds per sample of the Stokes pass, plus guide pass and denoiser for
  ``oidn`` (meta.json timings), measured on a second run of the same samples;
  ``first s``: the first run, where one-time costs land (kernel compilation for a scene
  structure new to the process, loading the denoiser);
* ``S0 rRMSE``: RMSE of S0 (every channel) / mean reference S0;
* ``DoLP RMSE``: of the per-channel DoLP;  ``AoLP err``: mean |AoLP error| in degrees
  (wrapped to 90), weighted by the reference DoLP;
* ``RMSE*``: DoLP RMSE against the truth, i.e. with the reference's own error removed in
  quadrature (estimated per sample as RMSE(half A - half B) / 2). Near the reference's
  noise the measured errors flatten (rare bright paths, "fireflies", converge slowly), which
  would make raw rendering look slower to converge than it is; RMSE* does not;
* ``kept I / kept DoLP``: anomaly contrast kept against the reference,
  sum_k C_k sign(C_ref,k) / sum_k |C_ref,k| in %, where C = mean(anomaly) - mean(ring of
  4 px around it on the same part), of the luminance intensity and DoLP, over the visible
  stains and dents; 95 % bootstrap interval over the anomalies for DoLP. Raw DoLP at low
  spp keeps more than 100 %: DoLP computed from noisy Stokes is biased upwards, more where
  the image is darker or noisier, and the bias does not cancel between an anomaly and its ring;
* ``CNR I / CNR DoLP``: mean over those anomalies of |C| / std(image - reference) on the
  anomaly and its ring.

``--raw-spp`` (default 256) adds raw-only rows, so that denoised errors below the raw
table's lowest are bracketed by measurements. Then, per scene: the render time at which raw
rendering reaches each denoised DoLP RMSE* (log-log interpolation between the two raw rows
that bracket it; outside them, extrapolation along the nearest two, stated), the time
ratio, and the DoLP contrast of the denoised rows against raw at the same spp and against
the reference (paired 95 % bootstrap intervals over the anomalies),
and with ``--mono`` the mono vs spectral variant speed at equal spp on a mono-sensor copy
of the first scene. End-to-end overhead with denoising: ``python -m polar_render.bench.render --denoise oidn``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from polar_render.config.schema import sampler_spp_problem
from polar_render.config.scenes import load_scene
from polar_render.physics.polarization import LUMA
from polar_render.run.plan import prepare_layout
from polar_render.run.request import RenderRequest, parse_res
from polar_render.run.runner import RunHooks, run

MEASURED = ("water_stain", "dent")
REF_PASS_SPP = 64
RING_PX = 4
BOOTSTRAP = 2000     # resamples of the anomalies for the contrast intervals


# --------------------------------------------------------------------------- scene + capture
def bench_scene(scene: str, tmp: Path) -> Path:
    """A copy of ``scene`` whose anomalies are only stains and dents, at probability 1."""
    from polar_render.config.scenes import load_scene, write_scene_variant

    cfg = load_scene(scene)
    classes = (cfg.raw.get("anomalies") or {}).get("classes") or {}
    if not set(classes) & set(MEASURED):
        return cfg.path
    dotted = {"anomalies.probability": 1.0}
    dotted.update({f"anomalies.classes.{c}": None for c in classes if c not in MEASURED})
    return write_scene_variant(tmp / f"{cfg.name}_bench.yaml", scene, dotted=dotted)


def run_samples(scene: Path, layout: Path, n: int, idx: list[int], spp: int, res, seed: int, denoise: str,
                variant: str | None, after) -> None:
    """Render samples ``idx`` through the runner; ``after(i, scene, images, appearance, mode)`` is
    called for every sample while its scene is still in that sample's state."""
    hooks = RunHooks(on_render=lambda i, sc, images, appearance, mode, seconds: after(i, sc, images, appearance, mode))
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        s = run(RenderRequest(scene=scene, out=Path(tmp) / "o", layout=layout, n=n, indices=idx, spp=spp,
                              res=res, seed=seed, denoise=denoise, variant=variant, progress=False), hooks)
    if s.failed:
        raise RuntimeError(f"bench samples failed: {s.failed}")


def _keep(images) -> dict:
    return {"stokes": images.stokes, "part_mask": images.part_mask, "anomaly_mask": images.anomaly_mask,
            "anomalies": [a for a in images.anomalies or [] if a["class"] in MEASURED],
            "render_s": sum(images.timings.get(k, 0.0) for k in ("stokes_render_s", "guide_render_s", "denoise_s"))}


def references(scene: Path, layout: Path, n: int, res, seed: int, ref_spp: int, variant: str | None,
               cache: Path) -> dict[int, dict]:
    """Reference Stokes (cone-projected mean of ref_spp / 64 passes) and masks per sample, cached."""
    from polar_render.config.scenes import load_scene
    from polar_render.physics.polarization import project_to_cone
    from polar_render.run.sample import stokes_from_render
    from polar_render.mitsuba.variants import choose_variant

    cfg = load_scene(scene)
    var = choose_variant(variant or cfg.render.get("variant", "auto"), mono=cfg.sensor["mode"] == "mono")
    key = f"{cfg.name}-{cfg.digest()}/{var}-{res[0]}x{res[1]}-{ref_spp}spp-seed{seed}"
    path = {i: cache / key / f"sample_{i:06d}.npz" for i in range(n)}
    todo = [i for i in range(n) if not _has_halves(path[i])]   # older caches lack the halves: redone

    def after(i, sc, images, appearance, mode):
        passes = ref_spp // REF_PASS_SPP
        acc = [0.0, 0.0]   # even and odd passes: two independent half references
        for k in range(passes):
            st, _ = stokes_from_render(np.nan_to_num(sc.render_stokes(10_000_019 * (k + 1) + appearance["render_seed"])), mode)
            acc[k % 2] = acc[k % 2] + st.astype(np.float64)
        cone = [project_to_cone(a.astype(np.float32))[0] for a in
                ((acc[0] + acc[1]) / passes, acc[0] / (passes // 2), acc[1] / (passes - passes // 2))]
        path[i].parent.mkdir(parents=True, exist_ok=True)
        d = _keep(images)
        np.savez_compressed(path[i], stokes=cone[0], half_a=cone[1], half_b=cone[2], part_mask=d["part_mask"],
                            anomaly_mask=d["anomaly_mask"], anomalies=json.dumps(d["anomalies"]))
        print(f"  reference {cfg.name} sample {i}: {passes} x {REF_PASS_SPP} spp -> {path[i]}", flush=True)

    if todo:
        run_samples(scene, layout, n, todo, REF_PASS_SPP, res, seed, "none", variant, after)
    out = {}
    for i in range(n):
        z = np.load(path[i])
        out[i] = {"stokes": z["stokes"], "part_mask": z["part_mask"], "anomaly_mask": z["anomaly_mask"],
                  "anomalies": json.loads(str(z["anomalies"])), "path": str(path[i])}
        out[i]["noise"] = reference_noise(z["half_a"], z["half_b"], z["part_mask"])
    return out


def _has_halves(path: Path) -> bool:
    if not path.is_file():
        return False
    with np.load(path) as z:
        return "half_a" in z.files


def reference_noise(half_a: np.ndarray, half_b: np.ndarray, parts: np.ndarray) -> dict:
    """The reference's own error, estimated from its two independent halves: the reference is
    their mean, so its error is about (A - B) / 2 and its RMSE about RMSE(A - B) / 2 (exact for
    S0, to first order for DoLP). Same keys as ``errors``."""
    e = errors(half_a, half_b, parts)
    return {"s0_rrmse": e["s0_rrmse"] / 2, "dolp_rmse": e["dolp_rmse"] / 2}


def corrected(measured: float, ref_noise: float) -> float:
    """RMSE against the truth: the reference's independent error removed in quadrature (0 when
    the measured error is below the reference's own)."""
    return float(np.sqrt(max(measured ** 2 - ref_noise ** 2, 0.0)))


# --------------------------------------------------------------------------- metrics
def _lum(st: np.ndarray) -> np.ndarray:
    return st[..., 0] if st.shape[-1] == 1 else st @ LUMA


def errors(st: np.ndarray, ref: np.ndarray, parts: np.ndarray) -> dict:
    """S0 relative RMSE, DoLP RMSE and DoLP-weighted AoLP error (deg) on part pixels."""
    from polar_render.physics.polarization import aolp, dolp

    m = parts > 0
    s0, r0 = st[0][m], ref[0][m]
    d, dr = dolp(st)[m], dolp(ref)[m]
    da = aolp(st)[m] - aolp(ref)[m]
    da = np.abs((da + np.pi / 2) % np.pi - np.pi / 2)
    return {"s0_rrmse": float(np.sqrt(np.mean((s0 - r0) ** 2)) / max(float(r0.mean()), 1e-12)),
            "dolp_rmse": float(np.sqrt(np.mean((d - dr) ** 2))),
            "aolp_err_deg": float(np.degrees(np.sum(dr * da) / max(float(dr.sum()), 1e-12)))}


def contrasts(st: np.ndarray, ref: dict) -> list[dict]:
    """Per visible stain/dent: contrast C (anomaly mean - ring mean) of luminance intensity
    and DoLP in the test image and the reference, and noise std(test - ref) there."""
    from scipy.ndimage import binary_dilation

    from polar_render.physics.polarization import dolp

    out = []
    amask, parts = ref["anomaly_mask"], ref["part_mask"]
    maps_t = {"I": _lum(st[0]), "DoLP": dolp(np.stack([_lum(s) for s in st]))}
    maps_r = {"I": _lum(ref["stokes"][0]), "DoLP": dolp(np.stack([_lum(s) for s in ref["stokes"]]))}
    for a in ref["anomalies"]:
        A = amask == a["id"]
        if A.sum() < 4:
            continue
        part = np.bincount(parts[A]).argmax()
        B = binary_dilation(A, iterations=RING_PX) & ~A & (amask == 0) & (parts == part)
        if B.sum() < 4:
            continue
        row = {"class": a["class"]}
        for k in maps_t:
            t, r = maps_t[k], maps_r[k]
            row[k] = {"c": float(t[A].mean() - t[B].mean()), "c_ref": float(r[A].mean() - r[B].mean()),
                      "noise": float(np.std((t - r)[A | B]))}
        out.append(row)
    return out


def kept(rows: list[dict], k: str) -> float:
    """Contrast of ``k`` kept against the reference, in %: sum C sign(C_ref) / sum |C_ref|."""
    ref = sum(abs(r[k]["c_ref"]) for r in rows)
    return float(100 * sum(r[k]["c"] * np.sign(r[k]["c_ref"]) for r in rows) / ref) if ref > 0 else float("nan")


def bootstrap(stat, n: int, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``stat(indices)`` over ``BOOTSTRAP`` resamples of range(n)
    (``scipy.stats.bootstrap``, fixed seed)."""
    from scipy.stats import bootstrap as resample

    if n < 2:
        return float("nan"), float("nan")
    ci = resample((np.arange(n),), stat, n_resamples=BOOTSTRAP, method="percentile", vectorized=False,
                  random_state=seed).confidence_interval
    return float(ci.low), float(ci.high)


def summarize(rows: list[dict]) -> dict:
    res = {}
    for k in ("I", "DoLP"):
        res[f"kept_{k}"] = kept(rows, k)
        cnr = [abs(r[k]["c"]) / max(r[k]["noise"], 1e-12) for r in rows]
        res[f"cnr_{k}"] = float(statistics.mean(cnr)) if cnr else float("nan")
    res["kept_DoLP_ci"] = bootstrap(lambda ix: kept([rows[i] for i in ix], "DoLP"), len(rows))
    res["anomalies"] = len(rows)
    return res


def contrast_change(den: list[dict], raw: list[dict], k: str = "DoLP") -> float:
    """Change of the kept contrast, denoised vs raw on the same anomalies (the rows of both
    lists are the same anomalies, in order), in %."""
    return (kept(den, k) / kept(raw, k) - 1) * 100


def contrast_change_ci(den: list[dict], raw: list[dict], k: str = "DoLP") -> tuple[float, float]:
    """Paired 95 % bootstrap interval of ``contrast_change``: each resample takes the same
    anomalies from both lists."""
    return bootstrap(lambda ix: contrast_change([den[i] for i in ix], [raw[i] for i in ix], k), len(den))


def equal_error_time(raw: list[dict], target: float, key: str = "dolp_rmse") -> tuple[float, str]:
    """Raw render seconds at which the error ``key`` reaches ``target``: log(t) interpolated linearly
    in log(error) between the two raw rows that bracket it, or extrapolated along the nearest two."""
    pts = sorted((r["render_s"], r[key]) for r in raw)
    t, e = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    lt = np.log(target)
    inside = [k for k in range(len(pts) - 1) if min(e[k], e[k + 1]) <= lt <= max(e[k], e[k + 1]) and e[k] != e[k + 1]]
    k = inside[0] if inside else (0 if lt > e[0] else len(pts) - 2)
    how = "interpolated" if inside else "extrapolated"
    return float(np.exp(t[k] + (lt - e[k]) * (t[k + 1] - t[k]) / (e[k + 1] - e[k]))), how


# --------------------------------------------------------------------------- runs
def prepare(scene: str, args, res, tmp: Path) -> tuple[Path, Path, int]:
    """(bench scene file, shared layout dir, n) — the layout is sampled once into the cache."""
    from polar_render.config.scenes import load_scene

    path = bench_scene(scene, tmp)
    cfg = load_scene(path)
    n = args.samples
    base = Path(args.cache) / f"{cfg.name}-{cfg.digest()}" / f"layout-{res[0]}x{res[1]}-seed{args.seed}-n{n}"
    if not (base / "layout" / "camera.json").is_file():
        prepare_layout(cfg, RenderRequest(scene=path, out=base, n=n, seed=args.seed, res=res,
                                                   progress=False), n)
    return path, base / "layout", n


def measure(path: Path, layout: Path, n: int, refs: dict, spp: int, mode: str, res, args) -> dict:
    """One table row: the samples rendered twice at ``spp`` in ``mode`` (the first run compiles
    the kernels and is timed as ``first_s``; the second is timed and measured)."""
    from polar_render import denoise as dn

    method, quality, aux = (mode.split(":") + ["", ""])[:3]
    runs: list[dict] = [{}, {}]

    def keeper(got: dict):
        def after(i, sc, images, appearance, m):
            got[i] = _keep(images)
        return after

    old = dn.QUALITY, dn.CLEAN_AUX
    dn.QUALITY, dn.CLEAN_AUX = quality or old[0], (aux != "noisyaux") if aux else old[1]
    try:
        for got in runs:
            run_samples(path, layout, n, list(range(n)), spp, res, args.seed,
                        "none" if method == "raw" else method, args.variant, keeper(got))
    finally:
        dn.QUALITY, dn.CLEAN_AUX = old
    got = runs[1]
    errs = [errors(got[i]["stokes"], refs[i]["stokes"], refs[i]["part_mask"]) for i in range(n)]
    for i, e in enumerate(errs):
        e["dolp_rmse_true"] = corrected(e["dolp_rmse"], refs[i]["noise"]["dolp_rmse"])
        e["s0_rrmse_true"] = corrected(e["s0_rrmse"], refs[i]["noise"]["s0_rrmse"])
    rows = [c for i in range(n) for c in contrasts(got[i]["stokes"], refs[i])]
    out = {"spp": spp, "mode": mode, "render_s": statistics.mean(got[i]["render_s"] for i in range(n)),
           "first_s": statistics.mean(runs[0][i]["render_s"] for i in range(n))}
    out.update({k: statistics.mean(e[k] for e in errs) for k in errs[0]})
    out.update(summarize(rows))
    out["contrasts"] = rows
    return out


def print_header(name: str) -> None:
    print(f"\n{name}")
    print(f"{'spp':>4s} {'mode':>14s} {'render s':>9s} {'first s':>8s} {'S0 rRMSE':>9s} {'DoLP RMSE':>10s} {'RMSE*':>7s} "
          f"{'AoLP err':>9s} {'kept I':>7s} {'kept DoLP [95 % CI]':>21s} {'CNR I':>6s} {'CNR DoLP':>8s}", flush=True)


def print_row(r: dict) -> None:
    lo, hi = r["kept_DoLP_ci"]
    print(f"{r['spp']:4d} {r['mode']:>14s} {r['render_s']:9.3f} {r['first_s']:8.3f} {r['s0_rrmse']:9.4f} "
          f"{r['dolp_rmse']:10.4f} {r['dolp_rmse_true']:7.4f} {r['aolp_err_deg']:8.2f}° {r['kept_I']:6.1f}% "
          f"{r['kept_DoLP']:6.1f}% [{lo:5.1f}, {hi:5.1f}] {r['cnr_I']:6.2f} {r['cnr_DoLP']:8.2f}", flush=True)


def equal_quality(rows: list[dict]) -> list[dict]:
    """For each denoised row: raw seconds to the same DoLP RMSE, the time ratio, and its
    contrast change against raw at the same spp (paired interval)."""
    raw = [r for r in rows if r["mode"] == "raw"]
    out = []
    for r in rows:
        if r["mode"] == "raw" or len(raw) < 2:
            continue
        t_raw, how = equal_error_time(raw, r["dolp_rmse_true"], "dolp_rmse_true")
        base = next((x for x in raw if x["spp"] == r["spp"]), None)
        e = {"spp": r["spp"], "mode": r["mode"], "dolp_rmse_true": r["dolp_rmse_true"], "render_s": r["render_s"],
             "raw_s_equal_rmse": t_raw, "how": how, "time_ratio": r["render_s"] / t_raw,
             "kept_DoLP": r["kept_DoLP"], "kept_DoLP_ci": r["kept_DoLP_ci"],
             "contrast_change_I": float("nan"), "contrast_change_DoLP": float("nan"),
             "contrast_change_DoLP_ci": (float("nan"), float("nan"))}
        if base is not None:
            e["contrast_change_I"] = contrast_change(r["contrasts"], base["contrasts"], "I")
            e["contrast_change_DoLP"] = contrast_change(r["contrasts"], base["contrasts"])
            e["contrast_change_DoLP_ci"] = contrast_change_ci(r["contrasts"], base["contrasts"])
        out.append(e)
    return out


def print_equal_quality(eq: list[dict]) -> None:
    print("equal DoLP RMSE: denoised render seconds / raw render seconds (target <= 0.25); DoLP contrast of "
          "the denoised row against raw at the same spp and against the reference (target >= -10 %)")
    for e in eq:
        lo, hi = e["contrast_change_DoLP_ci"]
        klo, khi = e["kept_DoLP_ci"]
        print(f"  {e['spp']:3d} spp {e['mode']:>14s}: RMSE* {e['dolp_rmse_true']:.4f} in {e['render_s']:.2f} s; "
              f"raw needs {e['raw_s_equal_rmse']:.2f} s ({e['how']}) -> ratio {e['time_ratio']:.2f}; "
              f"contrast vs raw: I {e['contrast_change_I']:+.1f} %, DoLP {e['contrast_change_DoLP']:+.1f} % "
              f"[{lo:+.1f}, {hi:+.1f}]; DoLP vs reference {e['kept_DoLP'] - 100:+.1f} % "
              f"[{klo - 100:+.1f}, {khi - 100:+.1f}]", flush=True)


def mono_speed(scene: str, args, res, tmp: Path) -> dict:
    """Stokes seconds per sample, spectral vs mono variant, same mono-sensor scene and spp."""
    from polar_render.config.scenes import load_scene, write_scene_variant
    from polar_render.mitsuba.variants import choose_variant

    cfg = load_scene(scene)
    path = write_scene_variant(tmp / "mono.yaml", scene, dotted={"sensor.mode": "mono", "anomalies.probability": 0.0})
    layout = prepare(str(path), args, res, tmp)[1]
    out = {"spp": args.mono_spp}
    for kind in ("spectral", "mono"):
        variant = choose_variant(args.variant or cfg.render.get("variant", "auto"), mono=kind == "mono")
        if args.variant:   # an explicit variant names one kind; swap it
            variant = variant.replace("mono_", "spectral_") if kind == "spectral" else variant.replace("spectral_", "mono_")
        times: list[float] = []
        for timed in (False, True):   # the first run compiles the kernels
            run_samples(path, layout, args.samples, list(range(args.samples)), args.mono_spp, res, args.seed, "none",
                        variant, lambda i, sc, im, ap, m: timed and times.append(im.timings["stokes_render_s"]))
        out[kind] = {"variant": variant, "stokes_s": statistics.mean(times)}
    out["speedup"] = out["spectral"]["stokes_s"] / out["mono"]["stokes_s"]
    return out


def default_scenes() -> list[str]:
    from polar_render.config.scenes import SceneConfigError, resolve_scene_path

    names = ["usb_brick"]
    try:
        resolve_scene_path("usb_brick_station")
        names.append("usb_brick_station")
    except SceneConfigError:
        print("(scene usb_brick_station not found: benchmarking usb_brick only)")
    return names


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="polar_render.bench.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("scenes", nargs="*", help="scene names or files (default: usb_brick [usb_brick_station])")
    ap.add_argument("--res", default="640x480")
    ap.add_argument("--spp", default="4,8,16,32,64", help="comma-separated spp values")
    ap.add_argument("--modes", default="raw,oidn",
                    help="comma-separated: raw, oidn, or oidn:<quality>[:noisyaux] (quality high | balanced | "
                         "fast; noisyaux: OIDN prefilters the guides instead of trusting them as clean)")
    ap.add_argument("--raw-spp", default="256", help="comma-separated spp of extra raw-only rows (may be empty)")
    ap.add_argument("--samples", type=int, default=8, help="samples per scene (indices 0..k-1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ref-spp", type=int, default=1024, help=f"reference spp (multiple of {2 * REF_PASS_SPP})")
    ap.add_argument("--cache", default="out/bench_cache", help="reference and layout cache")
    ap.add_argument("--variant", default=None, help="Mitsuba variant (default: scene file / auto)")
    ap.add_argument("--mono", action="store_true", help="also time the mono vs spectral variant (mono sensor)")
    ap.add_argument("--mono-spp", type=int, default=16)
    ap.add_argument("--json", default=None, help="also write the results (rows with their per-anomaly contrasts) "
                                                 "as JSON to this path")
    return ap


def bench_one_scene(scene: str, args, res, spps: list[int], modes: list[str], tmp: Path) -> dict:
    """References, then every spp x mode of one scene, printed as a table; returns the rows."""
    path, layout, n = prepare(scene, args, res, tmp)
    sampler = load_scene(path).render.get("sampler")
    usable = [s for s in spps if not sampler_spp_problem(sampler, s)]
    if usable != spps:
        print(f"scene {scene}: render.sampler {sampler} renders powers of 4 only: spp {usable} "
              f"(left out: {[s for s in spps if s not in usable]})")
    spps = usable
    t = time.perf_counter()
    refs = references(path, layout, n, res, args.seed, args.ref_spp, args.variant, Path(args.cache))
    print(f"references ({time.perf_counter() - t:.0f} s): {', '.join(r['path'] for r in refs.values())}")
    noise = {k: statistics.mean(r["noise"][k] for r in refs.values()) for k in ("s0_rrmse", "dolp_rmse")}
    print(f"the reference's own error (from its two halves): S0 rRMSE {noise['s0_rrmse']:.4f}, DoLP RMSE "
          f"{noise['dolp_rmse']:.4f}; RMSE* = DoLP RMSE with it removed in quadrature (used for equal-error times)")
    n_anom = sum(len(r["anomalies"]) for r in refs.values())
    print_header(f"scene {scene} ({path.name}; {n} samples, {n_anom} visible stains/dents; "
                 f"error vs {args.ref_spp} spp on part pixels)")
    rows = []
    for s in spps:
        for m in modes:
            rows.append(measure(path, layout, n, refs, s, m, res, args))
            print_row(rows[-1])
    extra = [x for x in args.raw_spp_list if x not in spps and not sampler_spp_problem(sampler, x)]
    for s in extra:   # raw only: brackets the denoised errors below the table's lowest raw error
        rows.append(measure(path, layout, n, refs, s, "raw", res, args))
        print_row(rows[-1])
    eq = equal_quality(rows)
    if eq:
        print_equal_quality(eq)
    return {"rows": rows, "equal_quality": eq, "references": [r["path"] for r in refs.values()],
            "reference_noise": noise}


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    res = parse_res(args.res)
    spps = [int(x) for x in args.spp.split(",") if x]
    args.raw_spp_list = [int(x) for x in args.raw_spp.split(",") if x]
    modes = [m for m in args.modes.split(",") if m]
    if args.ref_spp % (2 * REF_PASS_SPP) or args.ref_spp <= 0:
        ap.error(f"--ref-spp must be a positive multiple of {2 * REF_PASS_SPP} (two halves of {REF_PASS_SPP}-spp passes)")
    from polar_render.bench.render import machine_facts
    from polar_render.config.scenes import load_scene
    from polar_render.mitsuba.variants import activate

    scenes = args.scenes or default_scenes()
    mi = activate(args.variant or "auto", mono=load_scene(scenes[0]).sensor["mode"] == "mono")
    print(f"polar_render.bench.quality: {', '.join(scenes)}, {res[0]}x{res[1]}, spp {spps}, modes {modes}, "
          f"{args.samples} samples, reference {args.ref_spp} spp")
    print("machine")
    for k, v in machine_facts(mi).items():
        print(f"  {k:15s} {v}")
    result = {"machine": machine_facts(mi), "res": list(res), "argv": sys.argv[1:], "scenes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-quality-scenes-") as tmp:
        for scene in scenes:
            result["scenes"][scene] = bench_one_scene(scene, args, res, spps, modes, Path(tmp))
        if args.mono:
            m = mono_speed(scenes[0], args, res, Path(tmp))
            print(f"\nmono vs spectral variant, mono sensor, {m['spp']} spp, {scenes[0]}: "
                  f"{m['spectral']['variant']} {m['spectral']['stokes_s']:.3f} s, {m['mono']['variant']} "
                  f"{m['mono']['stokes_s']:.3f} s -> {m['speedup']:.2f}x (target >= 1.25)")
            result["mono"] = m
    try:
        print(f"load average now (other processes compete for the cores): "
              f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    except OSError:
        pass
    if args.json:
        from polar_render import io

        io.write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
