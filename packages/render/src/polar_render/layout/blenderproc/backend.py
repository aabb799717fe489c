"""BlenderProc layout backend: BOP layouts made by BlenderProc 2.8 itself.

Same inputs and output contract as :func:`polar_render.layout.embedded.generate_layout` (a BOP
dataset with ``camera.json``, ``models/`` and ``<split>/<scene:06d>/``), so everything
downstream reads it exactly as it reads the embedded sampler's layouts. What BlenderProc
does per scene is described in ``script.py``; how it differs from the
embedded (pybullet) sampler:

* physics is Blender's Bullet (``simulate_physics_and_fix_final_poses``: convex hulls,
  0.5 mm collision margin, so parts rest about 0.5-1 mm above z = 0);
* stacking is by rejection (``sample_poses`` resamples colliding poses) instead of the
  embedded sampler's 5 mm gap above overlapping parts;
* the camera shell is centred on ``compute_poi`` (the object origin closest to the mean
  bounding-box centre) rather than on the mean bounding-box centre;
* the scenes also carry BOP depth maps (``depth/*.png``, mm, ray cast by BlenderProc).

Two ways to run BlenderProc (``mode``):

* ``"module"``: in this process, with ``bpy==4.2.0`` (the ``blenderproc`` extra, Python 3.11)
  through :mod:`polar_render.layout.blenderproc.compat`;
* ``"blender"``: ``blenderproc run script.py SPEC --custom-blender-path BLENDER``
  with an installed Blender 4.2 (on its first run BlenderProc pip-installs its own packages
  into that Blender's Python).

``"auto"`` picks ``"blender"`` when a Blender path is given (argument or ``BLENDER``
environment variable), else ``"module"``. Topdown layouts (the aluminium plate) have nothing
to simulate and are refused.

Determinism: scene ``s`` depends only on ``(cfg, seed, s)`` (``script.scene_seed``).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import trimesh

from polar_render import io
from polar_render.layout.embedded import LayoutConfig, camera_matrix, write_layout_models
from polar_render.progress import progress as progress_bar

__all__ = ["generate_layout_blenderproc", "make_spec", "resolve_mode", "write_fixed_layout_blenderproc"]

SCRIPT = Path(__file__).with_name("script.py")
MODES = ("auto", "module", "blender")


def resolve_mode(mode: str = "auto", blender: str | os.PathLike | None = None) -> tuple[str, str | None]:
    """(mode, blender path) after applying the ``auto`` rule; raises with the install
    command when the chosen mode cannot run here."""
    from polar_render.layout.blenderproc.compat import BlenderProcUnavailable, check_available, versions

    if mode not in MODES:
        raise ValueError(f"BlenderProc mode must be one of {MODES}, got {mode!r}")
    blender = str(blender) if blender else os.environ.get("BLENDER") or None
    if mode == "auto":
        mode = "blender" if blender else "module"
    if mode == "blender":
        if not blender:
            raise ValueError("BlenderProc 'blender' mode needs the Blender install: BLENDER=/path/to/blender-4.2")
        if not Path(blender).exists():
            raise FileNotFoundError(f"BLENDER={blender}: no such Blender installation")
        if versions()["blenderproc"] is None:
            raise BlenderProcUnavailable("`blenderproc run` needs the blenderproc package: "
                                         "pip install blenderproc==2.8.0")
        return mode, blender
    check_available()
    if sys.version_info[:2] != (3, 11):
        raise BlenderProcUnavailable(f"bpy 4.2.0 is built for Python 3.11, this is "
                                     f"{sys.version_info.major}.{sys.version_info.minor}")
    return mode, None


def make_spec(root: Path, models_mm: dict[int, trimesh.Trimesh], cfg: LayoutConfig, seed: int,
              scenes: Sequence[dict], split: str = "train_pbr", ground_size_m: float = 1.0) -> dict:
    """The JSON document ``script.run`` consumes (see its header)."""
    from dataclasses import asdict

    if cfg.mode != "drop":
        raise ValueError(f"the BlenderProc layout backend samples dropped objects; layout mode "
                         f"{cfg.mode!r} has nothing to simulate (use the embedded sampler)")
    return {"root": str(Path(root).resolve()), "split": split, "seed": int(seed),
            "models": {str(oid): str(p.resolve()) for oid, p in write_layout_models(Path(root), models_mm, cfg).items()},
            "layout": asdict(cfg), "K": camera_matrix(cfg).tolist(), "width": cfg.width, "height": cfg.height,
            "ground_size_m": float(ground_size_m), "scenes": list(scenes)}


@contextlib.contextmanager
def _stdout_to(path: Path):
    """Send this process's stdout (Python and C level: Blender prints from C) to ``path``
    while BlenderProc runs in-process; the progress bar stays on stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _run_spec(spec: dict, mode: str, blender: str | None, progress: bool) -> None:
    pending = [s for s in spec["scenes"]
               if not (Path(spec["root"]) / spec["split"] / f"{int(s['scene_id']):06d}" / "scene_gt.json").exists()]
    if not pending:
        return
    spec = dict(spec, scenes=pending)
    if mode == "module":
        from polar_render.layout.blenderproc import compat as blenderproc_compat

        blenderproc_compat.import_blenderproc()
        from polar_render.layout.blenderproc import script as blenderproc_script

        bar = progress_bar(total=len(pending), desc="layout (BlenderProc)", unit="scene", enabled=progress)
        try:
            with _stdout_to(Path(spec["root"]) / "blenderproc.log"):
                blenderproc_script.run(spec, init=blenderproc_compat.init, progress=lambda k, n: bar.update(1))
        finally:
            bar.close()
        return
    spec_path = Path(spec["root"]) / f".blenderproc-spec-{os.getpid()}.json"
    io.write_json(spec_path, spec)
    exe = shutil.which("blenderproc") or str(Path(sys.executable).with_name("blenderproc"))
    cmd = [exe, "run", str(SCRIPT), "--custom-blender-path", blender, str(spec_path)]
    try:   # stderr captured (and passed on below) to tell a full disk from other failures
        proc = subprocess.run(cmd, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, errors="replace")
    finally:
        spec_path.unlink(missing_ok=True)
    tail = (proc.stderr or "")[-20000:]
    sys.stderr.write(tail)
    returncode = proc.returncode
    if returncode != 0:
        if _FULL_DISK.search(tail):
            raise io.NoSpaceError(errno.ENOSPC, f"{spec['root']}: no space left on device while BlenderProc "
                                                f"wrote the layout (`{' '.join(cmd)}`)")
        raise LayoutBackendError(f"`{' '.join(cmd)}` failed with exit status {returncode}")


