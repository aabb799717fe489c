"""Render one sample: Stokes pass + exact AOV pass -> every modality, written atomically.

What a sample directory holds (files, dtypes, units, meta.json keys) is stated once, in
:mod:`polar_render.outputs`; :func:`write_sample` writes exactly that. :func:`render_sample`
builds sample ``i`` of a run (frame, appearance, anomalies), renders it and returns its
images and meta.json record; it is a pure function of (scene config, seed, i).

Normals, depth and masks come from one ray through each pixel centre (box filter), so
they are exact per pixel; the Stokes pass also uses a box filter so that its pixels
align with the masks (no reconstruction-filter blur across edges).

Radiance policy (no negative radiance in any output)
----------------------------------------------------
Cause of negative values: the spectral variants trace a few wavelengths per path and the
film converts each spectral sample to linear sRGB through XYZ; the XYZ -> sRGB matrix has
negative entries, so a single wavelength gives negative R, G or B (e.g. 500 nm: R < 0), and
at low spp the per-pixel average has not converged to the non-negative value. The same
conversion also pushes |(S1, S2, S3)| above S0 (DoP > 1). Mono variants convert nothing:
every path's Stokes vector is physical and so is their mean (the cone is convex), up to
float rounding; a mono sensor on a spectral variant takes the luminance Y, whose weights
(CIE y-bar) are non-negative. Every sample, whatever the variant, projects each pixel's (and each colour channel's) Stokes vector
onto the physical cone S0 >= |(S1, S2, S3)| (``polarization.project_to_cone``, Euclidean,
vectors inside are untouched); meta.json counts the changed vectors (``cone_projection``).

* ``stokes``: S0 >= 0 (radiance); S1, S2, S3 are signed by definition, |(S1, S2, S3)| <= S0.
* ``intensity`` = S0 >= 0; ``pol0..135`` >= 0 (and clipped to the 16-bit range), with
  I0 + I90 = I45 + I135 = S0 as they are computed from the projected Stokes.
* ``dolp`` in [0, 1], ``aolp`` in [-pi/2, pi/2]: derived, from the projected Stokes.
* ``render.denoise: oidn`` (``denoise.py``): the four polarizer images are denoised with
  OIDN (albedo + normal guides), then S0, S1, S2 are recomputed from them and projected
  onto the linear cone; S3 is not denoised (not observable through linear polarizers):
  it keeps the rendered S3 / S0, scaled by the denoised S0 and clipped into the cone.
  meta.json ``denoise`` records the method, device, guides and times.
"""
from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from polar_render import io
from polar_render.version import __version__
from polar_render.bop import BopLayout, Frame
from polar_render.config.scenes import SceneConfig
from polar_render.physics.polarization import LUMA, aolp, dolp, polarizer_images, project_to_cone
from polar_render.anomalies.aov import AovView
from polar_render.anomalies.masks import instance_masks
from polar_render.anomalies.parts import swap_materials
from polar_render.anomalies.registry import changes_geometry
from polar_render.anomalies.sampling import sample_anomalies, unlabelled_events
from polar_render.anomalies.stain import stain_parts
from polar_render.mitsuba.scene import FrameStructure, MitsubaScene, frame_structure, objects_centre, world_to_camera
from polar_render.anomalies.visibility import (DEFAULT_MAX_VIEW_ANGLE_DEG, DEFAULT_MIN_VISIBLE_PX,
                                                visible_surface)
from polar_render.outputs import META_FILE, MODALITIES, entry
from polar_render.physics.dofp import SensorModel, simulate
from polar_render.randomize import sample_appearance
from polar_render.rng import render_seed, stream

ZERO_S0 = 1e-8
# stokes/intensity/dolp/aolp and the polarizer PNGs are Monte Carlo noise down to the last
# bits: zlib saves ~10-25 % of the TIFFs and 6-9 % of the PNGs for ~0.5 s + 4 x 0.03 s of
# CPU per 640x480 sample (about the render time); they are written uncompressed.
# normals and masks (mostly exact zeros or constant runs) stay compressed; depth (smooth
# but every mantissa differs: -32 % for 16 ms) is written uncompressed.
NOISY_COMPRESS = False


