"""A render run: layout (sampled or given) -> N samples in ``<out>/samples/<i:06d>/``.

Sample ``i`` uses frame ``i mod len(frames)`` of the layout and appearance drawn from
``(seed, i)``; it is a pure function of (scene config, seed, i). Each sample directory is
built under a temporary name and renamed when complete, so a rerun skips finished samples
and redoes interrupted ones. ``<out>/run.json`` records the configuration; a rerun into
the same ``out`` with a different configuration is refused rather than mixing samples.
"""
from __future__ import annotations

import gc
import math
import sys
from concurrent.futures import ThreadPoolExecutor
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import trimesh
from tqdm import tqdm

from . import io
from .bop import BopLayout, Frame, read_layout
from .config import SceneConfig, load_scene
from .anomalies import sample_anomalies, stain_parts, unlabelled_events
from .randomize import sample_appearance
from .render import render_images, software_versions, structure_table, visible_surface_for, write_sample
from .scene import MitsubaScene, world_to_camera, frame_structure, objects_centre


@dataclass
class RenderRequest:
    scene: str | Path
    out: Path
    n: int | None = None            # default: 8 for a sampled layout, all frames of a given one
    seed: int = 0
    spp: int | None = None          # default: scene file render.spp
    res: tuple[int, int] | None = None   # (width, height); default: the layout's camera
    layout: Path | None = None      # existing BOP dataset dir; None = sample one
    variant: str | None = None      # Mitsuba variant; None = scene file / auto
    progress: bool = True
    indices: list[int] | None = None  # render only these sample indices (each still a pure function of seed, i)
    clean: bool = False             # clean twins: same samples with their anomalies not applied
    workers: int = 1                # worker processes (one Mitsuba context each)
    executor: str = "local"         # "local" processes or "ray" tasks (RAY_ADDRESS or a local Ray)
    shard: tuple[int, int] | None = None   # (k, n): render only samples i with i % n == k
    retries: int = 1                # failed samples are retried this many times, then reported
    light_variant: str | None = None  # override lights.ring.variant (none | rot90 | scale2)
    layout_backend: str = "embedded"  # who samples a new layout: "embedded" (pybullet) or "blenderproc"
    blender: str | None = None      # Blender install for `blenderproc run` (None: $BLENDER, else in-process bpy)
    denoise: str | None = None      # "none" | "oidn" (denoise.py); None = scene file render.denoise
    noise_seed: int | None = None   # independent Monte Carlo stream: same samples, other render noise


@dataclass
class RunSummary:
    out: Path
    rendered: int = 0
    skipped: int = 0
    failed: dict = field(default_factory=dict)
    seconds: float = 0.0
    layout_seconds: float = 0.0
    render_seconds: list = field(default_factory=list)
    variant: str = ""

    def line(self) -> str:
        # wall clock per rendered sample (layout excluded; first-sample compile included):
        # per-sample latencies overlap with the background writer and would double-count
        per = (self.seconds - self.layout_seconds) / self.rendered if self.rendered else float("nan")
        return (f"{self.rendered} rendered, {self.skipped} skipped, {len(self.failed)} failed in "
                f"{self.seconds:.1f} s ({per:.2f} s/sample, layout {self.layout_seconds:.1f} s, "
                f"variant {self.variant}) -> {self.out}")


def parse_res(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"RES must look like 640x480, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"RES must be positive, got {text!r}")
    return w, h


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"SHARD must look like 0/4, got {text!r}") from None
    if not 0 <= k < n:
        raise ValueError(f"SHARD must be k/n with 0 <= k < n, got {text!r}")
    return k, n


def object_models_mm(cfg: SceneConfig, obj_ids) -> dict[int, trimesh.Trimesh]:
    """BOP model of each object: the union of its parts (mm, model frame)."""
    models = {}
    for obj_id in sorted(set(obj_ids)):
        if obj_id not in cfg.objects:
            raise ValueError(f"{cfg.path}: layout.instances names obj_id {obj_id}, which objects: does not define")
        parts = [trimesh.load(p.mesh, process=False, force="mesh") for p in cfg.objects[obj_id].parts]
        models[obj_id] = trimesh.util.concatenate(parts)
    return models


