"""Atomic file output and input for render samples.

Every writer writes to a temporary file in the destination directory and ``os.replace``s
it into place, so a crash never leaves a half-written file under the final name. A whole
sample is assembled in ``<out>/.tmp-<name>-<pid>`` and renamed to ``<out>/<name>`` when
complete (directory rename is atomic on POSIX), so a sample directory either exists
complete, with its ``meta.json``, or not at all.

Formats: float arrays -> float32 TIFF (tifffile, channels last; zlib-compressed unless the
caller passes ``compress=False``, as render.py does for noisy radiance-like images);
16-bit images and integer masks -> PNG through OpenCV (Pillow cannot write 16-bit RGB);
arrays are RGB in memory, OpenCV's BGR order is handled here.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import tifffile


# Masks (mostly runs of equal ids): zlib level 1 with the RLE strategy, measured 2x faster
# than plain level 1 and no larger. Noisy 16-bit polarizer images (640x480x3, measured on
# rendered usb_brick samples): RLE level 1 takes 31 ms each and saves 6-9 %; stored deflate
# blocks with no PNG row filter take 3 ms (0.2 % larger than raw), so those are written
# uncompressed (``compress=False``). Both are ordinary PNGs that every reader decodes.
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
_PNG_STORED = [cv2.IMWRITE_PNG_COMPRESSION, 0, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
_HOST = socket.gethostname().replace("-", "_")
_UMASK = os.umask(0)
os.umask(_UMASK)


def _tmp_path(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; final files get the usual mode
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; move it into place on success."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_float_tiff(path, array: np.ndarray, compress: bool = True) -> None:
    """float32 TIFF, shape (H, W) or (H, W, C); zlib level 1 unless ``compress=False``.

    Noisy Monte Carlo radiance barely compresses (float mantissas are random: ~10-25 %
    smaller) yet zlib costs ~0.5 s for a 640x480x12 Stokes image, about the render time;
    callers write such arrays uncompressed. Both read back identically (tifffile, OpenCV).
    """
    arr = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: refusing to write non-finite values")
    comp = {"compression": "zlib", "compressionargs": {"level": 1}} if compress else {}
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, arr, photometric="minisblack", planarconfig="contig" if arr.ndim == 3 else None,
                         **comp)


def read_float_tiff(path) -> np.ndarray:
    """float TIFF as stored; raises OSError naming the file if unreadable."""
    try:
        return tifffile.imread(path)
    except Exception as exc:  # tifffile/zlib raise many types for damaged files
        raise OSError(f"{path}: not a readable TIFF: {type(exc).__name__}: {exc}") from exc


def write_png16(path, array: np.ndarray, compress: bool = True) -> None:
    """uint16 PNG (H, W) or (H, W, 3); ``compress=False`` for noise-like images (see _PNG_STORED)."""
    arr = np.asarray(array)
    if arr.dtype != np.uint16:
        raise TypeError(f"{path}: expected uint16, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., ::-1]  # RGB -> BGR
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), _PNG_PARAMS if compress else _PNG_STORED)
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        tmp.write_bytes(buf.tobytes())


def read_png(path) -> np.ndarray:
    """PNG as stored (uint8/uint16, RGB order); raises OSError naming the file if unreadable."""
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise OSError(f"{path}: not a readable image")
    return arr[..., ::-1].copy() if arr.ndim == 3 else arr


@contextmanager
def atomic_dir(final: str | os.PathLike):
    """Build a directory under a temporary name; rename it to ``final`` on success.

    An existing ``final`` is replaced (used when redoing a sample). Leftover temporary
    directories from killed runs are removed by :func:`clean_partial`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}--{_HOST}--{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _owner_alive(name: str) -> bool:
    """True when a ``.tmp-<name>--<host>--<pid>`` entry belongs to a live process on this
    host, or to another host (which this process cannot check)."""
    parts = name.rsplit("--", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return False  # unknown format (older versions): treat as abandoned
    host, pid = parts[1], int(parts[2])
    if host != _HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_partial(directory: str | os.PathLike) -> int:
    """Remove leftover ``.tmp-*`` entries of interrupted runs; return how many. Entries of
    processes still running (parallel workers, other shards) are left alone."""
    directory = Path(directory)
    n = 0
    if directory.is_dir():
        for p in directory.glob(".tmp-*"):
            if _owner_alive(p.name):
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            n += 1
    return n
