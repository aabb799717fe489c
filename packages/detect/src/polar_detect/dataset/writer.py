"""Assemble a dataset in a temporary directory and move it into place when complete.

Used by every builder (renders, MVTec AD, MVTec LOCO, real captures). Layout::

    <data>/manifest.json
    <data>/samples/<id>/<modality>.tiff     float32, see encodings.py
    <data>/samples/<id>/mask.png            uint8 0/255 (binary ground truth), anomalous only
    <data>/samples/<id>/instance_mask.png   uint16 instance ids (0 = none), anomalous only
    <data>/samples/<id>/region_<k>.png      uint8 0/255 per-region masks (LOCO imports)
    <data>/samples/<id>/ignore.png          uint8 0/255 ignore region (neither normal nor
                                            anomalous; builds with ignore thresholds), optional
    <data>/samples/<id>/object_mask.png     uint8 0/255 part pixels (object_mask > 0 of the
                                            source render sample), optional

The staging directory is ``polar_render.io.staging_dir(<data>)``
(``<parent>/.tmp-<name>--<host>--<pid>``); on success it is swapped into place as ``<data>``
(``io.swap_dir``: an existing ``<data>``, replaced only with ``overwrite=True``, is kept if
the swap fails); on any error it is removed, so nothing half-written is left under the final
name. Every file is written by ``polar_render.io`` (atomic, PNG through OpenCV, float32 TIFF
through tifffile).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from polar_render import io
from polar_render.io import write_png8

from polar_detect.dataset.encodings import DatasetError, as_hwc
from polar_detect.dataset.manifest import FORMAT, MANIFEST, sha256_file

# what the writer guarantees (read by polar_detect.dataset.integrity)
INTEGRITY = {"finite": True, "note": "every float image was checked for NaN/inf when written; "
                                     "samples[].sha256 lists every file a sample names"}


def write_png16(path: Path, arr: np.ndarray) -> None:
    """uint16 PNG (H, W): instance ids."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint16 or arr.ndim != 2:
        raise TypeError(f"{path}: expected a (H, W) uint16 array, got {arr.dtype} {arr.shape}")
    io.write_png16(path, arr)


def write_tiff(path: Path, arr: np.ndarray) -> None:
    """float32 TIFF, zlib level 1 (lossless); one channel is stored (H, W) (a TIFF cannot tell
    (H, W, 1) from (H, W); readers add the channel axis back)."""
    arr = as_hwc(arr)
    io.write_float_tiff(path, arr[..., 0] if arr.shape[-1] == 1 else arr, compress=True)


