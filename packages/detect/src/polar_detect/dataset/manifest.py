"""The dataset manifest (``<data>/manifest.json``, contract section 2): read, validate, verify.

One JSON file lists every sample with split, label, classes, source, relative file paths
and the sha256 of each file; :func:`verify` recomputes the checksums.

:func:`read_manifest` checks what the loaders rely on (format, modality channels and finite
``scale > 0``/``offset``, sample ids usable as file names and unique, splits, labels 0/1,
``size`` = [H, W]) and resolves every file path a sample names with
``polar_render.paths.contained``: a path must stay inside the dataset directory (absolute
paths, ``..`` and symlinks leading out are refused; symlink loops are reported as loops).
Errors name the manifest and the key, e.g. ``manifest.json: samples[3].files.dolp: ...``.

Manifests written by :class:`~polar_detect.dataset.writer.DatasetWriter` carry
``"integrity": {"finite": true}``: every float image was checked for NaN/inf when it was
written, so a file whose sha256 still matches needs no second decode at load time
(:mod:`polar_detect.dataset.integrity`).
"""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

from polar_render import io

from polar_detect.dataset.encodings import DatasetError
from polar_render.progress import progress as progress_bar

FORMAT = "polar_detect.dataset/1"
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def manifest_path(root: str | Path) -> Path:
    """``root`` may be the dataset directory or the manifest file itself."""
    root = Path(root)
    return root if root.name == MANIFEST or root.suffix == ".json" else root / MANIFEST


def read_manifest(root: str | Path) -> dict:
    """Load and check the manifest (structure, numbers, sample ids, and that every file path
    stays inside the dataset directory); raises DatasetError naming the file and key."""
    path = manifest_path(root)
    if not path.exists():
        raise DatasetError(f"{path}: no dataset manifest here")
    m = io.read_json_object(path, what=f"a {FORMAT} manifest", error=DatasetError)
    if m.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a {FORMAT} manifest (format={m.get('format')!r})")
    for key in ("modalities", "samples", "classes"):
        if key not in m:
            raise DatasetError(f"{path}: manifest lacks {key!r}")
    _check_modalities(m["modalities"], path)
    if not isinstance(m["classes"], dict):
        raise DatasetError(f"{path}: classes: expected an object {{class: kind}}, got {type(m['classes']).__name__}")
    if not isinstance(m["samples"], list):
        raise DatasetError(f"{path}: samples: expected a list, got {type(m['samples']).__name__}")
    seen: dict[str, int] = {}
    for i, s in enumerate(m["samples"]):
        _check_sample(s, i, path, seen)
        for key, rel in sample_file_keys(s):
            resolve_file(path, i, key, rel)
    return m


# -- validation ---------------------------------------------------------------------------
def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_modalities(mods, path: Path) -> None:
    if not isinstance(mods, dict):
        raise DatasetError(f"{path}: modalities: expected an object, got {type(mods).__name__}")
    for name, e in mods.items():
        where = f"{path}: modalities.{name}"
        if not isinstance(e, dict):
            raise DatasetError(f"{where}: expected an object, got {type(e).__name__}")
        ch = e.get("channels")
        if not isinstance(ch, int) or isinstance(ch, bool) or ch < 1:
            raise DatasetError(f"{where}.channels: expected a positive integer, got {ch!r}")
        if "scale" in e and not (_finite_number(e["scale"]) and e["scale"] > 0):
            raise DatasetError(f"{where}.scale: expected a finite number > 0, got {e['scale']!r}")
        if "offset" in e and not _finite_number(e["offset"]):
            raise DatasetError(f"{where}.offset: expected a finite number, got {e['offset']!r}")


def check_sample_id(sid, where: str = "sample id") -> None:
    """A sample id names a directory (``samples/<id>``) and a map file (``maps/<id>.tiff``):
    a non-empty string without path separators or NUL, not ``.`` or ``..``."""
    if not isinstance(sid, str) or not sid or sid in (".", "..") or any(c in sid for c in "/\\\x00"):
        raise DatasetError(f"{where}: {sid!r} is not a valid sample id (a non-empty name without "
                           "'/', backslash or NUL; not '.' or '..')")


