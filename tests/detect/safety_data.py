"""Inputs for the dataset/predictions safety tests and the bad-input corpus (issues 16, 20):
a tiny dataset built from fake renders, predictions for it, MVTec AD / LOCO / capture source
folders, decompression-bomb image headers, and a tree snapshot that also records symlinks."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import tifffile

from polar_detect.dataset.build import build_from_renders

from tests.detect.fake_render import anomaly, make_render
from tests.tree import snapshot  # noqa: F401 - sd.snapshot for the corpora

H, W = 48, 64
BOMB = 100_000  # width = height declared by the bomb headers: 10^10 pixels


# ---------------------------------------------------------------- datasets and predictions
def render(root: Path) -> Path:
    """Fake render: 4 normal samples, 2 with a dent (48x64)."""
    return make_render(root, [[], [], [], [], [anomaly(1, "dent", (4, 4, 20, 16))],
                              [anomaly(1, "dent", (30, 20, 50, 40))]], h=H, w=W)


def dataset(root: Path, rendered: Path) -> Path:
    """intensity + dolp dataset: train 3 normal, val 1 anomalous, test 1 normal + 1 anomalous."""
    build_from_renders([rendered], root, "intensity,dolp", seed=0, progress=False)
    return root


def manifest(data: Path) -> dict:
    return json.loads((data / "manifest.json").read_text())


def write_manifest(data: Path, m: dict) -> None:
    (data / "manifest.json").write_text(json.dumps(m, indent=1))


def sample(data: Path, split: str, label: int | None = None) -> tuple[int, dict]:
    """(index, entry) of the first manifest sample of ``split`` (and ``label``)."""
    for i, s in enumerate(manifest(data)["samples"]):
        if s["split"] == split and (label is None or s["label"] == label):
            return i, s
    raise LookupError(split)


def edit_sample(data: Path, split: str, fn, label: int | None = None) -> dict:
    """Apply ``fn(entry)`` to the first sample of ``split`` in the manifest; returns the entry."""
    m = manifest(data)
    i, _ = sample(data, split, label)
    fn(m["samples"][i])
    write_manifest(data, m)
    return m["samples"][i]


def rechecksum(data: Path, rel: str) -> None:
    """Record the current sha256 of ``rel`` in the manifest (a consistent, deliberate edit)."""
    m = manifest(data)
    digest = hashlib.sha256((data / rel).read_bytes()).hexdigest()
    for s in m["samples"]:
        if rel in s.get("sha256", {}):
            s["sha256"][rel] = digest
    write_manifest(data, m)


def drop_integrity(data: Path) -> None:
    """A manifest as written before ``integrity.finite`` (older builds, hand-written)."""
    m = manifest(data)
    m.pop("integrity", None)
    write_manifest(data, m)


def float_tiff(path: Path, arr: np.ndarray) -> Path:
    """Write a float32 TIFF as is (``polar_render.io.write_float_tiff`` refuses NaN)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.asarray(arr, np.float32), photometric="minisblack",
                     planarconfig="contig" if np.ndim(arr) == 3 else None)
    return path


def poison(path: Path, value=np.nan, n: int = 3) -> Path:
    """Rewrite a float TIFF with ``value`` in ``n`` pixels (same size)."""
    a = tifffile.imread(path).astype(np.float32)
    a.reshape(a.shape[0] * a.shape[1], -1)[:n] = value
    return float_tiff(path, a)


def predictions(pred: Path, data: Path, seed: int = 0) -> Path:
    """predictions.json + maps for the test and val samples (contract section 4)."""
    rng = np.random.default_rng(seed)
    (pred / "maps").mkdir(parents=True)
    m = manifest(data)
    scores, maps = {}, {}
    for s in m["samples"]:
        if s["split"] in ("test", "val"):
            a = rng.random((H, W)).astype(np.float32)
            tifffile.imwrite(pred / "maps" / f"{s['id']}.tiff", a)
            scores[s["id"]], maps[s["id"]] = float(a.max()), f"maps/{s['id']}.tiff"
    (pred / "predictions.json").write_text(json.dumps({
        "model": "toy", "dataset": str(data / "manifest.json"),
        "manifest_sha256": hashlib.sha256((data / "manifest.json").read_bytes()).hexdigest(),
        "split": "test", "threshold": 0.5, "scores": scores, "maps": maps}))
    return pred


def edit_predictions(pred: Path, fn) -> dict:
    p = json.loads((pred / "predictions.json").read_text())
    fn(p)
    (pred / "predictions.json").write_text(json.dumps(p))
    return p


