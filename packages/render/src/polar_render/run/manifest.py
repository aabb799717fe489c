"""``<out>/run.json``: the configuration of a render run and the status of its samples.

A rerun into the same OUT with a different configuration is refused (:func:`check_run_manifest`)
rather than mixing samples. Paths in run.json and meta.json are stored relative to OUT
(:func:`rel_to_out`; ``..`` where they lie outside), so a moved run directory resumes;
:func:`read_manifest` resolves them back to absolute paths. A given layout is matched by its
content digest, the run's own ``OUT/layout`` by its place. :func:`record_status` keeps the
per-sample status (complete, missing, last failures), computed from the sample directories.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from polar_render import io
from polar_render.outputs import is_complete, sample_dir

RUN_FILE = "run.json"
# keys whose difference refuses a rerun; keys added later map to the value a run.json without them implies
COMPARED = ("scene", "config_digest", "seed", "spp", "res", "layout", "layout_backend", "variant", "clean",
            "denoise", "noise_seed")
IMPLIED = {"denoise": "none", "noise_seed": None}
REFUSED = "; choose another --out or delete it"


def rel_to_out(out: Path, path: str | os.PathLike) -> str:
    """``path`` relative to OUT (posix; ``..`` where it lies outside) for run.json/meta.json."""
    return Path(os.path.relpath(Path(path).resolve(), Path(out).resolve())).as_posix()


def resolve_run_path(out: str | os.PathLike, value: str) -> Path:
    """A path stored in run.json / meta.json (relative to OUT; absolute in older runs)."""
    p = Path(value)
    return p if p.is_absolute() else (Path(out) / p).resolve()


def _load(path: Path, advice: str = "") -> dict:
    """The JSON object in ``path``; ValueError naming it (followed by ``advice``) otherwise."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        detail = f" ({exc}){advice}" if advice else f": {exc}"
        raise ValueError(f"{path}: unreadable run manifest{detail}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object{advice}")
    return manifest


def read_manifest(out: str | os.PathLike) -> dict:
    """``OUT/run.json`` with ``scene_file`` and ``layout`` resolved to absolute paths (they
    are stored relative to OUT, so a run directory can be moved and resumed)."""
    path = Path(out) / RUN_FILE
    if not path.exists():
        raise ValueError(f"{path}: not found; {out} holds no render run")
    manifest = _load(path)
    for key in ("scene_file", "layout"):
        if isinstance(manifest.get(key), str):
            manifest[key] = str(resolve_run_path(out, manifest[key]))
    return manifest


def _same_layout(out: Path, old: dict, new: dict) -> bool:
    """A given layout is identified by its content digest (so a moved run, or a moved
    copy of the layout, still matches); the run's own layout by its path (OUT/layout)."""
    if old.get("layout_digest") and new.get("layout_digest"):
        return old["layout_digest"] == new["layout_digest"]
    if not isinstance(old.get("layout"), str):
        return False
    return resolve_run_path(out, old["layout"]) == resolve_run_path(out, new["layout"])


def check_run_manifest(out: Path, manifest: dict, write: bool = True) -> None:
    """Refuse a run whose configuration differs from ``out/run.json``; keys absent from
    ``manifest`` are not compared (early check before the layout exists). Writes
    ``manifest`` as run.json when ``write``."""
    path = out / RUN_FILE
    if path.exists():
        old = _load(path, REFUSED)
        diff = [k for k in COMPARED if k in manifest and (not _same_layout(out, old, manifest) if k == "layout"
                                                          else old.get(k, IMPLIED.get(k)) != manifest.get(k))]
        if diff:
            raise ValueError(f"{out} already holds a run with different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); choose another OUT or delete it")
    if write:
        io.write_json(path, manifest)


def record_status(out: Path, n: int, failed: dict) -> dict:
    """Per-sample status in ``run.json`` (atomic): which of the n samples are complete,
    which are missing, and the failures of the last run (index -> reason). Computed from
    the sample directories, so shards and workers writing it agree."""
    path = out / RUN_FILE
    manifest = json.loads(path.read_text()) if path.exists() else {}
    done = [i for i in range(n) if is_complete(sample_dir(out, i))]
    missing = sorted(set(range(n)) - set(done))
    manifest["status"] = {"complete": len(done), "total": n, "missing": missing,
                          "failed_last_run": {str(k): v for k, v in sorted(failed.items())},
                          "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    io.write_json(path, manifest)
    return manifest["status"]