def rescale_frame(frame: Frame, width: int, height: int) -> Frame:
    """Same camera at another resolution: K scaled about pixel corners (OpenCV centres)."""
    if (width, height) == (frame.width, frame.height):
        return frame
    sx, sy = width / frame.width, height / frame.height
    K = frame.K.copy()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return Frame(frame.split, frame.scene_id, frame.im_id, K, width, height, frame.depth_scale,
                 frame.R_w2c, frame.t_w2c_mm, frame.objects)


def prepare_layout(cfg: SceneConfig, req: RenderRequest, n: int) -> BopLayout:
    if req.layout is not None:
        return read_layout(req.layout)
    from .layout import LayoutConfig, generate_layout

    lcfg = LayoutConfig.from_dict(cfg.layout)
    if req.res is not None:
        s = req.res[0] / lcfg.width
        lcfg.fx, lcfg.fy = lcfg.fx * s, lcfg.fy * req.res[1] / lcfg.height
        lcfg.width, lcfg.height = req.res
    n_scenes = math.ceil(n / lcfg.cameras_per_scene)
    root = req.out / "layout"
    models = object_models_mm(cfg, lcfg.instances)
    if req.layout_backend == "blenderproc":
        from .layout_blenderproc import generate_layout_blenderproc

        generate_layout_blenderproc(root, models, lcfg, req.seed, range(n_scenes), progress=req.progress,
                                    blender=req.blender)
    else:
        generate_layout(root, models, lcfg, req.seed, range(n_scenes), progress=req.progress)
    return read_layout(root)


def independent_render_seed(seed: int, index: int, noise_seed: int) -> int:
    """Mitsuba sampler seed of sample ``index`` on the independent stream ``noise_seed``
    (``--noise-seed``): every sampled value and every exact pass stay those of the sample;
    only the Monte Carlo estimate differs, so two such renders measure render noise."""
    from .randomize import STREAM_RENDER

    if isinstance(noise_seed, bool) or not isinstance(noise_seed, int) or noise_seed < 0:
        raise ValueError(f"NOISE_SEED must be an integer >= 0, got {noise_seed!r}")
    return int(np.random.default_rng([int(seed), int(index), STREAM_RENDER, 1 + noise_seed]).integers(0, 2**31 - 1))


def view_name(cfg: SceneConfig, frame: Frame) -> str | None:
    """Name of the station view a frame was taken from (layout mode station), else None."""
    views = list((cfg.layout or {}).get("views") or {})
    return views[frame.im_id] if cfg.layout.get("mode") == "station" and frame.im_id < len(views) else None


def denoise_setting(cfg: SceneConfig, req: RenderRequest) -> str:
    """``req.denoise`` (CLI ``--denoise``) else the scene's ``render.denoise`` (default none)."""
    from .denoise import METHODS

    value = req.denoise or cfg.render.get("denoise", "none")
    if value not in METHODS:
        raise ValueError(f"DENOISE must be one of {', '.join(METHODS)}, got {value!r}")
    return value


def _check_run_manifest(out: Path, manifest: dict, write: bool = True) -> None:
    """Refuse a run whose configuration differs from ``out/run.json``; keys absent from
    ``manifest`` are not compared (early check before the layout exists)."""
    path = out / "run.json"
    if path.exists():
        import json

        old = json.loads(path.read_text())
        keys = ("scene", "config_digest", "seed", "spp", "res", "layout", "layout_backend", "variant", "clean",
                "denoise", "noise_seed")
        since = {"denoise": "none", "noise_seed": None}  # keys added later: value implied by a run.json without them
        diff = [k for k in keys if k in manifest and old.get(k, since.get(k)) != manifest.get(k)]
        if diff:
            raise ValueError(f"{out} already holds a run with different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); choose another OUT or delete it")
    if write:
        io.write_json(path, manifest)


def _write_sample_dir(dest: Path, images, meta: dict, sensor: dict) -> None:
    with io.atomic_dir(dest) as tmp:
        write_sample(tmp, images, meta, sensor)


