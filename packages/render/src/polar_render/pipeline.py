"""A render run: layout (sampled or given) -> N samples in ``<out>/samples/<i:06d>/``.

Sample ``i`` uses frame ``i mod len(frames)`` of the layout and appearance drawn from
``(seed, i)``; it is a pure function of (scene config, seed, i). Each sample directory is
built under a temporary name and renamed when complete, so a rerun skips finished samples
and redoes interrupted ones. ``<out>/run.json`` records the configuration; a rerun into
the same ``out`` with a different configuration is refused rather than mixing samples.

Before anything is written, :func:`run` validates the request (:meth:`RenderRequest.validate`,
messages naming the CLI option), loads the scene, activates the Mitsuba variant, reads and
checks a given layout (``bop.read_layout``), compares ``run.json`` and checks the free
space for the samples still to render (:func:`sample_bytes`). Only then does it take OUT's
lock (:mod:`polar_render.runlock`) and write. Paths in run.json and meta.json are relative
to OUT (:func:`read_manifest` resolves them); a given layout is matched by its content
digest, the run's own ``OUT/layout`` by its place, so a moved OUT resumes. A full disk
raises ``io.NoSpaceError`` naming the file: before the first sample (layout, run.json) the
CLI exits 2, part-way through a run :class:`RunAborted` (exit 1) keeps the finished samples.
"""
from __future__ import annotations

import gc
import math
import os
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


class RequestError(ValueError):
    """An invalid :class:`RenderRequest` field; the message names the CLI option."""


# RenderRequest field -> the CLI option that sets it (messages name the option)
OPTION = {"scene": "--scene", "out": "--out", "n": "--n", "seed": "--seed", "spp": "--spp", "res": "--res",
          "layout": "--layout", "variant": "--variant", "progress": "--quiet", "indices": "indices",
          "clean": "--clean", "workers": "--workers", "executor": "--executor", "shard": "--shard",
          "retries": "retries", "light_variant": "--light-variant", "layout_backend": "--layout-backend",
          "blender": "--blender", "denoise": "--denoise", "noise_seed": "--noise-seed", "worker": "worker"}
MAX_SEED = 2**63 - 1
MAX_SPP = 2**31 - 1   # Mitsuba's sample count is a 32-bit integer
EXECUTORS = ("local", "ray")
LAYOUT_BACKENDS = ("embedded", "blenderproc")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass
class RenderRequest:
    """One render run. Every field is checked by :meth:`validate` (on construction and again
    when :func:`run` starts), with the messages the CLI prints: they name the option."""
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
    worker: bool = False            # a chunk or retry of a run that holds OUT's lock (no lock, no disk check)

    def __post_init__(self):
        self.validate()

    def validate(self) -> "RenderRequest":
        """Refuse any invalid field (:class:`RequestError` naming the option); returns self."""
        def bad(field_: str, why: str):
            raise RequestError(f"{OPTION[field_]}: {why}, got {getattr(self, field_)!r}")

        def check_int(field_: str, lo: int, hi: int | None = None, optional: bool = False):
            v = getattr(self, field_)
            if v is None and optional:
                return
            if not _is_int(v) or v < lo:
                bad(field_, f"expected an integer >= {lo}")
            if hi is not None and v > hi:
                bad(field_, f"expected an integer <= {hi}")

        for f in ("scene", "out"):
            v = getattr(self, f)
            if not isinstance(v, (str, os.PathLike)) or str(v) == "" or "\x00" in str(v):
                bad(f, "expected a non-empty path")
        if self.layout is not None and (not isinstance(self.layout, (str, os.PathLike)) or str(self.layout) == ""):
            bad("layout", "expected a BOP dataset directory")
        check_int("n", 1, optional=True)
        check_int("seed", 0, MAX_SEED)
        check_int("spp", 1, MAX_SPP, optional=True)
        check_int("workers", 1)
        check_int("retries", 0)
        check_int("noise_seed", 0, MAX_SEED, optional=True)
        if self.res is not None:
            check_res(self.res, OPTION["res"])
        if self.shard is not None:
            check_shard(self.shard, OPTION["shard"])
        if self.indices is not None and (not isinstance(self.indices, (list, tuple, range, np.ndarray))
                                         or not all(_is_int(i) and i >= 0 for i in self.indices)):
            bad("indices", "expected a list of sample indices >= 0")
        for f, allowed in (("executor", EXECUTORS), ("layout_backend", LAYOUT_BACKENDS)):
            if getattr(self, f) not in allowed:
                bad(f, f"expected one of {', '.join(allowed)}")
        from .denoise import METHODS
        from .lights import VARIANTS

        for f, allowed in (("denoise", METHODS), ("light_variant", VARIANTS)):
            if getattr(self, f) is not None and getattr(self, f) not in allowed:
                bad(f, f"expected one of {', '.join(allowed)}")
        for f in ("variant", "blender"):
            if getattr(self, f) is not None and (not isinstance(getattr(self, f), str) or not getattr(self, f)):
                bad(f, "expected a non-empty string")
        for f in ("progress", "clean", "worker"):
            if not isinstance(getattr(self, f), bool):
                bad(f, "expected True or False")
        return self


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


