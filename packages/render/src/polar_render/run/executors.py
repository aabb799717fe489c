"""Parallel execution of a run: chunks of sample indices rendered in worker processes or Ray tasks.

:func:`run_workers` splits the indices round-robin into ``workers`` chunks, each rendered by the
runner's ``run`` in its own process (kernels compiled once per worker): local spawned processes,
or Ray tasks (``RAY_ADDRESS``, else a local Ray instance on 127.0.0.1; one GPU per task where the
cluster has GPUs; OUT must then be on storage every node sees). Sample i does not depend on
which worker renders it. A worker that dies fails its unfinished samples; a rerun renders
exactly those. Progress is counted from the sample directories, which every worker writes.
The render function is passed in (the runner's ``run``, a module-level function that pickles
by reference), so this module does not import the runner.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import replace

from polar_render.outputs import is_complete, sample_dir
from polar_render.progress import progress
from polar_render.run.manifest import record_status
from polar_render.run.request import RenderRequest, RunSummary

Render = Callable[[RenderRequest], RunSummary]
POLL_S = 0.5   # seconds between progress updates


def run_workers(render: Render, child: RenderRequest, todo: list[int], workers: int, executor: str,
                show: bool, name: str, summary: RunSummary, t_start: float) -> RunSummary:
    """Render ``todo`` with ``render`` in ``workers`` processes (``executor`` "local" or "ray");
    ``child`` is the worker request (its ``indices`` are replaced per chunk). Fills ``summary``
    and records the status in run.json."""
    chunks = [replace(child, indices=c) for c in (todo[w::workers] for w in range(workers)) if c]

    def n_done() -> int:
        return sum(is_complete(sample_dir(child.out, i)) for i in todo)

    done_before = n_done()
    bar = progress(total=len(todo), initial=done_before, desc=f"render {name} {executor} x{len(chunks)}",
                   unit="sample", enabled=show)

    def tick() -> None:
        bar.update(n_done() - bar.n)

    parts = ray_map(render, chunks, tick) if executor == "ray" else local_map(render, chunks, tick)
    tick()
    bar.close()
    for p in parts:
        summary.add(p)
    summary.rendered = n_done() - done_before  # also counts samples a dead worker finished
    summary.seconds = time.perf_counter() - t_start
    record_status(child.out, child.n, summary.failed)
    return summary


def local_map(render: Render, chunks: list[RenderRequest], tick: Callable[[], None]) -> list[RunSummary]:
    """``render`` of each chunk in its own spawned process; a chunk whose process died or
    raised gives a summary failing its unfinished samples."""
    parts = []
    with ProcessPoolExecutor(len(chunks), mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(render, c): c for c in chunks}
        pending = set(futures)
        while pending:
            _, pending = wait(pending, timeout=POLL_S)
            tick()
        for fut, c in futures.items():
            try:
                parts.append(fut.result())
            except Exception as exc:  # a worker died (BrokenProcessPool) or raised
                parts.append(_lost(c, exc))
    return parts


def _lost(chunk: RenderRequest, exc: BaseException) -> RunSummary:
    lost = RunSummary(out=chunk.out)
    for i in chunk.indices:
        if not is_complete(sample_dir(chunk.out, i)):
            lost.failed[i] = f"worker failed: {type(exc).__name__}: {exc}"
    return lost


def ray_map(render: Render, chunks: list[RenderRequest], tick: Callable[[], None]) -> list[RunSummary]:
    """``render`` of each chunk as a Ray task (one CPU, one GPU where the cluster has them)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave the machine
    try:
        import ray  # optional dependency (the ray extra)
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
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(render)
        refs = [task.remote(c) for c in chunks]
        pending = list(refs)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
            tick()
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()