def run(req: RenderRequest) -> RunSummary:
    t_start = time.perf_counter()
    cfg = load_scene(req.scene)
    if req.light_variant:
        from .lights import apply_light_variant

        apply_light_variant(cfg, req.light_variant)
    req.out = Path(req.out)
    req.out.mkdir(parents=True, exist_ok=True)
    n_default = 8 if req.layout is None else None
    n = req.n if req.n is not None else n_default
    summary = RunSummary(out=req.out)

    # Refuse a mismatching OUT before prepare_layout writes anything into it (out/layout).
    if req.layout_backend not in ("embedded", "blenderproc"):
        raise ValueError(f"LAYOUT_BACKEND must be embedded or blenderproc, got {req.layout_backend!r}")
    # worker processes get the run's own sampled layout (out/layout) as a given one
    own_layout = req.layout is None or Path(req.layout).resolve() == (req.out / "layout").resolve()
    if req.layout_backend == "blenderproc" and not own_layout:
        raise ValueError("LAYOUT_BACKEND=blenderproc samples a new layout; it cannot be combined with LAYOUT=")
    if req.layout_backend == "blenderproc" and req.layout is None:
        from .layout_blenderproc import resolve_mode

        resolve_mode("auto", req.blender)     # clear message (install command) before anything is written
    early = {"scene": cfg.name, "config_digest": cfg.digest(), "seed": req.seed,
             "layout_backend": req.layout_backend if own_layout else "given",
             "spp": int(req.spp or cfg.render["spp"]), "denoise": denoise_setting(cfg, req),
             "layout": str(Path(req.layout if req.layout is not None else req.out / "layout").resolve())}
    if req.res is not None:
        early["res"] = list(req.res)
    elif req.layout is None and (req.out / "run.json").exists():
        from .layout import LayoutConfig

        lcfg = LayoutConfig.from_dict(cfg.layout)
        early["res"] = [lcfg.width, lcfg.height]
    _check_run_manifest(req.out, early, write=False)

    t0 = time.perf_counter()
    layout = prepare_layout(cfg, req, n or 0)
    summary.layout_seconds = time.perf_counter() - t0
    frames = layout.frames()
    if not frames:
        raise ValueError(f"{layout.root}: the layout has no frames")
    n = n if n is not None else len(frames)
    res = req.res or (frames[0].width, frames[0].height)
    spp = int(req.spp or cfg.render["spp"])
    samples_dir = req.out / "samples"
    io.clean_partial(samples_dir)

    from .variants import activate

    mi = activate(req.variant or cfg.render.get("variant", "auto"), mono=cfg.sensor["mode"] == "mono")
    if "mono" in mi.variant() and cfg.sensor["mode"] != "mono":
        raise ValueError(f"variant {mi.variant()} renders one luminance channel; {cfg.path} has sensor.mode "
                         f"{cfg.sensor['mode']!r} (use a spectral variant, or sensor.mode: mono)")
    summary.variant = mi.variant()
    manifest = {"scene": cfg.name, "scene_file": str(cfg.path), "config_digest": cfg.digest(), "seed": req.seed,
                "n": n, "spp": spp, "res": list(res), "clean": req.clean, "layout": str(Path(layout.root).resolve()),
                "layout_backend": early["layout_backend"], "denoise": early["denoise"], "noise_seed": req.noise_seed,
                "variant": mi.variant(), "versions": software_versions(mi)}
    _check_run_manifest(req.out, manifest)

    scenes: dict[tuple, MitsubaScene] = {}   # (structure key, stain-capable) -> scene
    todo = range(n) if req.indices is None else sorted(set(int(i) for i in req.indices))
    bad = [i for i in todo if not 0 <= i < n]
    if bad:
        raise ValueError(f"sample indices {bad} are outside 0..{n - 1}")
    if req.shard is not None:
        k, m = req.shard
        if not 0 <= k < m:
            raise ValueError(f"SHARD must be k/n with 0 <= k < n, got {k}/{m}")
        todo = [i for i in todo if i % m == k]
    child = replace(req, layout=Path(layout.root), n=n, res=tuple(res), shard=None, workers=1, executor="local",
                    progress=False)
    if req.executor not in ("local", "ray"):
        raise ValueError(f"EXECUTOR must be local or ray, got {req.executor!r}")
    if req.workers > 1 or req.executor == "ray":
        return _run_workers(child, list(todo), max(req.workers, 1), req.executor, req.progress, cfg.name,
                            summary, t_start)
    bar = tqdm(todo, desc=f"render {cfg.name}", unit="sample", disable=not req.progress, file=sys.stderr)
    # Files of sample i are written by one background thread while sample i+1 renders; at
    # most one write is in flight (bounded memory), and a sample only counts as done once
    # its directory has been renamed into place.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polar-render-write")
    pending: tuple | None = None

    def fail(i: int, exc: BaseException) -> None:
        summary.failed[i] = f"{type(exc).__name__}: {exc}"
        tqdm.write(f"sample {i} failed: {summary.failed[i]}", file=sys.stderr)

    def finish() -> None:
        nonlocal pending
        if pending is None:
            return
        i, fut, t = pending
        pending = None
        try:
            fut.result()
            summary.render_seconds.append(time.perf_counter() - t)
            summary.rendered += 1
        except (ValueError, RuntimeError, OSError) as exc:
            fail(i, exc)

    try:
        for i in bar:
            dest = samples_dir / f"{i:06d}"
            if (dest / "meta.json").is_file():
                summary.skipped += 1
                continue
            frame = rescale_frame(frames[i % len(frames)], *res)
            try:
                world_to_camera(frame)  # SceneError naming cam_R_w2c if the frame has no world pose
                structure = frame_structure(cfg, layout, frame)
                slots = [(s.instance, s.obj_id, s.part, s.material) for s in structure.base_slots]
                appearance = sample_appearance(cfg, req.seed, i, slots, objects_centre(frame))
                if req.noise_seed is not None:
                    appearance["render_seed"] = independent_render_seed(req.seed, i, req.noise_seed)
                key = structure.key(cfg.materials)
                if not any(k[0] == key for k in scenes):
                    scenes.clear()  # scenes of one structure at a time keep memory flat
                    gc.collect()    # free the previous scene before building the next

                def scene_for(stains: bool) -> MitsubaScene:
                    if (key, stains) not in scenes:
                        scenes[(key, stains)] = MitsubaScene(mi, cfg, structure, appearance, res[0], res[1], spp,
                                                             int(cfg.render["max_depth"]), stains=stains)
                    return scenes[(key, stains)]

                dropped: list[dict] = []
                events = sample_anomalies(cfg.anomalies, req.seed, i, structure.slots, scene_for(False).models_mm,
                                          visible=lambda: visible_surface_for(scene_for(False), frame, appearance),
                                          dropped=dropped)
                # Samples with a water stain (and their clean twins) use the stain-capable
                # scene; all others the cheaper one. The choice depends on (config, seed, i) only.
                stained = any(a.cls == "water_stain" for a in events) and bool(stain_parts(cfg.anomalies))
                t = time.perf_counter()
                images = render_images(scene_for(stained), frame, appearance, cfg.sensor["mode"],
                                       [] if req.clean else events, denoise=manifest["denoise"])
                meta = {"index": i, "seed": req.seed, "scene": cfg.name, "config_digest": cfg.digest(),
                        "frame": {"split": frame.split, "scene_id": frame.scene_id, "im_id": frame.im_id,
                                  "layout": manifest["layout"], "cam_K": frame.K,
                                  "cam_R_w2c": frame.R_w2c, "cam_t_w2c_mm": frame.t_w2c_mm,
                                  "objects": [{"instance": k + 1, "obj_id": o.obj_id, "cam_R_m2c": o.R_m2c,
                                               "cam_t_m2c_mm": o.t_m2c_mm} for k, o in enumerate(frame.objects)]},
                        "parts": structure_table(structure), "sampled": appearance, "spp": spp,
                        "anomaly_events": [a.to_meta() for a in events], "clean_twin": req.clean,
                        "anomalies_dropped": dropped + ([] if req.clean else unlabelled_events(events, images.anomalies)),
                        "variant": mi.variant(), "versions": manifest["versions"], "noise_seed": req.noise_seed,
                        "view": view_name(cfg, frame)}
            except (ValueError, RuntimeError, OSError) as exc:
                fail(i, exc)
                continue
            finish()
            pending = (i, writer.submit(_write_sample_dir, dest, images, meta, cfg.sensor), t)
        finish()
    finally:
        finish()
        writer.shutdown(wait=True)
    for _ in range(req.retries):  # bounded retries of failed samples, in a fresh scene
        if not summary.failed:
            break
        again = run(replace(child, indices=sorted(summary.failed), retries=0))
        summary.rendered += again.rendered
        summary.render_seconds += again.render_seconds
        summary.failed = again.failed
    summary.seconds = time.perf_counter() - t_start
    if req.progress or req.indices is None:  # top-level runs, not worker chunks
        record_status(req.out, n, summary)
    return summary