class LayoutBackendError(RuntimeError):
    """BlenderProc failed while making a layout (the CLI exits 1)."""


# how Python (errno 28 / 122) reports a full disk or spent quota inside Blender
_FULL_DISK = re.compile(r"No space left on device|Disk quota exceeded|\[Errno (28|122)\]")


def _run_spec_named(spec: dict, mode: str, blender: str | None, progress: bool) -> None:
    """:func:`_run_spec`; a full disk inside BlenderProc (module mode) raises
    ``io.NoSpaceError`` naming the file (or the layout root) instead of a raw OSError."""
    try:
        _run_spec(spec, mode, blender, progress)
    except io.NoSpaceError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise io.NoSpaceError(errno.ENOSPC, f"{exc.filename or spec['root']}: no space left on device "
                                                f"(BlenderProc writing the layout)") from exc
        raise


def generate_layout_blenderproc(out_root, models_mm: dict[int, trimesh.Trimesh], cfg: LayoutConfig, seed: int,
                                scene_ids: Iterable[int], split: str = "train_pbr", progress: bool = True,
                                mode: str = "auto", blender: str | None = None) -> Path:
    """Like :func:`polar_render.layout.embedded.generate_layout`, with BlenderProc doing the sampling,
    physics and BOP writing. Finished scenes are skipped (resume)."""
    mode, blender = resolve_mode(mode, blender)
    root = io.make_dirs(out_root)
    spec = make_spec(root, models_mm, cfg, seed, [{"scene_id": int(s)} for s in scene_ids], split)
    _run_spec_named(spec, mode, blender, progress)
    return root


def write_fixed_layout_blenderproc(out_root, models_mm: dict[int, trimesh.Trimesh], cfg: LayoutConfig,
                                   scenes: dict[int, tuple[list, list]], split: str = "train_pbr",
                                   mode: str = "auto", blender: str | None = None) -> Path:
    """Write given world poses and cameras through BlenderProc's ``write_bop`` (no sampling,
    no physics): ``scenes`` = {scene_id: (objects, cameras)} in the form
    :func:`polar_render.layout.embedded.sample_scene` returns (T_m2w in m; OpenCV R_w2c, t_w2c in mm).
    The counterpart of ``layout._frames`` + ``bop.write_scene`` for equivalence checks."""
    mode, blender = resolve_mode(mode, blender)
    root = io.make_dirs(out_root)
    entries = []
    for sid, (objects, cameras) in sorted(scenes.items()):
        if [int(o) for o, _ in objects] != [int(i) for i in cfg.instances]:
            raise ValueError(f"scene {sid}: objects {[o for o, _ in objects]} differ from cfg.instances")
        entries.append({"scene_id": int(sid), "fixed": {
            "objects": [[int(o), np.asarray(T, np.float64).tolist()] for o, T in objects],
            "cameras": [[np.asarray(R, np.float64).tolist(), np.asarray(t, np.float64).tolist()]
                        for R, t in cameras]}})
    spec = make_spec(root, models_mm, cfg, 0, entries, split)
    _run_spec_named(spec, mode, blender, progress=False)
    return root