@dataclass
class SampleImages:
    stokes: np.ndarray        # (4, H, W, C) float32
    channels: list[str]       # C names
    normals: np.ndarray       # (H, W, 3) float32, OpenCV camera frame
    depth: np.ndarray         # (H, W) float32, metres
    object_mask: np.ndarray   # (H, W) uint16
    part_mask: np.ndarray     # (H, W) uint16
    nonfinite: int            # Stokes values that were NaN/inf (set to 0)
    timings: dict
    anomaly_mask: np.ndarray | None = None   # (H, W) uint16 anomaly instance ids
    anomalies: list | None = None            # table of visible anomaly instances
    radiance: dict | None = None             # denoise settings and cone-projection counts (meta.json)


def stokes_from_render(raw: np.ndarray, mode: str) -> tuple[np.ndarray, list[str]]:
    """Mitsuba's stokes-integrator output -> (4, H, W, C).

    Spectral variants: (H, W, 15) = R, G, B, S0..S3 x (R, G, B); a mono sensor gets their
    Rec. 709 luminance. Mono variants: (H, W, 13) = Y, S0..S3 x (R, G, B) with R = G = B
    (one traced channel), so channel R is the luminance; only a mono sensor may use them."""
    n_lead = {15: 3, 13: 1}.get(raw.shape[-1])
    if n_lead is None:
        raise RuntimeError(f"unexpected stokes output with {raw.shape[-1]} channels "
                           "(expected 15: RGB + 4x RGB, or 13 from a mono variant: Y + 4x RGB)")
    st = np.moveaxis(raw[..., n_lead:].reshape(*raw.shape[:2], 4, 3), 2, 0)
    if n_lead == 1:
        if mode != "mono":
            raise RuntimeError("a mono Mitsuba variant cannot render an RGB sensor (sensor.mode: rgb)")
        return np.ascontiguousarray(st[..., :1], dtype=np.float32), ["Y"]
    if mode == "mono":
        return (st @ LUMA)[..., None].astype(np.float32), ["Y"]
    return np.ascontiguousarray(st, dtype=np.float32), ["R", "G", "B"]


def radiance_outputs(raw: np.ndarray, mode: str, scene: MitsubaScene, seed: int,
                     denoise: str = "none") -> tuple[np.ndarray, list[str], dict]:
    """Stokes (4, H, W, C) inside the physical cone (module docstring: radiance policy),
    denoised when ``denoise == "oidn"`` (guide pass with ``seed``). Returns it, the channel
    names and the record for meta.json (``denoise``, ``cone_projection``, timings)."""
    stokes, channels = stokes_from_render(raw, mode)
    rec = {"denoise": {"method": denoise}}
    if denoise == "oidn":
        from polar_render.denoise import CLEAN_AUX, GUIDE_SPP, QUALITY, denoise_stokes, oidn_device

        t0 = time.perf_counter()
        guides = scene.render_guides(seed, GUIDE_SPP)
        t1 = time.perf_counter()
        device = oidn_device()
        stokes, changed = denoise_stokes(stokes, guides, device)
        rec["denoise"].update({"device": device, "quality": QUALITY, "clean_aux": CLEAN_AUX, "guides": "albedo+normal",
                               "guide_spp": GUIDE_SPP, "inputs": "pol0, pol45, pol90, pol135",
                               "s3": "rendered S3/S0 times denoised S0, clipped into the cone"})
        rec["cone_projection"] = {"stokes_vectors": changed, "after": "denoising (linear cone)"}
        rec["timings"] = {"guide_render_s": t1 - t0, "denoise_s": time.perf_counter() - t1}
        return stokes, channels, rec
    if denoise != "none":
        raise ValueError(f"render.denoise must be one of none, oidn; got {denoise!r}")
    stokes, changed = project_to_cone(stokes)
    rec["cone_projection"] = {"stokes_vectors": int(changed.sum()), "after": "rendering"}
    return stokes, channels, rec


