"""A render run: plan -> layout -> sample loop, N samples into ``<out>/samples/<i:06d>/``.

Sample ``i`` uses frame ``i mod len(frames)`` of the layout and appearance drawn from
``(seed, i)``; it is a pure function of (scene config, seed, i) (:func:`polar_render.run.sample.render_sample`).
Each sample directory is built under a temporary name and renamed when complete
(:mod:`polar_render.outputs`), so a rerun skips finished samples and redoes interrupted ones.
``<out>/run.json`` records the configuration (:mod:`polar_render.run.manifest`); a rerun into the
same ``out`` with a different configuration is refused rather than mixing samples.

Before anything is written, :func:`run` validates the request (:mod:`polar_render.run.request`,
messages naming the CLI option) and settles the :mod:`plan <polar_render.run.plan>`: scene,
Mitsuba variant, a given layout, run.json, free space for the samples still to render. Only
then does it take OUT's lock (:mod:`polar_render.run.lock`) and write: the layout (sampled
unless given), run.json, then the samples, in this process or in workers
(:mod:`polar_render.run.executors`). Failed samples are retried ``retries`` times, then reported.
A full disk raises ``io.NoSpaceError`` naming the file: before the first sample (layout,
run.json) the CLI exits 2, part-way through a run :class:`RunAborted` (exit 1) keeps the
finished samples. :class:`RunHooks` lets benchmarks observe the sample loop without changing it.
"""
from __future__ import annotations

import gc
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from polar_render import io
from polar_render.config.scenes import SceneConfig
from polar_render.mitsuba.scene import FrameStructure, MitsubaScene
from polar_render.outputs import SAMPLES_DIR, is_complete, sample_dir
from polar_render.progress import note, progress
from polar_render.run.executors import run_workers
from polar_render.run.lock import hold
from polar_render.run.manifest import check_run_manifest, record_status, rel_to_out
from polar_render.run.plan import Plan, check_disk, plan, prepare_layout
from polar_render.run.request import RenderRequest, RequestError, RunAborted, RunSummary
from polar_render.run.sample import (RenderedSample, SampleContext, SampleImages, render_sample, software_versions,
                                     write_sample)


@dataclass
class RunHooks:
    """Observers of the sample loop of a run in this process (benchmarks and tests use them;
    the product does not). None changes what is rendered or written; they must not raise.
    Retries of failed samples are observed too; worker processes are not, so a request with
    ``workers > 1`` or ``executor="ray"`` refuses hooks.

    * ``on_sample(i)``: at each boundary of the loop, before sample ``i`` starts (also for a
      sample that is skipped as complete), and once with ``None`` after the last sample;
    * ``on_render(i, scene, images, appearance, mode, seconds)``: sample ``i`` rendered, while
      ``scene`` (a :class:`MitsubaScene`) is still in that sample's state; ``mode`` is the sensor
      mode (``rgb`` | ``mono``), ``seconds`` the time of ``render_images``;
    * ``on_write(i, seconds)``: sample ``i``'s files written (background writer thread),
      ``seconds`` the time of ``write_sample``.
    """
    on_sample: Callable[[int | None], None] | None = None
    on_render: Callable[[int, MitsubaScene, SampleImages, dict, str, float], None] | None = None
    on_write: Callable[[int, float], None] | None = None


def run(req: RenderRequest, hooks: RunHooks | None = None) -> RunSummary:
    """Render the request's samples into ``req.out`` (module docstring). Everything is
    validated and every input read before anything is written; the run holds OUT's lock
    while it writes, unless it is a worker of a run that does."""
    t_start = time.perf_counter()
    req.validate()
    req.out = Path(req.out)
    if hooks is not None and (req.workers > 1 or req.executor == "ray"):
        raise RequestError("hooks: they observe the loop in this process; use workers=1 and executor local")
    p = plan(req)
    if req.worker:
        return _execute(req, p, t_start, hooks or RunHooks())
    check_disk(req, p)
    with hold(req.out, req.shard):
        check_run_manifest(req.out, p.early, write=False)   # again: another run may have finished meanwhile
        return _execute(req, p, t_start, hooks or RunHooks())


