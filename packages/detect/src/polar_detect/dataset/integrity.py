"""Checks run when a dataset is loaded for training, prediction, evaluation or export.

For every file a loader is about to read (the chosen modalities and masks of the chosen
samples), before any work starts:

1. the path from the manifest is resolved inside the dataset directory
   (:func:`polar_detect.dataset.manifest.resolve_file`);
2. the file exists and its header declares at most ``POLAR_MAX_IMAGE_PIXELS`` pixels
   (``polar_render.limits.check_image_file``, nothing decoded yet);
3. its size from the header equals the sample's ``size`` ([H, W], manifest) or, without
   one, the size of the sample's first modality file: a wrong-size image is named itself
   (a mask is compared with the image size only after the images passed);
4. its sha256 equals the manifest's (when the manifest records one; hand-written manifests
   may omit checksums, ``dataset verify`` lists such files): a mismatch means the file
   changed since the dataset was built;
5. float TIFFs are decoded and checked for NaN/inf unless the manifest states
   ``integrity.finite`` (its writer refused non-finite arrays) *and* the checksum matched,
   which proves the bytes are the ones checked at build time.

Cost (once per process: results are memoised per file under its path, size, mtime, ctime,
inode and the pixel limit, so re-loading a dataset -- another split, the native-size twin
in ``patchcore predict``, the calibration split -- re-checks nothing), measured on a
200-sample dataset of 640x480 RGB float32 zlib TIFFs (3.1 MB each, 630 MB, page cache warm)
plus masks: on an idle core, stat + headers 0.02 s and sha256 0.37 s; ``PolarDataset(...,
"all", ["intensity"])`` took 0.93 s CPU (2.0 s wall, 2 busy shared cores) the first time
and 0.03 s the second, while reading the 200 items once costs about 13 s CPU (67 ms each:
decode, normalise, masks) -- the check is ~7 % of one pass. The NaN decode of step 5, needed
only for manifests without ``integrity.finite`` (older or hand-written datasets), costs
about one extra decode per image: 3.3 s idle (5.6 s CPU measured busy) for the same 200.

Loaders still check each decoded image again (finite, size) when they read it, so a file
changed after these checks is refused too. The memo trusts a file whose size, mtime, ctime
and inode are unchanged; a same-size rewrite within one clock tick in the same process
would be missed by the checksum (not by the item's own NaN/size checks).
"""
from __future__ import annotations

import os
from pathlib import Path

from polar_render.limits import max_image_pixels

from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.images import TIFF_EXTS, check_bounds, image_size, read_tiff, tiff_channels
from polar_detect.dataset.manifest import sha256_file
from polar_render.progress import progress as progress_bar

_DONE: dict[tuple, tuple | None] = {}  # files that passed -> (H, W); keyed by identity + what was checked
_SHA: dict[tuple, str] = {}      # sha256 memo keyed by file identity