def check_res(res, option: str = "--res") -> tuple[int, int]:
    """(width, height) in pixels, each >= 1, their product within POLAR_MAX_IMAGE_PIXELS."""
    from .limits import max_image_pixels

    if not isinstance(res, (tuple, list)) or len(res) != 2 or not all(_is_int(x) for x in res):
        raise RequestError(f"{option}: expected WIDTHxHEIGHT (two integers), got {res!r}")
    w, h = (int(x) for x in res)
    if w < 1 or h < 1:
        raise RequestError(f"{option}: width and height must be >= 1 pixel, got {w}x{h}")
    if w * h > max_image_pixels():
        raise RequestError(f"{option}: {w}x{h} = {w * h:,} pixels is above the limit of {max_image_pixels():,} "
                           f"(POLAR_MAX_IMAGE_PIXELS)")
    return w, h


def check_shard(shard, option: str = "--shard") -> tuple[int, int]:
    """(k, n) with 0 <= k < n: the samples i with i % n == k."""
    if not isinstance(shard, (tuple, list)) or len(shard) != 2 or not all(_is_int(x) for x in shard):
        raise RequestError(f"{option}: expected k/n (two integers), got {shard!r}")
    k, n = (int(x) for x in shard)
    if not 0 <= k < n:
        raise RequestError(f"{option}: expected k/n with 0 <= k < n (shard k of n), got {k}/{n}")
    return k, n


def parse_res(text: str | None) -> tuple[int, int] | None:
    """``--res WIDTHxHEIGHT`` -> (width, height); None when not given."""
    if text is None:
        return None
    parts = str(text).strip().lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise RequestError(f"--res: expected WIDTHxHEIGHT with two positive integers, e.g. 640x480, got {text!r}")
    return check_res(tuple(int(p) for p in parts))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``--shard k/n`` -> (k, n); None when not given."""
    if text is None:
        return None
    parts = str(text).strip().split("/")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
        raise RequestError(f"--shard: expected k/n with integers 0 <= k < n, e.g. 0/4, got {text!r}")
    return check_shard(tuple(int(p) for p in parts))


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


def layout_config(cfg: SceneConfig, res: tuple[int, int] | None):
    """The scene's ``layout:`` section as a LayoutConfig, at ``res`` (focal lengths scaled)
    when given. Errors name the scene file."""
    from .layout import LayoutConfig

    if not cfg.layout:
        raise ValueError(f"{cfg.path}: no layout: section to sample a layout from; give --layout DIR "
                         f"(an existing BOP dataset) or add layout.instances to the scene file")
    try:
        lcfg = LayoutConfig.from_dict(cfg.layout)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cfg.path}: layout: {exc}") from None
    if res is not None:
        s = res[0] / lcfg.width
        lcfg.fx, lcfg.fy = lcfg.fx * s, lcfg.fy * res[1] / lcfg.height
        lcfg.width, lcfg.height = res
    return lcfg


def prepare_layout(cfg: SceneConfig, req: RenderRequest, n: int) -> BopLayout:
    if req.layout is not None:
        return read_layout(req.layout)
    from .layout import generate_layout

    lcfg = layout_config(cfg, req.res)
    n_scenes = math.ceil(n / lcfg.cameras_per_scene)
    root = io.make_dirs(Path(req.out) / "layout")   # io.DIR_MODE: never world-writable
    models = object_models_mm(cfg, lcfg.instances)
    if req.layout_backend == "blenderproc":
        from .layout_blenderproc import generate_layout_blenderproc

        generate_layout_blenderproc(root, models, lcfg, req.seed, range(n_scenes), progress=req.progress,
                                    blender=req.blender)
    else:
        generate_layout(root, models, lcfg, req.seed, range(n_scenes), progress=req.progress)
    return read_layout(root)


# Bytes one sample writes, per pixel, with C colour channels (3 RGB, 1 mono): stokes.tiff
# 16C (float32, uncompressed), pol0..135 8C (uint16 PNGs, stored blocks), intensity/dolp/
# aolp 12C (float32), depth 4, normals <= 12 (zlib, float32 x 3), three uint16 masks <= 6,
# raw_mosaic <= 2C when sensor.dofp is enabled; plus meta.json (<= 64 KiB). Calibrated on a
# real sample (plain scene on the BlenderProc fixture, 640x480 RGB, 1 spp): 34,611,922 bytes
# written = 112.7 B/px, against 130 B/px estimated (the normals compressed to 0.6 B/px).
SAMPLE_META_BYTES = 64 * 2**10


def sample_bytes(width: int, height: int, channels: int, dofp: bool = False) -> int:
    """Upper estimate of the bytes one sample writes at ``width`` x ``height`` (see above)."""
    per_px = 36 * channels + 22 + (2 * channels if dofp else 0)
    return width * height * per_px + SAMPLE_META_BYTES


def layout_bytes(cfg: SceneConfig, lcfg, n: int, backend: str) -> int:
    """Upper estimate of a sampled layout's bytes: the object models (their source mesh
    files' size; the layout stores them as binary PLY, no larger), ~2 KiB of JSON per
    frame, and BlenderProc's 16-bit depth PNG per frame."""
    frames = math.ceil(n / lcfg.cameras_per_scene) * lcfg.cameras_per_scene
    models = 0
    for oid in set(lcfg.instances):
        if oid in cfg.objects:
            models += sum(Path(p.mesh).stat().st_size for p in cfg.objects[oid].parts if Path(p.mesh).is_file())
    depth = 2 * lcfg.width * lcfg.height if backend == "blenderproc" else 0
    return models + frames * (2048 + depth) + 4096