def first_map(pred: Path) -> tuple[str, str]:
    """(sample id, relative map path) of the first map of a predictions directory."""
    p = json.loads((pred / "predictions.json").read_text())
    sid = sorted(p["maps"])[0]
    return sid, p["maps"][sid]


# ---------------------------------------------------------------- import sources
def _png(path: Path, arr) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(arr))
    return path


def mvtec(root: Path) -> Path:
    """MVTec AD category: 2 train/good, 1 test/good, 1 test/crack + its ground truth."""
    rng = np.random.default_rng(1)
    img = lambda: (rng.random((H, W)) * 255).astype(np.uint8)  # noqa: E731
    for rel in ("train/good/000.png", "train/good/001.png", "test/good/000.png", "test/crack/000.png"):
        _png(root / rel, img())
    mask = np.zeros((H, W), np.uint8)
    mask[5:15, 5:20] = 255
    _png(root / "ground_truth/crack/000_mask.png", mask)
    return root


def loco(root: Path) -> Path:
    """MVTec LOCO category: train/good, test/good, test/structural_anomalies + one region."""
    rng = np.random.default_rng(2)
    img = lambda: (rng.random((H, W)) * 255).astype(np.uint8)  # noqa: E731
    for rel in ("train/good/000.png", "train/good/001.png", "test/good/000.png",
                "test/structural_anomalies/000.png"):
        _png(root / rel, img())
    region = np.zeros((H, W), np.uint8)
    region[5:15, 5:20] = 255
    _png(root / "ground_truth/structural_anomalies/000/000.png", region)
    (root / "defects_config.json").write_text(json.dumps([
        {"defect_name": "crack", "pixel_value": 255, "saturation_threshold": 1.0, "relative_saturation": True}]))
    return root


def capture(root: Path) -> Path:
    """Polarization captures: frames f0, f1 as four float32 angle images each, masks/f1.png."""
    rng = np.random.default_rng(3)
    for f in ("f0", "f1"):
        for a in (0, 45, 90, 135):
            float_tiff(root / "frames" / f"{f}_{a}.tiff", 100 + 50 * rng.random((H, W)))
    mask = np.zeros((H, W), np.uint8)
    mask[5:15, 5:20] = 255
    _png(root / "masks" / "f1.png", mask)
    return root


# ---------------------------------------------------------------- decompression bombs
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int = BOMB, bits: int = 8) -> Path:
    """A ~100-byte PNG whose IHDR declares side x side grey pixels (a decoder would try to
    allocate side^2 bytes)."""
    ihdr = struct.pack(">IIBBBBB", side, side, bits, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 256, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def bomb_tiff(path: Path, side: int = BOMB) -> Path:
    """A little-endian TIFF whose first IFD declares side x side float32 pixels in one zlib
    strip of a few hundred bytes."""
    data = zlib.compress(b"\0" * 4096, 9)
    n_entries = 10
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * n_entries + 4

    def short(tag, value):
        return struct.pack("<HHIHH", tag, 3, 1, value, 0)

    def long_(tag, value):
        return struct.pack("<HHII", tag, 4, 1, value)

    entries = [long_(256, side), long_(257, side), short(258, 32), short(259, 8), short(262, 1),
               long_(273, data_offset), short(277, 1), long_(278, side), long_(279, len(data)), short(339, 3)]
    assert len(entries) == n_entries
    ifd = struct.pack("<H", n_entries) + b"".join(entries) + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + data)
    return path


# ---------------------------------------------------------------- symlinks and snapshots
def outside_copy(src: Path, tmp: Path) -> Path:
    """A valid copy of ``src`` outside every input root (the target of escaping symlinks)."""
    d = tmp / "elsewhere"
    d.mkdir(exist_ok=True)
    dst = d / f"{len(list(d.iterdir()))}_{src.name}"
    shutil.copy(src, dst)
    return dst


def symlink_out(path: Path, tmp: Path) -> Path:
    """Replace ``path`` by a symlink to a valid copy of itself outside its root."""
    target = outside_copy(path, tmp)
    path.unlink()
    path.symlink_to(target)
    return path


def symlink_loop(path: Path) -> Path:
    """Replace ``path`` by a symlink loop (``path`` -> ``path.loop`` -> ``path``)."""
    other = path.with_name(path.name + ".loop")
    path.unlink()
    os.symlink(other.name, path)
    os.symlink(path.name, other)
    return path
