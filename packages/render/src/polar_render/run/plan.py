"""Everything a render run settles before it writes: the :class:`Plan`.

:func:`plan` loads the scene, checks the paths, activates the Mitsuba variant, reads and checks a
given layout (``bop.read_layout``), compares ``run.json`` and lists the samples to render;
:func:`check_disk` refuses a run whose pending samples (:func:`polar_render.outputs.sample_bytes`)
and layout would not fit. :func:`prepare_layout` then reads the given layout or samples a new
one into ``OUT/layout`` (embedded pybullet sampler or BlenderProc). Lengths in the layout are
millimetres (BOP); resolutions are (width, height) in pixels.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import trimesh

from polar_render import io
from polar_render.bop import BopLayout, read_layout
from polar_render.config.scenes import SceneConfig, load_scene
from polar_render.denoise import METHODS as DENOISE_METHODS
from polar_render.config.schema import layout_from_dict, sampler_spp_problem
from polar_render.layout.embedded import LayoutConfig, generate_layout
from polar_render.limits import check_free_space
from polar_render.mitsuba.lights import apply_light_variant
from polar_render.mitsuba.variants import VariantError, activate
from polar_render.outputs import is_complete, sample_bytes, sample_dir
from polar_render.paths import resolve_checked
from polar_render.run.manifest import check_run_manifest, rel_to_out
from polar_render.run.request import MAX_SPP, RenderRequest, RequestError, is_int

DEFAULT_N = 8   # samples of a sampled layout when --n is not given


@dataclass
class Plan:
    """What a run settled before writing anything."""
    cfg: SceneConfig
    mi: object                   # the mitsuba module, variant active
    given: BopLayout | None      # the layout read from req.layout (None: sample one into OUT/layout)
    n: int
    res: tuple[int, int]
    spp: int
    todo: list[int]              # sample indices this run renders (indices, shard applied)
    early: dict                  # run.json keys known before the layout exists


def object_models_mm(cfg: SceneConfig, obj_ids) -> dict[int, trimesh.Trimesh]:
    """BOP model of each object: the union of its parts (mm, model frame)."""
    models = {}
    for obj_id in sorted(set(obj_ids)):
        if obj_id not in cfg.objects:
            raise ValueError(f"{cfg.path}: layout.instances names obj_id {obj_id}, which objects: does not define")
        parts = [trimesh.load(p.mesh, process=False, force="mesh") for p in cfg.objects[obj_id].parts]
        models[obj_id] = trimesh.util.concatenate(parts)
    return models


def layout_config(cfg: SceneConfig, res: tuple[int, int] | None) -> LayoutConfig:
    """The scene's ``layout:`` section as a LayoutConfig, at ``res`` (focal lengths scaled)
    when given. Errors name the scene file."""
    if not cfg.layout:
        raise ValueError(f"{cfg.path}: no layout: section to sample a layout from; give --layout DIR "
                         f"(an existing BOP dataset) or add layout.instances to the scene file")
    try:
        lcfg = layout_from_dict(cfg.layout)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cfg.path}: layout: {exc}") from None
    if res is not None:
        s = res[0] / lcfg.width
        lcfg.fx, lcfg.fy = lcfg.fx * s, lcfg.fy * res[1] / lcfg.height
        lcfg.width, lcfg.height = res
    return lcfg


def prepare_layout(cfg: SceneConfig, req: RenderRequest, n: int) -> BopLayout:
    """The request's layout: the given one, or one sampled into ``OUT/layout`` for ``n`` samples."""
    if req.layout is not None:
        return read_layout(req.layout)
    lcfg = layout_config(cfg, req.res)
    n_scenes = math.ceil(n / lcfg.cameras_per_scene)
    root = io.make_dirs(Path(req.out) / "layout")   # io.DIR_MODE: never world-writable
    models = object_models_mm(cfg, lcfg.instances)
    if req.layout_backend == "blenderproc":
        from polar_render.layout.blenderproc.backend import generate_layout_blenderproc  # optional dependency

        generate_layout_blenderproc(root, models, lcfg, req.seed, range(n_scenes), progress=req.progress,
                                    blender=req.blender)
    else:
        generate_layout(root, models, lcfg, req.seed, range(n_scenes), progress=req.progress)
    return read_layout(root)


def layout_bytes(cfg: SceneConfig, lcfg: LayoutConfig, n: int, backend: str) -> int:
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