def record_status(out: Path, n: int, summary: RunSummary) -> dict:
    """Per-sample status in ``run.json`` (atomic): which of the n samples are complete,
    which are missing, and the failures of the last run with their reasons. Computed from
    the sample directories, so shards and workers writing it agree."""
    import json

    path = out / "run.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    done = [i for i in range(n) if (out / "samples" / f"{i:06d}" / "meta.json").is_file()]
    missing = sorted(set(range(n)) - set(done))
    manifest["status"] = {"complete": len(done), "total": n, "missing": missing,
                          "failed_last_run": {str(k): v for k, v in sorted(summary.failed.items())},
                          "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    io.write_json(path, manifest)
    return manifest["status"]


def _run_workers(child: RenderRequest, todo: list[int], workers: int, executor: str, progress: bool,
                 name: str, summary: RunSummary, t_start: float) -> RunSummary:
    """Split ``todo`` round-robin into ``workers`` chunks, each rendered by ``run`` in its
    own process (kernels compiled once per worker): local spawned processes, or Ray tasks
    (``RAY_ADDRESS``, else a local Ray instance on 127.0.0.1; one GPU per task where the
    cluster has GPUs; ``out`` must then be on storage every node sees). Sample i does not
    depend on which worker renders it. A worker that dies fails its unfinished samples;
    a rerun renders exactly those."""
    chunks = [replace(child, indices=c) for c in (todo[w::workers] for w in range(workers)) if c]
    samples_dir = child.out / "samples"

    def n_done() -> int:
        return sum((samples_dir / f"{i:06d}" / "meta.json").is_file() for i in todo)

    done_before = n_done()
    bar = tqdm(total=len(todo), initial=done_before, desc=f"render {name} {executor} x{len(chunks)}", unit="sample",
               disable=not progress, file=sys.stderr)
    if executor == "ray":
        parts = _ray_map(chunks, lambda: bar.update(n_done() - bar.n))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, wait

        parts = []
        with ProcessPoolExecutor(len(chunks), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(run, c): c for c in chunks}
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=0.5)
                bar.update(n_done() - bar.n)
            for fut, c in futures.items():
                try:
                    parts.append(fut.result())
                except Exception as exc:  # a worker died (BrokenProcessPool) or raised
                    lost = RunSummary(out=child.out)
                    for i in c.indices:
                        if not (samples_dir / f"{i:06d}" / "meta.json").is_file():
                            lost.failed[i] = f"worker failed: {type(exc).__name__}: {exc}"
                    parts.append(lost)
    bar.update(n_done() - bar.n)
    bar.close()
    for p in parts:
        summary.skipped += p.skipped
        summary.failed.update(p.failed)
        summary.render_seconds += p.render_seconds
        summary.variant = p.variant or summary.variant
    summary.rendered = n_done() - done_before  # also counts samples a dead worker finished
    summary.seconds = time.perf_counter() - t_start
    record_status(child.out, child.n, summary)
    return summary