def aov_products(aov: np.ndarray, frame: Frame, scene: MitsubaScene):
    """Masks, camera-frame normals and z-depth from the AOV pass."""
    sid = np.rint(aov[..., 6]).astype(np.int64)
    object_mask = np.zeros(sid.shape, np.uint16)
    part_mask = np.zeros(sid.shape, np.uint16)
    for reg, slot in scene.shape_registry.items():
        hit = sid == reg
        object_mask[hit] = slot.instance
        part_mask[hit] = slot.part_id
    hit_any = sid > 0
    w2c = world_to_camera(frame)
    # float32 throughout (the AOV pass is float32): depth to ~1e-7 m, normals to ~1e-7
    pos = aov[..., 0:3]
    depth = pos @ w2c[2, :3].astype(np.float32) + np.float32(w2c[2, 3])
    depth = np.where(hit_any, depth, np.float32(0.0))
    n = aov[..., 3:6] @ w2c[:3, :3].T.astype(np.float32)
    norm = np.sqrt(np.einsum("...i,...i->...", n, n))[..., None]
    n = np.where(hit_any[..., None] & (norm > 0), n / np.maximum(norm, np.float32(1e-12)), np.float32(0.0))
    return object_mask, part_mask, n.astype(np.float32, copy=False), depth.astype(np.float32, copy=False)


def _view(aov: np.ndarray, frame: Frame, scene: MitsubaScene) -> AovView:
    sid = np.rint(aov[..., 6]).astype(np.int64)
    slot = np.full(sid.shape, -1, np.int64)
    index = {s.key: k for k, s in enumerate(scene.structure.slots)}
    for reg, s in scene.shape_registry.items():
        slot[sid == reg] = index[s.key]
    _, _, n, depth = aov_products(aov, frame, scene)
    face = np.rint(aov[..., 7]).astype(np.int64) if aov.shape[-1] > 7 else None   # triangle index (regions)
    return AovView(slot, aov[..., 0:3], n, depth, face)


def render_images(scene: MitsubaScene, frame: Frame, appearance: dict, mode: str,
                  anomalies: list | None = None, denoise: str = "none") -> SampleImages:
    """Render one sample; ``anomalies`` (from ``anomalies.sample_anomalies``) are applied on
    top of the clean sample, and their instance mask is computed. ``denoise``: ``none`` or
    ``oidn`` (``radiance_outputs``)."""
    anomalies = anomalies or []
    t0 = time.perf_counter()
    scene.update(frame, swap_materials(appearance, anomalies))
    t_update = time.perf_counter() - t0
    clean_view = None
    crop = scene.objects_bbox(frame) if anomalies else None  # anomalies live on the objects
    if crop is not None and (crop[2] <= crop[0] or crop[3] <= crop[1]):
        crop = None
    if crop is not None and changes_geometry(anomalies):
        clean_view = _view(scene.render_aov(supersampled=True, crop=crop), frame, scene)
    if anomalies:
        scene.apply_anomalies(anomalies)
    t1 = time.perf_counter()
    raw = scene.render_stokes(appearance["render_seed"])
    t2 = time.perf_counter()
    aov = scene.render_aov()
    t3 = time.perf_counter()
    amask, table = np.zeros(aov.shape[:2], np.uint16), []
    t_masks = time.perf_counter()
    if crop is not None:
        x0, y0, x1, y1 = crop
        anom_view = _view(scene.render_aov(supersampled=True, crop=crop), frame, scene)
        sub, table = instance_masks(anomalies, scene.structure.slots, anom_view, clean_view, scene.poses,
                                    scene.mask_ss)
        amask[y0:y1, x0:x1] = sub
        for t in table:
            t["bbox"] = [t["bbox"][0] + x0, t["bbox"][1] + y0, t["bbox"][2] + x0, t["bbox"][3] + y0]
        label_visibility(table, appearance, int(scene.cfg.anomalies.get("min_visible_px", DEFAULT_MIN_VISIBLE_PX)))
    t_masks = time.perf_counter() - t_masks
    bad = ~np.isfinite(raw)
    nonfinite = int(bad.sum())
    if nonfinite:
        raw = np.where(bad, 0.0, raw).astype(np.float32)
    stokes, channels, radiance = radiance_outputs(raw, mode, scene, appearance["render_seed"], denoise)
    object_mask, part_mask, normals, depth = aov_products(aov, frame, scene)
    t4 = time.perf_counter()
    return SampleImages(stokes, channels, normals, depth, object_mask, part_mask, nonfinite,
                        {"update_s": t1 - t0, "stokes_render_s": t2 - t1, "aov_render_s": t3 - t2, "post_s": t4 - t3,
                         # parts of the above spent on anomalies (geometry/texture edits + clean
                         # footprint pass; anomalous footprint pass + instance masks)
                         "anomaly_apply_s": t1 - t0 - t_update, "anomaly_masks_s": t_masks,
                         **radiance.pop("timings", {})},   # post_s includes guide_render_s + denoise_s
                        amask, table, radiance)