def _execute(req: RenderRequest, p: Plan, t_start: float, hooks: RunHooks) -> RunSummary:
    """Layout, run.json, then the samples (here or in workers), retries and the status."""
    summary = RunSummary(out=req.out, variant=p.mi.variant())
    t0 = time.perf_counter()
    layout = p.given if p.given is not None else prepare_layout(p.cfg, req, p.n)
    summary.layout_seconds = time.perf_counter() - t0
    frames = layout.frames()
    if not frames:
        raise ValueError(f"{layout.root}: the layout has no frames")
    if not req.worker:
        for w in layout.warnings:   # once per run, not per sample
            note(f"warning: {w}")
    io.clean_partial(req.out / SAMPLES_DIR)
    manifest = _run_manifest(req, p, layout.root)
    check_run_manifest(req.out, manifest)
    child = replace(req, layout=Path(layout.root), n=p.n, res=tuple(p.res), shard=None, workers=1, executor="local",
                    progress=False, worker=True)
    if req.workers > 1 or req.executor == "ray":
        return run_workers(run, child, list(p.todo), req.workers, req.executor, req.progress, p.cfg.name,
                           summary, t_start)
    ctx = SampleContext(p.cfg, layout, frames, req.seed, tuple(p.res), p.spp, req.clean, req.noise_seed,
                        manifest["denoise"], manifest["layout"], manifest["variant"], manifest["versions"])
    _loop(ctx, p.todo, req.out, _SceneCache(p.mi, p.cfg, p.res, p.spp), req.progress, summary, hooks)
    _retry(child, req.retries, summary, hooks)
    summary.seconds = time.perf_counter() - t_start
    if req.progress or req.indices is None:  # top-level runs, not worker chunks
        try:
            record_status(req.out, p.n, summary.failed)
        except io.NoSpaceError as exc:
            raise RunAborted(f"{exc}; the samples are written, run.json's status is not updated") from exc
    return summary


def _run_manifest(req: RenderRequest, p: Plan, layout_root: Path) -> dict:
    """run.json of the run (paths relative to OUT)."""
    return {"scene": p.cfg.name, "scene_file": rel_to_out(req.out, p.cfg.path), "config_digest": p.cfg.digest(),
            "seed": req.seed, "n": p.n, "spp": p.spp, "res": list(p.res), "clean": req.clean,
            "layout": rel_to_out(req.out, layout_root), "layout_digest": p.early["layout_digest"],
            "layout_backend": p.early["layout_backend"], "denoise": p.early["denoise"],
            "noise_seed": req.noise_seed, "variant": p.mi.variant(), "versions": software_versions(p.mi),
            "paths": "scene_file and layout are relative to this directory"}


def _loop(ctx: SampleContext, todo: list[int], out: Path, scenes: "_SceneCache", show: bool,
          summary: RunSummary, hooks: RunHooks) -> None:
    """Render ``todo`` in order, skipping complete samples; failures are recorded in ``summary``."""
    writer = _Writer(summary, hooks.on_write)
    bar = progress(todo, desc=f"render {ctx.cfg.name}", unit="sample", enabled=show)
    try:
        for i in bar:
            if hooks.on_sample:
                hooks.on_sample(i)
            dest = sample_dir(out, i)
            if is_complete(dest):
                summary.skipped += 1
                continue
            try:
                r = render_sample(ctx, i, scenes.chooser)
            except (ValueError, RuntimeError, OSError) as exc:
                writer.fail(i, exc)
                continue
            if hooks.on_render:
                hooks.on_render(i, r.scene, r.images, r.appearance, ctx.cfg.sensor["mode"], r.seconds)
            writer.submit(dest, r, ctx.cfg.sensor)
        if hooks.on_sample:
            hooks.on_sample(None)
        writer.finish()
    finally:
        writer.close()


