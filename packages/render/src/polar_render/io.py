"""The only place for atomic file output and for image and JSON input (render and detect).

Writes. Every file is written to a temporary file in the destination directory and
``os.replace``d into place (:func:`atomic_path`, optionally fsynced), so a crash never leaves
a half-written file under the final name. A directory (a render sample, a dataset, a
prediction folder) is assembled in ``<parent>/.tmp-<name>--<host>--<pid>``
(:func:`staging_dir`) and swapped into place when complete (:func:`swap_dir`: an existing
directory is moved aside first and put back if the rename fails), so it either exists
complete or not at all; :func:`atomic_dir` combines the two.

Formats: float arrays -> float32 TIFF (tifffile, channels last; zlib-compressed unless the
caller passes ``compress=False``, as run/sample.py does for noisy radiance-like images);
8/16-bit images and integer masks -> PNG through OpenCV (Pillow cannot write 16-bit RGB);
arrays are RGB in memory, OpenCV's BGR order is handled here.

Every file goes through :func:`write_bytes` (images are encoded in memory first), so one
place handles a full disk: ENOSPC / EDQUOT or a write that makes no progress raise
:class:`NoSpaceError` naming the file, and the temporary file is removed. Files get
:data:`FILE_MODE` and new directories :data:`DIR_MODE` (the umask's, never world-writable).

Reads. :func:`read_image` (PNG/JPEG/BMP through OpenCV ``IMREAD_UNCHANGED``, TIFF through
tifffile) checks the header against ``POLAR_MAX_IMAGE_PIXELS`` (``limits.check_image_file``)
before decoding, so a decompression bomb is refused without being decompressed; arrays
come back as stored (dtype and channels), RGB(A) order. :func:`read_json_object` reads a
JSON object with errors that name the file (missing, unreadable, not JSON, not an object).
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

from polar_render.limits import InputTooLargeError, check_image_file


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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False):
    """The one atomic-write primitive: yield a temporary path in ``path``'s directory (created
    with :data:`FILE_MODE`); when the block succeeds, flush it to the device (``fsync=True``)
    and ``os.replace`` it onto ``path``. The temporary file never outlives the block. A full
    disk while the block writes raises :class:`NoSpaceError` naming ``path``."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with _full_disk_named(path):
            yield tmp
            if fsync:
                _fsync_file(tmp)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: str | os.PathLike, data, fsync: bool = False) -> None:
    """Write ``data`` (bytes-like) to ``path`` atomically (temporary file + rename), mode
    :data:`FILE_MODE`; ``fsync=True`` flushes it to the device before the rename."""
    path = Path(path)
    with atomic_path(path, fsync=fsync) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)


def write_json(path, obj, fsync: bool = False, indent: int | None = 1) -> None:
    """``obj`` as JSON (numpy arrays/scalars and paths converted), one trailing newline."""
    text = json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n"
    write_bytes(path, text.encode("utf-8"), fsync=fsync)


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------- images

TIFF_EXTS = (".tif", ".tiff")


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


