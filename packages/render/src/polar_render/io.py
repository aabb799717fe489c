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

Every file goes through :func:`write_bytes` (images are encoded in memory first), so one
place handles a full disk: ENOSPC / EDQUOT or a write that makes no progress raise
:class:`NoSpaceError` naming the file, and the temporary file is removed. Files get
:data:`FILE_MODE` and new directories :data:`DIR_MODE` (the umask's, never world-writable).
"""
from __future__ import annotations

import errno
import io as _stdio
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
# Modes of everything written under OUT: what the user's umask gives, never world-writable
# (another user may read a run, as with files made by cp or tar, but not change it).
FILE_MODE = 0o666 & ~_UMASK & ~0o002
DIR_MODE = 0o777 & ~_UMASK & ~0o002
_FULL = {errno.ENOSPC, errno.EDQUOT}


class NoSpaceError(OSError):
    """A write failed because the file system is full (ENOSPC) or the quota is spent
    (EDQUOT); the message names the file. Nothing is left under the final name."""

    def __str__(self) -> str:
        return str(self.strerror)


def _no_space(path: Path, exc: OSError | None = None, detail: str = "") -> NoSpaceError:
    what = "disk quota exceeded" if exc is not None and exc.errno == errno.EDQUOT else "no space left on device"
    err = NoSpaceError(errno.ENOSPC, f"{path}: {what}{detail}")
    err.filename = str(path)
    return err


@contextmanager
def _full_disk_named(path: Path):
    """Re-raise ENOSPC / EDQUOT from the block as :class:`NoSpaceError` naming ``path``."""
    try:
        yield
    except NoSpaceError:
        raise
    except OSError as exc:
        if exc.errno in _FULL:
            raise _no_space(path, exc) from exc
        raise


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p`` whose new directories get :data:`DIR_MODE` (parents included, unlike
    ``Path.mkdir(mode=...)``); existing directories are left as they are."""
    path = Path(path)
    missing = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        with _full_disk_named(d):
            try:
                os.mkdir(d, DIR_MODE)
            except FileExistsError:
                if not d.is_dir():
                    raise
    return path


def _write_all(fd: int, data) -> None:
    """Write every byte of ``data`` to ``fd``. A short write is retried; a write that makes
    no progress raises ENOSPC (the kernel reports a full disk as a short write first)."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        n = os.write(fd, view[done:])
        if n <= 0:
            raise OSError(errno.ENOSPC, f"short write: {done} of {len(view)} bytes written")
        done += n


def _tmp_path(path: Path) -> Path:
    make_dirs(path.parent)
    with _full_disk_named(path):
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.fchmod(fd, FILE_MODE)  # mkstemp creates 0600; final files get the usual mode
    os.close(fd)
    return Path(name)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; move it into place on success. A full disk
    while the block writes raises :class:`NoSpaceError` naming ``path``."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with _full_disk_named(path):
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data, fsync: bool = False) -> None:
    """Write ``data`` (bytes-like) to ``path`` atomically (temporary file + rename), mode
    :data:`FILE_MODE`; ``fsync=True`` flushes it to the device before the rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path, obj, fsync: bool = False) -> None:
    write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n").encode("utf-8"),
                fsync=fsync)


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
    buf = _stdio.BytesIO()   # encoded in memory, written by write_bytes (full disk -> NoSpaceError)
    tifffile.imwrite(buf, arr, photometric="minisblack", planarconfig="contig" if arr.ndim == 3 else None, **comp)
    write_bytes(path, buf.getbuffer())


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
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), _PNG_PARAMS if compress else _PNG_STORED)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes(path, buf)


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
    make_dirs(final.parent)
    tmp = final.parent / f".tmp-{final.name}--{_HOST}--{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    with _full_disk_named(final):
        os.mkdir(tmp, DIR_MODE)
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
    return process_alive(parts[1], int(parts[2]))


def process_alive(host: str, pid: int) -> bool:
    """True when process ``pid`` of ``host`` may still run: alive on this host, or on
    another host (which this process cannot check)."""
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
