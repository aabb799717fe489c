"""polar_render: BOP layouts to Mitsuba 3 polarized renders.

Public API (``import polar_render`` stays cheap: each function imports its module when called):

* :func:`render` renders N samples of a scene into a run directory (as ``polar-render render``);
* :func:`load_scene` reads a scene file (or a scene name under ``scenes/``);
* :func:`load_sample` reads one rendered sample directory back.

Everything else lives in subpackages (``run/``, ``config/``, ``mitsuba/``, ...; see the package README).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # types only: importing them would load Mitsuba and friends
    from polar_render.config.scenes import SceneConfig
    from polar_render.run.request import RunSummary

from polar_render.version import __version__

__all__ = ["render", "load_scene", "load_sample", "__version__"]


def render(scene: str | Path, out: str | Path, n: int | None = None, seed: int = 0, spp: int | None = None,
           res: tuple[int, int] | None = None, workers: int = 1, **options) -> "RunSummary":
    """Render ``n`` samples of ``scene`` (a name under ``scenes/`` or a scene.yaml path) into ``out``.

    Sample ``i`` is a pure function of (scene, seed, i) and lands in ``out/samples/<i:06d>/``.
    ``spp`` defaults to the scene's ``render.spp``, ``res`` (width, height in pixels) to the
    layout's camera, ``n`` to 8 (or every frame of a given ``layout``). ``options`` are the other
    fields of :class:`polar_render.run.request.RenderRequest` (``layout``, ``variant``, ``clean``,
    ``denoise``, ``noise_seed``, ``executor``, ``shard``, ``progress``, ...). An invalid argument
    raises :class:`~polar_render.run.request.RequestError` naming it, before anything is written.
    Returns the run's :class:`~polar_render.run.request.RunSummary` (failed samples included).
    """
    from polar_render.run.request import RenderRequest
    from polar_render.run.runner import run

    return run(RenderRequest(scene=scene, out=out, n=n, seed=seed, spp=spp, res=res, workers=workers, **options))


def load_scene(path_or_name: str | Path) -> "SceneConfig":
    """The scene configuration of a scene file, a scene directory or a name under ``scenes/``."""
    from polar_render.config.scenes import load_scene as _load_scene

    return _load_scene(path_or_name)


def load_sample(sample_dir: str | Path) -> dict:
    """One rendered sample: ``{"meta": dict, <modality>: ndarray}`` (:mod:`polar_render.outputs`)."""
    from polar_render.outputs import load_sample as _load_sample

    return _load_sample(sample_dir)
