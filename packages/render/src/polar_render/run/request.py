"""What a render run is asked to do (:class:`RenderRequest`) and what it reports (:class:`RunSummary`).

Every field of a request is checked by :meth:`RenderRequest.validate`; an invalid one raises
:class:`RequestError` whose message starts with the CLI option that sets the field (``--spp: ...``),
so the library and ``polar-render render`` report bad input the same way. :func:`parse_res` and
:func:`parse_shard` turn the CLI's ``WIDTHxHEIGHT`` and ``k/n`` strings into checked tuples.
Resolutions are in pixels (width, height); seeds are integers in [0, 2**63 - 1].
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polar_render.denoise import METHODS as DENOISE_METHODS
from polar_render.limits import max_image_pixels
from polar_render.mitsuba.lights import VARIANTS as LIGHT_VARIANTS


class RequestError(ValueError):
    """An invalid :class:`RenderRequest` field; the message names the CLI option."""


class RunAborted(RuntimeError):
    """A run stopped part-way (a full disk): finished samples are kept, a rerun resumes.
    The CLI exits 1."""


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


def is_int(x) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass
class RenderRequest:
    """One render run. Every field is checked by :meth:`validate` (on construction and again
    when the run starts), with the messages the CLI prints: they name the option."""
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
        self._check_paths()
        for f, lo, hi, optional in (("n", 1, None, True), ("seed", 0, MAX_SEED, False),
                                    ("spp", 1, MAX_SPP, True), ("workers", 1, None, False),
                                    ("retries", 0, None, False), ("noise_seed", 0, MAX_SEED, True)):
            self._check_int(f, lo, hi, optional)
        if self.res is not None:
            check_res(self.res, OPTION["res"])
        if self.shard is not None:
            check_shard(self.shard, OPTION["shard"])
        if self.indices is not None and (not isinstance(self.indices, (list, tuple, range, np.ndarray))
                                         or not all(is_int(i) and i >= 0 for i in self.indices)):
            self._bad("indices", "expected a list of sample indices >= 0")
        self._check_choices()
        return self

    def _bad(self, field_: str, why: str):
        raise RequestError(f"{OPTION[field_]}: {why}, got {getattr(self, field_)!r}")

    def _check_int(self, field_: str, lo: int, hi: int | None, optional: bool) -> None:
        v = getattr(self, field_)
        if v is None and optional:
            return
        if not is_int(v) or v < lo:
            self._bad(field_, f"expected an integer >= {lo}")
        if hi is not None and v > hi:
            self._bad(field_, f"expected an integer <= {hi}")

    def _check_paths(self) -> None:
        for f in ("scene", "out"):
            v = getattr(self, f)
            if not isinstance(v, (str, os.PathLike)) or str(v) == "" or "\x00" in str(v):
                self._bad(f, "expected a non-empty path")
        if self.layout is not None and (not isinstance(self.layout, (str, os.PathLike)) or str(self.layout) == ""):
            self._bad("layout", "expected a BOP dataset directory")

    def _check_choices(self) -> None:
        for f, allowed in (("executor", EXECUTORS), ("layout_backend", LAYOUT_BACKENDS)):
            if getattr(self, f) not in allowed:
                self._bad(f, f"expected one of {', '.join(allowed)}")
        for f, allowed in (("denoise", DENOISE_METHODS), ("light_variant", LIGHT_VARIANTS)):
            if getattr(self, f) is not None and getattr(self, f) not in allowed:
                self._bad(f, f"expected one of {', '.join(allowed)}")
        for f in ("variant", "blender"):
            if getattr(self, f) is not None and (not isinstance(getattr(self, f), str) or not getattr(self, f)):
                self._bad(f, "expected a non-empty string")
        for f in ("progress", "clean", "worker"):
            if not isinstance(getattr(self, f), bool):
                self._bad(f, "expected True or False")


@dataclass
class RunSummary:
    """What a run did: samples rendered, skipped (already complete) and failed (index -> reason),
    wall seconds (total and layout) and the render seconds of each rendered sample."""
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

    def add(self, part: "RunSummary") -> None:
        """Fold in a worker chunk's or a retry's summary (rendered counts are the caller's)."""
        self.skipped += part.skipped
        self.failed.update(part.failed)
        self.render_seconds += part.render_seconds
        self.variant = part.variant or self.variant


def check_res(res, option: str = "--res") -> tuple[int, int]:
    """(width, height) in pixels, each >= 1, their product within POLAR_MAX_IMAGE_PIXELS."""
    if not isinstance(res, (tuple, list)) or len(res) != 2 or not all(is_int(x) for x in res):
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
    if not isinstance(shard, (tuple, list)) or len(shard) != 2 or not all(is_int(x) for x in shard):
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