def _ray_map(chunks: list[RenderRequest], tick) -> list[RunSummary]:
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave the machine
    try:
        import ray
    except ImportError:
        raise ValueError("EXECUTOR=ray needs Ray: pip install -e 'packages/render[ray]'") from None
    started = False
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        else:
            ray.init(num_cpus=len(chunks), include_dashboard=False, log_to_driver=False,
                     _node_ip_address="127.0.0.1")
        started = True
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(run)
        refs = [task.remote(c) for c in chunks]
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            tick()
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()


def load_sample(sample_dir: str | Path) -> dict:
    """Read a sample back: {'meta': dict, <modality>: ndarray} (images as stored)."""
    import json

    sample_dir = Path(sample_dir)
    meta = json.loads((sample_dir / "meta.json").read_text())
    out = {"meta": meta}
    for name, entry in meta["files"].items():
        path = sample_dir / entry["path"]
        out[name] = io.read_float_tiff(path) if entry["path"].endswith(".tiff") else io.read_png(path)
    return out


def stokes_array(sample: dict) -> np.ndarray:
    """(4, H, W, C) Stokes from a loaded sample."""
    st = sample["stokes"]
    c = st.shape[-1] // 4
    return np.moveaxis(st.reshape(*st.shape[:2], 4, c), 2, 0)
