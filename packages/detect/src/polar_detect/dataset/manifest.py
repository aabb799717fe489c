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
    """Every relative path a sample references (modalities, masks, region masks)."""
    paths = list(sample["files"].values())
    for key in ("mask", "instance_mask"):
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