def denoise_setting(cfg: SceneConfig, req: RenderRequest) -> str:
    """``req.denoise`` (CLI ``--denoise``) else the scene's ``render.denoise`` (default none)."""
    value = req.denoise or cfg.render.get("denoise", "none")
    if value not in DENOISE_METHODS:
        raise ValueError(f"DENOISE must be one of {', '.join(DENOISE_METHODS)}, got {value!r}")
    return value


def check_disk(req: RenderRequest, plan: Plan) -> None:
    """Refuse a run whose samples (those not finished yet) and layout would not fit."""
    pending = [i for i in plan.todo if not is_complete(sample_dir(req.out, i))]
    channels = 1 if plan.cfg.sensor["mode"] == "mono" else 3
    dofp = bool((plan.cfg.sensor.get("dofp") or {}).get("enabled", False))
    need = len(pending) * sample_bytes(*plan.res, channels, dofp)
    if plan.given is None:
        need += layout_bytes(plan.cfg, layout_config(plan.cfg, req.res), plan.n, req.layout_backend)
    check_free_space(req.out, need, what=f"rendering {len(pending)} samples at {plan.res[0]}x{plan.res[1]}"
                                         + (" and their layout" if plan.given is None else ""))


def _check_paths(req: RenderRequest, out: Path) -> bool:
    """Refuse unusable --out / --layout paths; True when the layout is the run's own
    (sampled into OUT/layout; worker processes get it as a given one)."""
    resolve_checked(out, source="--out", key=str(out))   # symlink loops named as such
    if out.exists() and not out.is_dir():
        raise RequestError(f"--out: {out} exists and is not a directory")
    if req.layout is not None:
        resolve_checked(req.layout, source="--layout", key=str(req.layout))
    own_layout = req.layout is None or Path(req.layout).resolve() == (out / "layout").resolve()
    if req.layout_backend == "blenderproc" and not own_layout:
        raise RequestError("--layout-backend blenderproc samples a new layout; it cannot be combined with --layout")
    if req.layout_backend == "blenderproc" and req.layout is None:
        from polar_render.layout.blenderproc.backend import resolve_mode  # optional dependency

        resolve_mode("auto", req.blender)     # clear message (install command) before anything is written
    return own_layout


def _activate_variant(cfg: SceneConfig, req: RenderRequest):
    """The Mitsuba module with the run's variant active; errors name where it was chosen."""
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


def _scene(req: RenderRequest) -> SceneConfig:
    """The request's scene, with its light variant applied."""
    cfg = load_scene(req.scene)
    if req.light_variant:
        apply_light_variant(cfg, req.light_variant)
    return cfg


def _spp(cfg: SceneConfig, req: RenderRequest) -> int:
    """The run's samples per pixel: the request's, else the scene file's render.spp."""
    spp = req.spp if req.spp is not None else cfg.render["spp"]
    if not is_int(spp) or not 1 <= spp <= MAX_SPP:
        raise ValueError(f"{cfg.path}: render.spp: expected an integer >= 1, got {spp!r}")
    why = sampler_spp_problem(cfg.render.get("sampler"), int(spp))   # the scene's own spp passed the schema
    if why:
        raise RequestError(f"--spp: {why} (scene {cfg.path})")
    return int(spp)


def plan(req: RenderRequest) -> Plan:
    """Validate everything and read every input; writes nothing."""
    out = Path(req.out)
    cfg = _scene(req)
    own_layout = _check_paths(req, out)
    spp = _spp(cfg, req)
    denoise = denoise_setting(cfg, req)
    mi = _activate_variant(cfg, req)
    given = read_layout(req.layout) if req.layout is not None else None
    if given is not None:
        if not given.frames():
            raise ValueError(f"{given.root}: the layout has no frames")
        n = req.n if req.n is not None else len(given.frames())
        res = tuple(req.res or (given.frames()[0].width, given.frames()[0].height))
    else:
        n = req.n if req.n is not None else DEFAULT_N
        lcfg = layout_config(cfg, req.res)   # the scene's layout section, checked before it is sampled
        res = (lcfg.width, lcfg.height)
    early = {"scene": cfg.name, "config_digest": cfg.digest(), "seed": req.seed,
             "layout_backend": req.layout_backend if own_layout else "given", "spp": spp, "denoise": denoise,
             "layout": rel_to_out(out, req.layout if req.layout is not None else out / "layout"),
             "layout_digest": given.digest if given is not None and not own_layout else None,
             "variant": mi.variant()}
    if req.res is not None or given is not None or (out / "run.json").exists():
        early["res"] = list(res)
    check_run_manifest(out, early, write=False)
    return Plan(cfg, mi, given, n, res, spp, _samples_to_render(req, n), early)