def _rel(out: Path, path: str | os.PathLike) -> str:
    """``path`` relative to OUT (posix; ``..`` where it lies outside) for run.json/meta.json."""
    return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()


def resolve_run_path(out: str | os.PathLike, value: str) -> Path:
    """A path stored in run.json / meta.json (relative to OUT; absolute in older runs)."""
    p = Path(value)
    return p if p.is_absolute() else (Path(out) / p).resolve()


def read_manifest(out: str | os.PathLike) -> dict:
    """``OUT/run.json`` with ``scene_file`` and ``layout`` resolved to absolute paths (they
    are stored relative to OUT, so a run directory can be moved and resumed)."""
    import json

    path = Path(out) / "run.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: not found; {out} holds no render run") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable run manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for key in ("scene_file", "layout"):
        if isinstance(manifest.get(key), str):
            manifest[key] = str(resolve_run_path(out, manifest[key]))
    return manifest


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


def _same_layout(out: Path, old: dict, new: dict) -> bool:
    """A given layout is identified by its content digest (so a moved run, or a moved
    copy of the layout, still matches); the run's own layout by its path (OUT/layout)."""
    if old.get("layout_digest") and new.get("layout_digest"):
        return old["layout_digest"] == new["layout_digest"]
    if not isinstance(old.get("layout"), str):
        return False
    return resolve_run_path(out, old["layout"]) == resolve_run_path(out, new["layout"])


def _check_run_manifest(out: Path, manifest: dict, write: bool = True) -> None:
    """Refuse a run whose configuration differs from ``out/run.json``; keys absent from
    ``manifest`` are not compared (early check before the layout exists)."""
    path = out / "run.json"
    if path.exists():
        import json

        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable run manifest ({exc}); choose another --out or delete it") from None
        if not isinstance(old, dict):
            raise ValueError(f"{path}: expected a JSON object; choose another --out or delete it")
        keys = ("scene", "config_digest", "seed", "spp", "res", "layout", "layout_backend", "variant", "clean",
                "denoise", "noise_seed")
        since = {"denoise": "none", "noise_seed": None}  # keys added later: value implied by a run.json without them
        diff = [k for k in keys if k in manifest and (not _same_layout(out, old, manifest) if k == "layout"
                                                      else old.get(k, since.get(k)) != manifest.get(k))]
        if diff:
            raise ValueError(f"{out} already holds a run with different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); choose another OUT or delete it")
    if write:
        io.write_json(path, manifest)