def label_visibility(table: list[dict], appearance: dict, min_px: int) -> None:
    """Complete each instance of the mask table: ``visible_px`` (its pixels), ``below_min_visible``
    (fewer than ``min_px``: datasets treat it as an ignore region), and the exact contrast of
    stains (``reflectance_change``: mean |delta reflectance| / base reflectance) and swapped
    parts (``material_difference``: largest change of a colour channel or of GGX alpha)."""
    mats = {(p["instance"], p["part"]): p for p in appearance["parts"]}

    def base(inst, parts) -> float:
        cols = [np.mean(mats[(inst, q)].get("color", [1.0, 1.0, 1.0])) for q in parts if (inst, q) in mats]
        return float(np.mean(cols)) if cols else 1.0

    for t in table:
        t["visible_px"] = int(t["area_px"])
        t["below_min_visible"] = bool(t["area_px"] < min_px)
        if t["class"] == "water_stain":
            parts = [p["part"] for p in appearance["parts"] if p["instance"] == t["instance"]]
            delta = t.pop("reflectance_delta", 0.0)
            t.update(contrast=float(delta / max(base(t["instance"], parts), 1e-3)), contrast_measure="reflectance_change")
        elif t["class"] == "swapped":
            a, b = (mats.get((t["instance"], q), {}) for q in t["parts"])
            diffs = [abs(x - y) for x, y in zip(a.get("color", []), b.get("color", []))]
            diffs.append(abs(a.get("alpha", 0.0) - b.get("alpha", 0.0)))
            t.update(contrast=float(max(diffs)), contrast_measure="material_difference")


def visible_surface_for(scene: MitsubaScene, frame: Frame, appearance: dict):
    """:class:`polar_render.anomalies.visibility.VisibleSurface` of the clean sample (exact AOV pass
    through pixel centres, after ``scene.update``), for placing anomalies where they are seen."""
    scene.update(frame, appearance)
    view = _view(scene.render_aov(), frame, scene)
    angle = float(scene.cfg.anomalies.get("max_view_angle_deg", DEFAULT_MAX_VIEW_ANGLE_DEG))
    return visible_surface(view, scene.structure.slots, scene.poses, world_to_camera(frame), frame.K, angle)


def exposure_scale(stokes: np.ndarray, sensor: dict) -> float:
    """DN per radiance unit shared by the four polarizer images."""
    exp = sensor.get("exposure", "auto")
    if exp != "auto":
        return float(exp)
    ref = float(np.percentile(stokes[0], float(sensor.get("exposure_percentile", 99.5))))
    return 0.9 * 65535.0 / ref if ref > ZERO_S0 else 1.0


def squeeze_mono(x: np.ndarray) -> np.ndarray:
    """(H, W, 1) -> (H, W): a TIFF cannot tell the two apart, so mono images are stored 2-D."""
    return x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x


def _write_radiance(dest: Path, st: np.ndarray, ch: list[str], sensor: dict) -> tuple[dict, float]:
    """stokes, pol0..135, intensity, dolp and aolp of Stokes ``st`` (4, H, W, C); returns their
    ``files`` entries and the exposure scale of the polarizer images."""
    files = {}
    stokes_hwc = np.concatenate([st[k] for k in range(4)], axis=-1)
    io.write_float_tiff(dest / MODALITIES["stokes"].file, stokes_hwc, compress=NOISY_COMPRESS)
    files["stokes"] = entry("stokes", stokes_hwc.shape, [f"S{k}.{c}" for k in range(4) for c in ch],
                            reference_axis="image x (right)")
    scale = exposure_scale(st, sensor)
    for angle, img in polarizer_images(st).items():
        dn = np.clip(np.rint(img * scale), 0, 65535).astype(np.uint16)
        dn = dn[..., 0] if len(ch) == 1 else dn
        name = f"pol{angle}"
        io.write_png16(dest / MODALITIES[name].file, dn, compress=NOISY_COMPRESS)
        files[name] = entry(name, dn.shape, ch, polarizer_deg=angle, exposure_scale=scale)
    for name, img in (("intensity", st[0]), ("dolp", dolp(st, ZERO_S0)), ("aolp", aolp(st, ZERO_S0))):
        img = squeeze_mono(img)
        io.write_float_tiff(dest / MODALITIES[name].file, img, compress=NOISY_COMPRESS)
        files[name] = entry(name, img.shape, ch)
    return files, scale


