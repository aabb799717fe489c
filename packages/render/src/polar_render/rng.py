"""Every random stream of polar_render, in one table.

A run has one integer ``seed`` (``--seed``, >= 0). Every random value of sample ``i`` (or of
layout scene ``s``) is drawn from a stream named in :data:`STREAMS`, whose numpy
``SeedSequence`` entropy is built from ``(seed, index)`` and the stream's fixed tail only.
So a sample is a pure function of (scene config, seed, i), whatever order, batch, worker or
shard renders it, and adding draws to one stream never moves the values of another.

===================  ===========  ================================  ==========================================
name                 index        entropy                           drawn by
===================  ===========  ================================  ==========================================
``layout``           BOP scene s  ``[seed, s]``                     ``layout.embedded``: poses and cameras of
                                                                    scene s (its frames serve several samples)
``blenderproc``      BOP scene s  ``[seed, s, 9]``, 32-bit state    ``layout/blenderproc/script.py`` seeds
                                  word 0 (:func:`blenderproc_seed`) ``np.random`` and ``random`` with it
``appearance``       sample i     ``[seed, i, 1]``                  ``randomize.sample_appearance``: materials,
                                                                    lights, ground, environment
``render``           sample i     ``[seed, i, 2]``                  the Mitsuba sampler seed
                                                                    (:func:`render_seed`)
``render_noise``     sample i, K  ``[seed, i, 2, 1 + K]``           the sampler seed of ``--noise-seed K``
                                                                    (:func:`render_seed`)
``anomaly``          sample i     ``[seed, i, 3]``                  ``anomalies.sampling``: which anomalies,
                                                                    where, how large
``sensor``           sample i     ``[seed, i, 4]``                  ``physics.dofp.simulate``: DoFP sensor
                                                                    noise (``run.sample``)
===================  ===========  ================================  ==========================================

Conventions: a ``SeedSequence`` ignores trailing zero words (``[seed, s]`` and
``[seed, s, 0]`` give the same stream), so tail 0 is taken by ``layout`` and the noise
stream counts from ``1 + K``. Sampler seeds are integers in ``[0, 2**31 - 1)``.
``layout/blenderproc/script.py`` runs inside Blender's Python and imports nothing from
polar_render: it keeps its own three-line copy of :func:`blenderproc_seed`
(``scene_seed``), which ``tests/render/test_rng.py`` checks against this one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Stream", "STREAMS", "entropy", "stream", "render_seed", "blenderproc_seed", "SAMPLER_SEED_END"]

SAMPLER_SEED_END = 2**31 - 1   # Mitsuba sampler seeds are drawn in [0, SAMPLER_SEED_END)


@dataclass(frozen=True)
class Stream:
    """One row of the table: entropy ``[seed, index, *tail]`` (plus ``1 + sub`` when ``sub``)."""
    tail: tuple[int, ...]
    index: str              # what ``index`` counts: "sample" or "scene" (BOP scene id)
    sub: bool = False       # True: the stream takes a sub-stream number K >= 0 (appended as 1 + K)


STREAMS: dict[str, Stream] = {
    "layout": Stream((), "scene"),
    "blenderproc": Stream((9,), "scene"),
    "appearance": Stream((1,), "sample"),
    "render": Stream((2,), "sample"),
    "render_noise": Stream((2,), "sample", sub=True),
    "anomaly": Stream((3,), "sample"),
    "sensor": Stream((4,), "sample"),
}


def entropy(name: str, seed: int, index: int, sub: int | None = None) -> list[int]:
    """The ``SeedSequence`` entropy of stream ``name`` for ``(seed, index)`` (see the table)."""
    try:
        row = STREAMS[name]
    except KeyError:
        raise KeyError(f"unknown random stream {name!r}; streams: {sorted(STREAMS)}") from None
    if row.sub != (sub is not None):
        raise ValueError(f"stream {name!r} {'needs' if row.sub else 'takes no'} sub-stream number")
    words = [int(seed), int(index), *row.tail]
    if sub is not None:
        if isinstance(sub, bool) or int(sub) != sub or sub < 0:
            raise ValueError(f"sub-stream number must be an integer >= 0, got {sub!r}")
        words.append(1 + int(sub))
    return words


def stream(name: str, seed: int, index: int, sub: int | None = None) -> np.random.Generator:
    """A fresh generator for stream ``name`` of ``(seed, index)``: the same values on every call."""
    return np.random.default_rng(entropy(name, seed, index, sub))


def render_seed(seed: int, index: int, noise_seed: int | None = None) -> int:
    """Mitsuba sampler seed of sample ``index``: stream ``render``, or ``render_noise`` with
    ``noise_seed`` K (another Monte Carlo stream of the same sample)."""
    if noise_seed is None:
        rng = stream("render", seed, index)
    else:
        rng = stream("render_noise", seed, index, sub=noise_seed)
    return int(rng.integers(0, SAMPLER_SEED_END))


def blenderproc_seed(seed: int, scene_id: int) -> int:
    """32-bit seed of ``np.random`` / ``random`` for BlenderProc layout scene ``scene_id``."""
    return int(np.random.SeedSequence(entropy("blenderproc", seed, scene_id)).generate_state(1)[0])