def _write_sample_dir(dest: Path, images, meta: dict, sensor: dict) -> None:
    with io.atomic_dir(dest) as tmp:
        write_sample(tmp, images, meta, sensor)


class RunAborted(RuntimeError):
    """A run stopped part-way (a full disk): finished samples are kept, a rerun resumes.
    The CLI exits 1."""


@dataclass
class _Plan:
    """What ``run`` settled before writing anything."""
    cfg: SceneConfig
    mi: object
    given: BopLayout | None      # the layout read from req.layout (None: sample one into OUT/layout)
    n: int
    res: tuple[int, int]
    spp: int
    todo: list[int]
    early: dict


def _check_paths(req: RenderRequest, out: Path) -> bool:
    """Refuse unusable --out / --layout paths; True when the layout is the run's own
    (sampled into OUT/layout; worker processes get it as a given one)."""
    from .paths import resolve_checked

    resolve_checked(out, source="--out", key=str(out))   # symlink loops named as such
    if out.exists() and not out.is_dir():
        raise RequestError(f"--out: {out} exists and is not a directory")
    if req.layout is not None:
        resolve_checked(req.layout, source="--layout", key=str(req.layout))
    own_layout = req.layout is None or Path(req.layout).resolve() == (out / "layout").resolve()
    if req.layout_backend == "blenderproc" and not own_layout:
        raise RequestError("--layout-backend blenderproc samples a new layout; it cannot be combined with --layout")
    if req.layout_backend == "blenderproc" and req.layout is None:
        from .layout_blenderproc import resolve_mode

        resolve_mode("auto", req.blender)     # clear message (install command) before anything is written
    return own_layout


def _activate_variant(cfg: SceneConfig, req: RenderRequest):
    """The Mitsuba module with the run's variant active; errors name where it was chosen."""
    from .variants import VariantError, activate

    try:
        mi = activate(req.variant or cfg.render.get("variant", "auto"), mono=cfg.sensor["mode"] == "mono")
    except VariantError as exc:
        source = ("environment variable POLAR_RENDER_VARIANT" if os.environ.get("POLAR_RENDER_VARIANT")
                  else "--variant" if req.variant else f"{cfg.path}: render.variant")
        raise VariantError(f"{source}: {exc}") from None
    if "mono" in mi.variant() and cfg.sensor["mode"] != "mono":
        raise ValueError(f"variant {mi.variant()} renders one luminance channel; {cfg.path} has sensor.mode "
                         f"{cfg.sensor['mode']!r} (use a spectral variant, or sensor.mode: mono)")
    return mi


def _samples_to_render(req: RenderRequest, n: int) -> list[int]:
    todo = list(range(n)) if req.indices is None else sorted(set(int(i) for i in req.indices))
    bad = [i for i in todo if not 0 <= i < n]
    if bad:
        raise RequestError(f"indices: sample indices {bad} are outside 0..{n - 1}")
    if req.shard is not None:
        k, m = req.shard
        todo = [i for i in todo if i % m == k]
    return todo


def _plan(req: RenderRequest) -> _Plan:
    """Validate everything and read every input; writes nothing."""
    cfg = load_scene(req.scene)
    if req.light_variant:
        from .lights import apply_light_variant

        apply_light_variant(cfg, req.light_variant)
    out = Path(req.out)
    own_layout = _check_paths(req, out)
    spp = req.spp if req.spp is not None else cfg.render["spp"]
    if not _is_int(spp) or not 1 <= spp <= MAX_SPP:
        raise ValueError(f"{cfg.path}: render.spp: expected an integer >= 1, got {spp!r}")
    denoise = denoise_setting(cfg, req)
    mi = _activate_variant(cfg, req)
    given = read_layout(req.layout) if req.layout is not None else None
    if given is not None:
        if not given.frames():
            raise ValueError(f"{given.root}: the layout has no frames")
        n = req.n if req.n is not None else len(given.frames())
        res = tuple(req.res or (given.frames()[0].width, given.frames()[0].height))
    else:
        n = req.n if req.n is not None else 8
        lcfg = layout_config(cfg, req.res)   # the scene's layout section, checked before it is sampled
        res = (lcfg.width, lcfg.height)
    early = {"scene": cfg.name, "config_digest": cfg.digest(), "seed": req.seed,
             "layout_backend": req.layout_backend if own_layout else "given", "spp": int(spp), "denoise": denoise,
             "layout": _rel(out, req.layout if req.layout is not None else out / "layout"),
             "layout_digest": given.digest if given is not None and not own_layout else None,
             "variant": mi.variant()}
    if req.res is not None or given is not None or (out / "run.json").exists():
        early["res"] = list(res)
    _check_run_manifest(out, early, write=False)
    return _Plan(cfg, mi, given, n, res, int(spp), _samples_to_render(req, n), early)


