"""Bounds on untrusted input: image pixels, mesh triangles, disk space for a run.

Each limit has a default that every shipped scene and dataset sits far below and an
environment variable to change it (a plain integer):

==========================  =============  ===============================================
variable                    default        what it bounds
==========================  =============  ===============================================
``POLAR_MAX_IMAGE_PIXELS``  100,000,000    width x height of any image read (checked from
                                           the file header, before decoding: no
                                           decompression bombs)
``POLAR_MAX_MESH_FACES``    5,000,000      triangles of one mesh file (scene part or BOP
                                           model), checked from the header where it has one
``POLAR_DISK_MARGIN``       1.2            a render run needs estimate x margin free bytes
==========================  =============  ===============================================

Violations raise :class:`InputTooLargeError` (a ``ValueError``: CLIs exit 2) naming the
file, the size found and the variable that raises the limit.
"""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path


class InputTooLargeError(ValueError):
    """An input exceeds a configured bound (or the disk cannot hold a run)."""


def _env_number(name: str, default: float, kind=int):
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        raise InputTooLargeError(f"environment variable {name}={text!r}: expected a {kind.__name__}") from None
    if value <= 0:
        raise InputTooLargeError(f"environment variable {name}={text!r}: must be > 0")
    return value


def max_image_pixels() -> int:
    return _env_number("POLAR_MAX_IMAGE_PIXELS", 100_000_000)


def max_mesh_faces() -> int:
    return _env_number("POLAR_MAX_MESH_FACES", 5_000_000)


def disk_margin() -> float:
    return _env_number("POLAR_DISK_MARGIN", 1.2, float)


def _png_dims(head: bytes):
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    return None


def image_dims(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, TIFF, JPEG or BMP without decoding the
    pixels; None when the format is not recognised."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(32)
    dims = _png_dims(head)
    if dims:
        return int(dims[0]), int(dims[1])
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with the detect package
        return None
    Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit below, with our own message
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except Exception:
        return None


def check_image_file(path: str | os.PathLike) -> None:
    """Refuse an image whose header declares more than ``POLAR_MAX_IMAGE_PIXELS`` pixels."""
    dims = image_dims(path)
    if dims is None:
        return
    w, h = dims
    limit = max_image_pixels()
    if w * h > limit:
        raise InputTooLargeError(f"{path}: image is {w}x{h} = {w * h:,} pixels, above the limit of "
                                 f"{limit:,} (POLAR_MAX_IMAGE_PIXELS); refusing to decode it")


def _ply_faces(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.startswith(b"ply"):
        return None
    for line in head.split(b"end_header")[0].splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"element" and parts[1] == b"face":
            try:
                return int(parts[2])
            except ValueError:
                return None
    return None


def _binary_stl_faces(path: Path) -> int | None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(84)
    if len(head) == 84 and not head[:5].lower().startswith(b"solid"):
        n = struct.unpack("<I", head[80:84])[0]
        if 84 + 50 * n == size:
            return n
    return None


def check_mesh_file(path: str | os.PathLike, *, where: str = "") -> None:
    """Refuse a mesh file declaring more than ``POLAR_MAX_MESH_FACES`` triangles (from the
    PLY header or binary STL count; other formats are checked after loading with
    :func:`check_face_count`)."""
    path = Path(path)
    n = _ply_faces(path) if path.suffix.lower() == ".ply" else (
        _binary_stl_faces(path) if path.suffix.lower() == ".stl" else None)
    if n is not None:
        check_face_count(n, path, where=where)


def check_face_count(n: int, path: str | os.PathLike, *, where: str = "") -> None:
    limit = max_mesh_faces()
    if n > limit:
        prefix = f"{where}: " if where else ""
        raise InputTooLargeError(f"{prefix}{path}: mesh has {n:,} faces, above the limit of {limit:,} "
                                 f"(POLAR_MAX_MESH_FACES)")


def check_free_space(directory: str | os.PathLike, needed_bytes: int, *, what: str) -> None:
    """Refuse to start work whose output (``needed_bytes`` estimated, times
    ``POLAR_DISK_MARGIN``) would not fit in the free space of ``directory``'s file system."""
    d = Path(directory)
    probe = d
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    need = int(needed_bytes * disk_margin())
    if need > free:
        raise InputTooLargeError(f"{d}: {what} needs about {need / 2**30:.2f} GiB "
                                 f"(estimate x POLAR_DISK_MARGIN {disk_margin():g}) but only "
                                 f"{free / 2**30:.2f} GiB are free on that file system")