def _write_geometry(dest: Path, images: SampleImages) -> dict:
    """normals, depth and the masks; returns their ``files`` entries."""
    h, w = images.depth.shape
    io.write_float_tiff(dest / MODALITIES["normals"].file, images.normals)
    io.write_float_tiff(dest / MODALITIES["depth"].file, images.depth, compress=False)   # zlib: 16 ms for -32 %
    files = {"normals": entry("normals", images.normals.shape), "depth": entry("depth", images.depth.shape)}
    masks = {"object_mask": images.object_mask, "anomaly_mask": images.anomaly_mask, "part_mask": images.part_mask}
    for name, mask in masks.items():
        if mask is not None:
            io.write_png16(dest / MODALITIES[name].file, mask)
            files[name] = entry(name, (h, w))
    return files


def _write_dofp(dest: Path, st: np.ndarray, ch: list[str], sensor: dict, meta: dict) -> dict:
    """raw_mosaic of the optional DoFP sensor simulation (``sensor.dofp``, default off)."""
    dofp = dict(sensor.get("dofp") or {})
    if not dofp.pop("enabled", False):
        return {}
    raw, info = simulate(st, SensorModel.from_dict(dofp), stream("sensor", meta["seed"], meta["index"]))
    io.write_png16(dest / MODALITIES["raw_mosaic"].file, raw)
    return {"raw_mosaic": entry("raw_mosaic", raw.shape, ch if raw.ndim == 3 else ["DN"], sensor=info)}


def write_sample(dest: Path, images: SampleImages, meta: dict, sensor: dict) -> dict:
    """Write every modality of one sample into ``dest`` (already a temporary directory), as
    :mod:`polar_render.outputs` states, and its meta.json; returns the meta.json record."""
    st, ch = images.stokes, images.channels
    files, scale = _write_radiance(dest, st, ch, sensor)
    files.update(_write_geometry(dest, images))
    files.update(_write_dofp(dest, st, ch, sensor, meta))
    meta = dict(meta)
    meta["files"] = files
    meta["exposure_scale"] = scale
    meta["anomalies"] = images.anomalies or []
    meta["nonfinite_stokes_values"] = images.nonfinite
    meta.update(images.radiance or {})     # "denoise", "cone_projection" (radiance policy)
    meta["zero_intensity_pixels"] = int((st[0].max(axis=-1) <= ZERO_S0).sum())
    meta["timings"] = images.timings
    io.write_json(dest / META_FILE, meta)
    return meta


def software_versions(mi) -> dict:
    import drjit
    return {"polar_render": __version__, "mitsuba": mi.__version__, "drjit": drjit.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine()}


def structure_table(structure: FrameStructure) -> list[dict]:
    return [{"part_id": s.part_id, "instance": s.instance, "obj_id": s.obj_id, "part": s.part,
             "material": s.material, "mesh": s.mesh.name} for s in structure.slots]


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


def independent_render_seed(seed: int, index: int, noise_seed: int) -> int:
    """Mitsuba sampler seed of sample ``index`` on the independent stream ``noise_seed``
    (``--noise-seed``): every sampled value and every exact pass stay those of the sample;
    only the Monte Carlo estimate differs, so two such renders measure render noise."""
    if isinstance(noise_seed, bool) or not isinstance(noise_seed, int) or noise_seed < 0:
        raise ValueError(f"NOISE_SEED must be an integer >= 0, got {noise_seed!r}")
    return render_seed(seed, index, noise_seed)


def view_name(cfg: SceneConfig, frame: Frame) -> str | None:
    """Name of the station view a frame was taken from (layout mode station), else None."""
    views = list((cfg.layout or {}).get("views") or {})
    return views[frame.im_id] if cfg.layout.get("mode") == "station" and frame.im_id < len(views) else None