def _retry(child: RenderRequest, retries: int, summary: RunSummary, hooks: RunHooks) -> None:
    """Bounded retries of the failed samples, each in a fresh scene; the last failures stay."""
    for _ in range(retries):
        if not summary.failed:
            break
        again = run(replace(child, indices=sorted(summary.failed), retries=0), hooks)
        summary.rendered += again.rendered
        summary.render_seconds += again.render_seconds
        summary.failed = again.failed


class _SceneCache:
    """Mitsuba scenes of one frame structure at a time, keyed by (structure key, stain-capable):
    samples of one structure reuse its scene (and compiled kernels); a new structure frees the
    previous scenes before its own is built, so memory stays flat."""

    def __init__(self, mi, cfg: SceneConfig, res: tuple[int, int], spp: int):
        self.mi, self.cfg, self.res, self.spp = mi, cfg, res, spp
        self.scenes: dict[tuple, MitsubaScene] = {}

    def chooser(self, structure: FrameStructure, appearance: dict) -> Callable[[bool], MitsubaScene]:
        """For a sample of ``structure``: stains -> its scene (built on first use)."""
        key = structure.key(self.cfg.materials)
        if not any(k[0] == key for k in self.scenes):
            self.scenes.clear()
            gc.collect()    # free the previous scene before building the next

        def scene_for(stains: bool) -> MitsubaScene:
            if (key, stains) not in self.scenes:
                self.scenes[(key, stains)] = MitsubaScene(self.mi, self.cfg, structure, appearance, self.res[0],
                                                          self.res[1], self.spp, int(self.cfg.render["max_depth"]),
                                                          stains=stains)
            return self.scenes[(key, stains)]

        return scene_for


class _Writer:
    """Writes sample i's files in one background thread while sample i+1 renders. At most one
    write is in flight (bounded memory), and a sample only counts as rendered once its
    directory has been renamed into place."""

    def __init__(self, summary: RunSummary, on_write: Callable[[int, float], None] | None):
        self.summary, self.on_write = summary, on_write
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polar-render-write")
        self.pending: tuple | None = None

    def fail(self, i: int, exc: BaseException) -> None:
        self.summary.failed[i] = f"{type(exc).__name__}: {exc}"
        note(f"sample {i} failed: {self.summary.failed[i]}")

    def submit(self, dest: Path, r: RenderedSample, sensor: dict) -> None:
        """Wait for the previous write, then start writing ``r`` into ``dest``."""
        self.finish()
        fut = self.pool.submit(_write_sample_dir, dest, r, sensor, self.on_write)
        self.pending = (r.index, fut, r.started)

    def finish(self) -> None:
        """Wait for the write in flight; a full disk aborts the run (every further sample
        would fail the same way), other errors fail the sample."""
        if self.pending is None:
            return
        i, fut, t = self.pending
        self.pending = None
        try:
            fut.result()
            self.summary.render_seconds.append(time.perf_counter() - t)
            self.summary.rendered += 1
        except io.NoSpaceError as exc:
            raise RunAborted(f"{exc}; stopped after {self.summary.rendered} new samples (sample {i} not written; "
                             f"finished samples are kept, free space and rerun to resume)") from exc
        except (ValueError, RuntimeError, OSError) as exc:
            self.fail(i, exc)

    def close(self) -> None:
        try:
            self.finish()
        finally:
            self.pool.shutdown(wait=True)


def _write_sample_dir(dest: Path, r: RenderedSample, sensor: dict, on_write) -> None:
    with io.atomic_dir(dest) as tmp:
        t = time.perf_counter()
        write_sample(tmp, r.images, r.meta, sensor)
        seconds = time.perf_counter() - t
    if on_write:
        on_write(r.index, seconds)