def _check_disk(req: RenderRequest, plan: _Plan) -> None:
    """Refuse a run whose samples (those not finished yet) and layout would not fit."""
    from .limits import check_free_space

    samples = Path(req.out) / "samples"
    pending = [i for i in plan.todo if not (samples / f"{i:06d}" / "meta.json").is_file()]
    channels = 1 if plan.cfg.sensor["mode"] == "mono" else 3
    dofp = bool((plan.cfg.sensor.get("dofp") or {}).get("enabled", False))
    need = len(pending) * sample_bytes(*plan.res, channels, dofp)
    if plan.given is None:
        need += layout_bytes(plan.cfg, layout_config(plan.cfg, req.res), plan.n, req.layout_backend)
    check_free_space(req.out, need, what=f"rendering {len(pending)} samples at {plan.res[0]}x{plan.res[1]}"
                                         + (" and their layout" if plan.given is None else ""))


def run(req: RenderRequest) -> RunSummary:
    """Render the request's samples into ``req.out`` (module docstring). Everything is
    validated and every input read before anything is written; the run holds OUT's lock
    (:mod:`polar_render.runlock`) while it writes, unless it is a worker of a run that does."""
    t_start = time.perf_counter()
    req.validate()
    req.out = Path(req.out)
    plan = _plan(req)
    if req.worker:
        return _execute(req, plan, t_start)
    _check_disk(req, plan)
    from .runlock import hold

    with hold(req.out, req.shard):
        _check_run_manifest(req.out, plan.early, write=False)   # again: another run may have finished meanwhile
        return _execute(req, plan, t_start)


def _execute(req: RenderRequest, plan: _Plan, t_start: float) -> RunSummary:
    cfg, mi, n, res, spp = plan.cfg, plan.mi, plan.n, plan.res, plan.spp
    summary = RunSummary(out=req.out, variant=mi.variant())
    t0 = time.perf_counter()
    layout = plan.given if plan.given is not None else prepare_layout(cfg, req, n)
    summary.layout_seconds = time.perf_counter() - t0
    frames = layout.frames()
    if not frames:
        raise ValueError(f"{layout.root}: the layout has no frames")
    if not req.worker:
        for w in layout.warnings:   # once per run, not per sample
            print(f"warning: {w}", file=sys.stderr)
    samples_dir = req.out / "samples"
    io.clean_partial(samples_dir)
    manifest = {"scene": cfg.name, "scene_file": _rel(req.out, cfg.path), "config_digest": cfg.digest(),
                "seed": req.seed, "n": n, "spp": spp, "res": list(res), "clean": req.clean,
                "layout": _rel(req.out, layout.root), "layout_digest": plan.early["layout_digest"],
                "layout_backend": plan.early["layout_backend"], "denoise": plan.early["denoise"],
                "noise_seed": req.noise_seed, "variant": mi.variant(), "versions": software_versions(mi),
                "paths": "scene_file and layout are relative to this directory"}
    _check_run_manifest(req.out, manifest)

    scenes: dict[tuple, MitsubaScene] = {}   # (structure key, stain-capable) -> scene
    todo = plan.todo
    child = replace(req, layout=Path(layout.root), n=n, res=tuple(res), shard=None, workers=1, executor="local",
                    progress=False, worker=True)
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
        except io.NoSpaceError as exc:   # every further sample would fail the same way: stop
            raise RunAborted(f"{exc}; stopped after {summary.rendered} new samples (sample {i} not written; "
                             f"finished samples are kept, free space and rerun to resume)") from exc
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
                        # layout: relative to OUT (the run directory), like run.json's
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
        try:
            finish()
        finally:
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
        try:
            record_status(req.out, n, summary)
        except io.NoSpaceError as exc:
            raise RunAborted(f"{exc}; the samples are written, run.json's status is not updated") from exc
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