def _check_sample(s, i: int, path: Path, seen: dict) -> None:
    where = f"{path}: samples[{i}]"
    if not isinstance(s, dict):
        raise DatasetError(f"{where}: expected an object, got {type(s).__name__}")
    check_sample_id(s.get("id"), f"{where}.id")
    if s["id"] in seen:
        raise DatasetError(f"{where}.id: {s['id']!r} repeats samples[{seen[s['id']]}]")
    seen[s["id"]] = i
    if s.get("split") not in SPLITS:
        raise DatasetError(f"{where}.split: {s.get('split')!r} is not one of {', '.join(SPLITS)} "
                           f"(sample {s['id']!r})")
    label = s.get("label")
    if label not in (0, 1) or isinstance(label, bool) or not isinstance(label, int):
        raise DatasetError(f"{where}.label: expected 0 or 1, got {label!r}")
    files = s.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise DatasetError(f"{where}.files: expected an object {{modality: relative path}}, got {files!r}")
    size = s.get("size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and
                                 all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise DatasetError(f"{where}.size: expected [height, width] (positive integers), got {size!r}")
    for key in ("mask", "instance_mask", "ignore", "object_mask"):
        if s.get(key) is not None and not isinstance(s[key], str):
            raise DatasetError(f"{where}.{key}: expected a relative path or null, got {s[key]!r}")
    inst = s.get("instances", [])
    if not isinstance(inst, list) or not all(isinstance(a, dict) for a in inst):
        raise DatasetError(f"{where}.instances: expected a list of objects")
    for k, a in enumerate(inst):
        if a.get("region_mask") is not None and not isinstance(a["region_mask"], str):
            raise DatasetError(f"{where}.instances[{k}].region_mask: expected a relative path, "
                               f"got {a['region_mask']!r}")
    regions = s.get("regions", [])
    if not isinstance(regions, list) or not all(isinstance(r, dict) and isinstance(r.get("mask"), str)
                                                for r in regions):
        raise DatasetError(f"{where}.regions: expected a list of objects with a relative 'mask' path")
    sums = s.get("sha256", {})
    if not isinstance(sums, dict) or not all(isinstance(v, str) and _HEX64.fullmatch(v) for v in sums.values()):
        raise DatasetError(f"{where}.sha256: expected an object {{relative path: 64 hex digits}}")


_HEX64 = re.compile(r"[0-9a-f]{64}")


def sample_file_keys(sample: dict) -> list[tuple[str, str]]:
    """(key, relative path) of every file a sample names (modalities, masks, ignore and object
    masks, region masks); keys relative to the sample, e.g. ``files.intensity``, ``mask``,
    ``instances[0].region_mask``, ``regions[0].mask`` (LOCO regions listed on the sample)."""
    out = [(f"files.{m}", rel) for m, rel in (sample.get("files") or {}).items()]
    for key in ("mask", "instance_mask", "ignore", "object_mask"):
        if sample.get(key):
            out.append((key, sample[key]))
    for k, inst in enumerate(sample.get("instances") or []):
        if inst.get("region_mask"):
            out.append((f"instances[{k}].region_mask", inst["region_mask"]))
    out += [(f"regions[{k}].mask", r.get("mask")) for k, r in enumerate(sample.get("regions") or [])
            if isinstance(r, dict)]
    return out


def sample_files(sample: dict) -> list[str]:
    """Every relative path a sample references (modalities, masks, ignore and object masks,
    region masks)."""
    return [rel for _, rel in sample_file_keys(sample)]


def resolve_file(mpath: str | Path, index: int, key: str, rel: str) -> Path:
    """The file ``rel`` named at ``samples[index].<key>`` of the manifest ``mpath``, resolved
    (symlinks followed) and required inside the dataset directory (``polar_render.paths``):
    absolute paths, ``..`` and symlinks leading out are refused, symlink loops reported."""
    from polar_render.paths import UnsafePathError, contained

    mpath = Path(mpath)
    try:
        return contained(mpath.parent, rel, source=mpath, key=f"samples[{index}].{key}")
    except UnsafePathError as exc:
        raise DatasetError(str(exc)) from None


def verify(root: str | Path, progress: bool = False) -> list[str]:
    """Recompute every checksum; return a list of problems (empty = dataset intact)."""
    path = manifest_path(root)
    m = read_manifest(path)
    problems = []
    for i, s in enumerate(progress_bar(m["samples"], desc="verify", unit="sample", enabled=progress)):
        sums = s.get("sha256", {})
        for key, rel in sample_file_keys(s):
            f = resolve_file(path, i, key, rel)
            if rel not in sums:
                problems.append(f"{f}: no checksum in the manifest")
            elif not f.is_file():
                problems.append(f"{f}: missing")
            elif sha256_file(f) != sums[rel]:
                problems.append(f"{f}: sha256 mismatch")
    return problems


# -- normalisation (scale/offset per modality) ---------------------------------------------
def normalisation_of(manifest: dict, modalities=None) -> dict[str, dict]:
    """``{modality: {"scale": float, "offset": float}}`` of a manifest (all its modalities, or
    the given ones that it has)."""
    mods = manifest.get("modalities") or {}
    names = list(mods) if modalities is None else [m for m in modalities if m in mods]
    return {m: {"scale": float(mods[m].get("scale", 1.0)), "offset": float(mods[m].get("offset", 0.0))}
            for m in names}


def normalisation_differences(trained: dict, current: dict, rtol: float = 1e-6) -> list[str]:
    """Human-readable differences between two ``normalisation_of`` dicts, over the modalities
    of ``trained`` (a modality missing from ``current`` is a difference)."""
    out = []
    for mod, t in sorted(trained.items()):
        c = current.get(mod)
        if c is None:
            out.append(f"{mod}: not in the dataset")
            continue
        for key in ("scale", "offset"):
            a, b = float(t.get(key, 1.0 if key == "scale" else 0.0)), float(c.get(key, 1.0 if key == "scale" else 0.0))
            if abs(a - b) > rtol * max(abs(a), abs(b), 1e-12):
                out.append(f"{mod}: {key} {b:.6g} in the dataset, {a:.6g} at training")
    return out


NORM_MISMATCH_MODES = ("warn", "error")


def check_normalisation(trained: dict | None, trained_from: str | None, data: str | Path, modalities,
                        on_mismatch: str = "warn") -> dict:
    """Compare a model's training normalisation with a dataset's (for ``predict`` commands).

    ``trained``: the normalisation the model stored at training (``normalisation_of``), or None
    for a model saved before models stored it; then ``trained_from`` (the training manifest
    path the model recorded) is read if it still exists.  Returns a record for
    predictions.json: ``{"status": "match"|"mismatch"|"unknown", "differences": [...],
    "trained_from": ..., "dataset_sha256": ...}``.  ``on_mismatch="error"`` raises
    DatasetError on a mismatch; ``"warn"`` leaves reporting to the caller (``status``).
    """
    if on_mismatch not in NORM_MISMATCH_MODES:
        raise DatasetError(f"on_mismatch must be one of {NORM_MISMATCH_MODES}, got {on_mismatch!r}")
    path = manifest_path(data)
    current = normalisation_of(read_manifest(path), modalities)
    source = "model"
    if trained is None and trained_from:
        try:
            trained = normalisation_of(read_manifest(trained_from), modalities)
            source = f"training manifest {trained_from}"
        except DatasetError:
            trained = None
    if trained is None:
        return {"status": "unknown", "differences": [], "trained": None, "dataset": current,
                "note": "the model stores no normalisation and its training manifest is not readable"}
    trained = {m: v for m, v in trained.items() if modalities is None or m in modalities}
    diffs = normalisation_differences(trained, current)
    rec = {"status": "mismatch" if diffs else "match", "differences": diffs, "trained": trained,
           "dataset": current, "trained_source": source}
    if diffs and on_mismatch == "error":
        raise DatasetError(f"{path}: normalisation differs from the model's training normalisation "
                           f"({'; '.join(diffs)}); rebuild the dataset with `dataset build --norm-from "
                           f"<training dataset>` or pass --norm-mismatch warn")
    return rec


def mismatch_warning(rec: dict, data) -> str | None:
    """One-line warning text for a ``check_normalisation`` record (None when nothing to say)."""
    if rec["status"] == "mismatch":
        return (f"warning: {manifest_path(data)}: normalisation differs from the model's training "
                f"normalisation ({'; '.join(rec['differences'])}); the model sees inputs on another "
                f"scale (build this dataset with --norm-from <training dataset>, or pass "
                f"--norm-mismatch error to refuse)")
    if rec["status"] == "unknown":
        return f"warning: {manifest_path(data)}: cannot check the normalisation ({rec['note']})"
    return None
