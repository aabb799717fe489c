"""The dataset manifest (``<data>/manifest.json``, contract section 2): read, validate, verify.

One JSON file lists every sample with split, label, classes, source, relative file paths
and the sha256 of each file; :func:`verify` recomputes the checksums.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .encodings import DatasetError

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
    """Load and check the manifest; raises DatasetError naming the file."""
    path = manifest_path(root)
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: no dataset manifest here") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable manifest: {exc}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a {FORMAT} manifest (format={m.get('format') if isinstance(m, dict) else None!r})")
    for key in ("modalities", "samples", "classes"):
        if key not in m:
            raise DatasetError(f"{path}: manifest lacks {key!r}")
    for s in m["samples"]:
        if s.get("split") not in SPLITS:
            raise DatasetError(f"{path}: sample {s.get('id')!r} has split {s.get('split')!r}")
    return m


def sample_files(sample: dict) -> list[str]:
    """Every relative path a sample references (modalities, masks, ignore and object masks,
    region masks)."""
    paths = list(sample["files"].values())
    for key in ("mask", "instance_mask", "ignore", "object_mask"):
        if sample.get(key):
            paths.append(sample[key])
    for inst in sample.get("instances", []):
        if inst.get("region_mask"):
            paths.append(inst["region_mask"])
    return paths


def verify(root: str | Path, progress: bool = False) -> list[str]:
    """Recompute every checksum; return a list of problems (empty = dataset intact)."""
    from tqdm import tqdm

    path = manifest_path(root)
    base = path.parent
    m = read_manifest(path)
    problems = []
    for s in tqdm(m["samples"], desc="verify", unit="sample", disable=not progress):
        sums = s.get("sha256", {})
        for rel in sample_files(s):
            f = base / rel
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