@dataclass(frozen=True)
class SampleContext:
    """What every sample of a run shares, settled by the runner before its loop."""
    cfg: SceneConfig
    layout: BopLayout
    frames: list[Frame]          # layout.frames(); sample i uses frame i mod len(frames)
    seed: int
    res: tuple[int, int]         # (width, height) in pixels
    spp: int
    clean: bool                  # clean twin: anomalies sampled, not applied
    noise_seed: int | None
    denoise: str                 # "none" | "oidn"
    layout_rel: str              # the layout directory relative to OUT (meta.json frame.layout)
    variant: str
    versions: dict


# (structure, appearance) -> a function giving the (stain-capable or not) scene of that structure
SceneChooser = Callable[[FrameStructure, dict], Callable[[bool], MitsubaScene]]


@dataclass
class RenderedSample:
    """Sample ``index`` rendered: its images, meta.json record (before ``write_sample`` adds the
    files), the scene and appearance it was rendered with, when ``render_images`` started
    (``time.perf_counter``) and its seconds."""
    index: int
    images: SampleImages
    meta: dict
    scene: MitsubaScene
    appearance: dict
    started: float
    seconds: float


def render_sample(ctx: SampleContext, i: int, scenes: SceneChooser) -> RenderedSample:
    """Build and render sample ``i``: frame ``i mod len(frames)`` at the run's resolution, its
    appearance and anomalies drawn from ``(seed, i)``. Raises ValueError / RuntimeError / OSError
    for a sample that cannot be rendered (the runner records it as failed)."""
    frame = rescale_frame(ctx.frames[i % len(ctx.frames)], *ctx.res)
    world_to_camera(frame)  # SceneError naming cam_R_w2c if the frame has no world pose
    structure = frame_structure(ctx.cfg, ctx.layout, frame)
    slots = [(s.instance, s.obj_id, s.part, s.material) for s in structure.base_slots]
    appearance = sample_appearance(ctx.cfg, ctx.seed, i, slots, objects_centre(frame))
    if ctx.noise_seed is not None:
        appearance["render_seed"] = independent_render_seed(ctx.seed, i, ctx.noise_seed)
    scene_for = scenes(structure, appearance)
    dropped: list[dict] = []
    events = sample_anomalies(ctx.cfg.anomalies, ctx.seed, i, structure.slots, scene_for(False).models_mm,
                              visible=lambda: visible_surface_for(scene_for(False), frame, appearance),
                              dropped=dropped)
    # Samples with a water stain (and their clean twins) use the stain-capable scene; all
    # others the cheaper one. The choice depends on (config, seed, i) only.
    stained = any(a.cls == "water_stain" for a in events) and bool(stain_parts(ctx.cfg.anomalies))
    scene = scene_for(stained)
    t = time.perf_counter()
    images = render_images(scene, frame, appearance, ctx.cfg.sensor["mode"], [] if ctx.clean else events,
                           denoise=ctx.denoise)
    seconds = time.perf_counter() - t
    dropped += [] if ctx.clean else unlabelled_events(events, images.anomalies)
    meta = sample_meta(ctx, i, frame, structure, appearance, events, dropped)
    return RenderedSample(i, images, meta, scene, appearance, t, seconds)


def sample_meta(ctx: SampleContext, i: int, frame: Frame, structure: FrameStructure, appearance: dict,
                events: list, dropped: list[dict]) -> dict:
    """The meta.json record of sample ``i`` before :func:`write_sample` adds files and results."""
    objects = [{"instance": k + 1, "obj_id": o.obj_id, "cam_R_m2c": o.R_m2c, "cam_t_m2c_mm": o.t_m2c_mm}
               for k, o in enumerate(frame.objects)]
    return {"index": i, "seed": ctx.seed, "scene": ctx.cfg.name, "config_digest": ctx.cfg.digest(),
            # layout: relative to OUT (the run directory), like run.json's
            "frame": {"split": frame.split, "scene_id": frame.scene_id, "im_id": frame.im_id,
                      "layout": ctx.layout_rel, "cam_K": frame.K, "cam_R_w2c": frame.R_w2c,
                      "cam_t_w2c_mm": frame.t_w2c_mm, "objects": objects},
            "parts": structure_table(structure), "sampled": appearance, "spp": ctx.spp,
            "anomaly_events": [a.to_meta() for a in events], "clean_twin": ctx.clean,
            "anomalies_dropped": dropped, "variant": ctx.variant, "versions": ctx.versions,
            "noise_seed": ctx.noise_seed, "view": view_name(ctx.cfg, frame)}