class DatasetWriter:
    """Context manager: ``with DatasetWriter(out, name, seed) as w: w.add(...); w.finish(...)``."""

    def __init__(self, out: str | Path, name: str, seed: int | None = None, overwrite: bool = False):
        self.out = Path(out)
        if self.out.exists() and not overwrite:
            raise DatasetError(f"{self.out} already exists; pass --overwrite to replace it")
        self.name, self.seed, self.overwrite = name, seed, overwrite
        self.samples: list[dict] = []
        self.tmp: Path | None = None   # the staging directory, made by __enter__
        self._finished = False

    def __enter__(self):
        self.tmp = io.staging_dir(self.out)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def add(self, sid: str, split: str, label: int, source: str, arrays: dict[str, np.ndarray],
            mask: np.ndarray | None = None, instance_mask: np.ndarray | None = None,
            instances: list[dict] | None = None, regions: dict[int, np.ndarray] | None = None,
            classes: list[str] | None = None, ignore: np.ndarray | None = None,
            object_mask: np.ndarray | None = None, **extra) -> dict:
        """Write one sample; ``mask`` is boolean-like (H, W), ``instance_mask`` uint16 (H, W),
        ``regions`` maps instance id -> boolean region mask (stored as ``region_<id>.png``);
        ``ignore`` and ``object_mask`` (boolean-like (H, W)) are stored as 0/255 PNGs and
        listed under the same keys only when given (``ignore`` only when it has a pixel)."""
        from polar_detect.dataset.images import nonfinite_pixels
        from polar_detect.dataset.manifest import check_sample_id

        check_sample_id(sid, f"{source}: sample id")
        d = self.tmp / "samples" / sid
        if d.exists():
            raise DatasetError(f"duplicate sample id {sid!r} (from {source})")
        d.mkdir(parents=True)
        rel = f"samples/{sid}"
        files, sums = {}, {}
        shape = None
        for mod, arr in arrays.items():
            arr = as_hwc(arr)
            bad = nonfinite_pixels(arr)
            if bad:  # the manifest promises finite images (integrity.finite)
                raise DatasetError(f"{source}: {mod} has {bad} pixels with NaN or infinite values; refusing to "
                                   f"write a non-finite image")
            if shape is None:
                shape = arr.shape[:2]
            elif arr.shape[:2] != shape:
                raise DatasetError(f"{source}: {mod} is {arr.shape[:2]}, other modalities {shape}")
            write_tiff(d / f"{mod}.tiff", arr)
            files[mod] = f"{rel}/{mod}.tiff"
        entry = {"id": sid, "split": split, "label": int(label), "classes": sorted(set(classes or [])),
                 "source": str(source), "files": files, "size": list(shape) if shape else None,
                 "mask": None, "instance_mask": None, "instances": list(instances or [])}
        if ignore is not None:
            entry["ignore"] = None
        if object_mask is not None:
            entry["object_mask"] = None
        for key, arr, writer, fname in (("mask", mask, write_png8, "mask.png"),
                                        ("instance_mask", instance_mask, write_png16, "instance_mask.png"),
                                        ("ignore", ignore, write_png8, "ignore.png"),
                                        ("object_mask", object_mask, write_png8, "object_mask.png")):
            if arr is None or (key == "ignore" and not np.any(arr)):
                continue
            if arr.shape[:2] != shape:
                raise DatasetError(f"{source}: {key} is {arr.shape[:2]} but the images are {shape}")
            binary = key != "instance_mask"
            writer(d / fname, (np.asarray(arr) > 0).astype(np.uint8) * 255 if binary else arr)
            entry[key] = f"{rel}/{fname}"
        for inst in entry["instances"]:
            if regions and inst["id"] in regions:
                reg = regions[inst["id"]]
                if reg.shape[:2] != shape:
                    raise DatasetError(f"{source}: region {inst['id']} is {reg.shape[:2]} but the images are {shape}")
                write_png8(d / f"region_{inst['id']}.png", (reg > 0).astype(np.uint8) * 255)
                inst["region_mask"] = f"{rel}/region_{inst['id']}.png"
        entry.update(extra)
        from polar_detect.dataset.manifest import sample_files
        for p in sample_files(entry):
            sums[p] = sha256_file(self.tmp / p)
        entry["sha256"] = sums
        self.samples.append(entry)
        return entry

    def finish(self, modalities: dict, classes: dict, **extra) -> dict:
        """Write the manifest and move the staging directory into place; returns the manifest."""
        if not any(s["split"] == "train" for s in self.samples) and not extra.pop("allow_empty_train", False):
            raise DatasetError(f"{self.out}: the train split is empty")
        manifest = {"format": FORMAT, "name": self.name, "seed": self.seed, "modalities": modalities,
                    "classes": dict(sorted(classes.items())), **extra, "integrity": INTEGRITY,
                    "samples": sorted(self.samples, key=lambda s: s["id"])}
        io.write_json(self.tmp / MANIFEST, manifest)
        io.swap_dir(self.tmp, self.out)
        self._finished = True
        return manifest


def split_counts(samples: list[dict]) -> str:
    """'train 4 (0 anomalous), val 1 (1), test 3 (2)' style summary."""
    parts = []
    for split in ("train", "val", "test"):
        ss = [s for s in samples if s["split"] == split]
        if ss:
            parts.append(f"{split} {len(ss)} ({sum(s['label'] for s in ss)} anomalous)")
    return ", ".join(parts) or "no samples"