def _identity(path: Path) -> tuple:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot stat: {exc.strerror or exc}") from None
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process per file version."""
    ident = _identity(path)
    if ident not in _SHA:
        _SHA[ident] = sha256_file(path)
    return _SHA[ident]


def forget() -> None:
    """Drop the memo (tests; a long-lived process that wants a fresh check)."""
    _DONE.clear()
    _SHA.clear()


def check_file(path: Path, *, mpath: Path, key: str, sha256: str | None = None,
               size: tuple[int, int] | None = None, finite_known: bool = False,
               channels: int | None = None) -> tuple[int, int] | None:
    """Run checks 2-5 (module docstring) on one resolved file; returns its (H, W) from the
    header (None for a format without a readable header). ``key`` names the manifest entry;
    ``channels``: the manifest's channel count, compared with a TIFF's header."""
    ident = _identity(path)
    memo = (ident, sha256, size, finite_known, channels, max_image_pixels())
    if memo in _DONE:
        return _DONE[memo]
    check_bounds(path)
    hw = image_size(path)
    if size is not None and hw is not None and tuple(hw) != tuple(size):
        raise DatasetError(f"{path}: image is {hw[0]}x{hw[1]} (HxW) but {mpath} ({key}) expects "
                           f"{size[0]}x{size[1]}; the file does not belong to this sample or was replaced")
    if channels is not None and path.suffix.lower() in TIFF_EXTS:
        have = tiff_channels(path)
        if have != channels:
            raise DatasetError(f"{path}: image has {have} channels but {mpath} declares {channels} for "
                               f"{key.rsplit('.', 1)[-1]} (modalities.{key.rsplit('.', 1)[-1]}.channels)")
    verified = False
    if sha256 is not None:
        if file_sha256(path) != sha256:
            _changed(path, mpath, key)
        verified = True
    if path.suffix.lower() in TIFF_EXTS and not (verified and finite_known):
        read_tiff(path)  # decodes and refuses NaN/inf, naming the file and the pixel count
    _DONE[memo] = hw
    return hw


def _changed(path: Path, mpath: Path, key: str):
    """Raise the checksum-mismatch error; a changed float image that is also non-finite says so."""
    changed = (f"the file changed since the dataset was built (its sha256 differs from {mpath}, {key}); "
               f"rebuild the dataset (`python -m polar_detect.dataset build|import-... --overwrite`), or run "
               f"`python -m polar_detect.dataset verify {mpath.parent}` to list every changed file")
    if path.suffix.lower() in TIFF_EXTS:
        try:
            read_tiff(path)
        except DatasetError as exc:
            raise DatasetError(f"{exc}; {changed}") from None
    raise DatasetError(f"{path}: {changed}")


def channels_of(manifest: dict, modality: str) -> int | None:
    entry = (manifest.get("modalities") or {}).get(modality)
    return int(entry["channels"]) if isinstance(entry, dict) and isinstance(entry.get("channels"), int) else None


def check_sample(mpath: Path, manifest: dict, index: int, sample: dict, modalities,
                 mask_keys=("mask", "instance_mask")) -> dict[str, Path | None]:
    """Resolve and check the files of one sample that a loader reads: ``files.<modality>`` for
    each of ``modalities`` and the ``mask_keys``. Returns ``{modality or key: resolved path}``
    (None for an absent mask). Raises DatasetError naming the file and the manifest key."""
    from polar_detect.dataset.manifest import resolve_file

    sums = sample.get("sha256") or {}
    finite_known = bool((manifest.get("integrity") or {}).get("finite"))
    size = tuple(sample["size"]) if sample.get("size") else None
    out: dict[str, Path | None] = {}
    where = f"samples[{index}]"
    for mod in modalities:
        rel = (sample.get("files") or {}).get(mod)
        if rel is None:
            raise DatasetError(f"{mpath}: {where}.files.{mod}: missing (sample {sample['id']!r} has no {mod!r} file)")
        p = resolve_file(mpath, index, f"files.{mod}", rel)
        hw = check_file(p, mpath=mpath, key=f"{where}.files.{mod}", sha256=sums.get(rel), size=size,
                        finite_known=finite_known, channels=channels_of(manifest, mod))
        size = size or hw
        out[mod] = p
    for key in mask_keys:
        rel = sample.get(key)
        if not rel:
            out[key] = None
            continue
        p = resolve_file(mpath, index, key, rel)
        check_file(p, mpath=mpath, key=f"{where}.{key}", sha256=sums.get(rel), size=size)
        out[key] = p
    return out


def check_samples(mpath: Path, manifest: dict, indexed, modalities, mask_keys=("mask", "instance_mask"),
                  progress: bool = False) -> list[dict[str, Path | None]]:
    """:func:`check_sample` over ``indexed`` = [(manifest index, sample)]; a progress bar on
    stderr when asked and the dataset is large."""
    items = list(indexed)
    it = progress_bar(items, desc=f"check {Path(mpath).parent.name}", unit="sample", leave=False,
                      enabled=progress and len(items) > 50 and os.isatty(2))
    return [check_sample(Path(mpath), manifest, i, s, modalities, mask_keys) for i, s in it]