def _write_png(path, array: np.ndarray, dtype, compress: bool) -> None:
    arr = np.asarray(array)
    if arr.dtype != dtype:
        raise TypeError(f"{path}: expected {np.dtype(dtype).name}, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., ::-1]  # RGB -> BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), _PNG_PARAMS if compress else _PNG_STORED)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes(path, buf)


def write_png8(path, array: np.ndarray, compress: bool = True) -> None:
    """uint8 PNG (H, W) grey or (H, W, 3) RGB (masks: 0/255)."""
    _write_png(path, array, np.uint8, compress)


def write_png16(path, array: np.ndarray, compress: bool = True) -> None:
    """uint16 PNG (H, W) or (H, W, 3); ``compress=False`` for noise-like images (see _PNG_STORED)."""
    _write_png(path, array, np.uint16, compress)


def check_image_header(path, kind: str = "image") -> None:
    """Refuse, before decoding, an image whose header declares more than
    ``POLAR_MAX_IMAGE_PIXELS`` pixels (:class:`limits.InputTooLargeError`); a missing file
    or damaged header is an OSError naming the file."""
    try:
        check_image_file(path)
    except InputTooLargeError:
        raise
    except Exception as exc:  # a missing file, or tifffile/PIL on a damaged header
        raise OSError(f"{path}: not a readable {kind}: {type(exc).__name__}: {exc}") from None


def _rgb_order(arr: np.ndarray) -> np.ndarray:
    """OpenCV's BGR / BGRA channel order -> RGB / RGBA (other channel counts unchanged)."""
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return arr[..., ::-1].copy()
    if arr.ndim == 3 and arr.shape[-1] == 4:
        return arr[..., [2, 1, 0, 3]]
    return arr


def read_float_tiff(path) -> np.ndarray:
    """TIFF as stored (float modalities, float maps); header bounded before decoding;
    raises OSError naming the file if unreadable."""
    check_image_header(path, "TIFF")
    try:
        return tifffile.imread(path)
    except Exception as exc:  # tifffile/zlib raise many types for damaged files
        raise OSError(f"{path}: not a readable TIFF: {type(exc).__name__}: {exc}") from exc


def read_png(path) -> np.ndarray:
    """PNG (or JPEG/BMP) as stored (uint8/uint16, RGB(A) order), header bounded before
    decoding; raises OSError naming the file if unreadable."""
    check_image_header(path)
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise OSError(f"{path}: not a readable image")
    return _rgb_order(arr)


def read_image(path) -> np.ndarray:
    """Any supported image as stored: TIFF (by extension) through :func:`read_float_tiff`,
    everything else through :func:`read_png`."""
    return read_float_tiff(path) if Path(path).suffix.lower() in TIFF_EXTS else read_png(path)


# ----------------------------------------------------------------------------- JSON

class FileFormatError(ValueError):
    """An input file is missing, unreadable or not what it should be; the message names it."""


def read_file_bytes(path: str | os.PathLike, error: type[Exception] = FileFormatError) -> bytes:
    """Bytes of ``path``; ``error`` (naming the file) when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        return path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from e


def parse_json(path: str | os.PathLike, data: bytes, what: str = "JSON",
               error: type[Exception] = FileFormatError):
    """``data`` (the bytes of ``path``) parsed as JSON; ``error`` naming the file when it is
    not UTF-8, empty or not JSON (``what`` names what it should hold)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: cannot read: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if not text.strip():
        raise error(f"{path}: file is empty (expected {what})")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except RecursionError:
        raise error(f"{path}: invalid JSON: nested too deeply") from None


def parse_json_object(path: str | os.PathLike, data: bytes, what: str = "a JSON object",
                      error: type[Exception] = FileFormatError) -> dict:
    """:func:`parse_json`, and ``error`` unless the document is an object."""
    obj = parse_json(path, data, what, error)
    if not isinstance(obj, dict):
        raise error(f"{path}: expected {what}, got a JSON {type(obj).__name__}")
    return obj


def read_json(path: str | os.PathLike, what: str = "JSON", error: type[Exception] = FileFormatError):
    """The JSON document stored in ``path`` (any type); errors as :func:`read_json_object`."""
    return parse_json(path, read_file_bytes(path, error), what, error)


def read_json_object(path: str | os.PathLike, what: str = "a JSON object",
                     error: type[Exception] = FileFormatError) -> dict:
    """The JSON object stored in ``path``. Every failure raises ``error`` (default
    :class:`FileFormatError`, a ValueError) with a message starting with the path: file not
    found, cannot read, file is empty, invalid JSON at line L column C, expected ``what``."""
    return parse_json_object(path, read_file_bytes(path, error), what, error)


# ----------------------------------------------------------------------------- directories

def staging_dir(final: str | os.PathLike) -> Path:
    """A fresh, empty ``<parent>/.tmp-<name>--<host>--<pid>`` next to ``final`` (a stale one
    of this process is removed first), mode :data:`DIR_MODE`; fill it, then
    :func:`swap_dir` it into place. Leftovers of killed runs are removed by :func:`clean_partial`."""
    final = Path(final)
    make_dirs(final.parent)
    tmp = final.parent / f".tmp-{final.name}--{_HOST}--{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    with _full_disk_named(final):
        os.mkdir(tmp, DIR_MODE)
    return tmp


def swap_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put the complete directory ``tmp`` in place as ``final`` (same file system). An existing
    ``final`` is first renamed aside to ``.old-<name>--<host>--<pid>``; if the rename of
    ``tmp`` fails, the old directory is put back unchanged (and the error re-raised),
    otherwise it is deleted. Readers never see a half-filled ``final``."""
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists() or final.is_symlink():
        old = final.parent / f".old-{final.name}--{_HOST}--{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None:
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()


@contextmanager
def atomic_dir(final: str | os.PathLike):
    """Build a directory under a temporary name (:func:`staging_dir`); swap it into place as
    ``final`` on success (:func:`swap_dir`; an existing ``final`` is replaced, e.g. when
    redoing a sample). On an error the temporary directory is removed and ``final`` kept."""
    final = Path(final)
    tmp = staging_dir(final)
    try:
        yield tmp
        swap_dir(tmp, final)
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
