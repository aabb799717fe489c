"""What reading images means for the dataset package: imports (external images), dataset
files (float32 TIFF modalities, PNG masks), header-only sizes, folder listings.

Decoding is ``polar_render.io``'s (:func:`polar_render.io.read_image`: the header's width x
height is checked against ``POLAR_MAX_IMAGE_PIXELS`` before decoding, so a tiny PNG or TIFF
declaring 100000 x 100000 pixels is refused without being decompressed). This module adds
the dataset's rules: a missing file is reported as missing, every float image is checked
for NaN / inf after decoding (:func:`check_finite`), alpha is dropped from imports, and
modality files come back channels-last. Errors are :class:`DatasetError` naming the file.

Arrays come back as stored (uint8/uint16/float), RGB order, alpha dropped (imports);
dataset modality files as float32 ``(H, W, C)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from polar_render import io
from polar_render.limits import image_dims

from polar_detect.dataset.encodings import DatasetError, as_hwc

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_EXTS = io.TIFF_EXTS


def _dataset_error(path: Path, read, *args):
    """``read(path, *args)`` with a missing file, an oversized header or an unreadable file
    reported as :class:`DatasetError` naming ``path``."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        return read(path, *args)
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:   # io: unreadable file; limits.InputTooLargeError
        raise DatasetError(str(exc)) from None


def check_bounds(path: str | Path) -> None:
    """Refuse an image whose header declares more than ``POLAR_MAX_IMAGE_PIXELS`` pixels, or
    whose header cannot be parsed; a missing file is reported as missing."""
    _dataset_error(Path(path), io.check_image_header)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) from the file header without decoding; None for an unknown format."""
    try:
        dims = image_dims(path)
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable image header: {type(exc).__name__}: {exc}") from None
    return None if dims is None else (dims[1], dims[0])


def tiff_channels(path: str | Path) -> int:
    """Channels of a TIFF's first page from its header: 1 for (H, W), else the last axis."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shape = tif.pages[0].shape
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable TIFF header: {type(exc).__name__}: {exc}") from None
    return 1 if len(shape) == 2 else int(shape[-1])


def nonfinite_pixels(arr: np.ndarray) -> int:
    """Number of pixels (positions of the first two axes) holding a NaN or infinite value in
    any channel; 0 for integer images."""
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.inexact):
        return 0
    bad = ~np.isfinite(arr)
    if bad.ndim > 2:
        bad = bad.reshape(bad.shape[0], bad.shape[1], -1).any(axis=-1)
    return int(bad.sum())


def check_finite(arr: np.ndarray, path: str | Path) -> None:
    """Refuse a float image with NaN or infinite values, naming the file and the pixel count."""
    n = nonfinite_pixels(arr)
    if n:
        total = int(np.prod(np.asarray(arr).shape[:2]))
        raise DatasetError(f"{path}: {n} of {total} pixels hold NaN or infinite values; "
                           f"refusing a non-finite image (it would train or predict NaN)")


def _drop_alpha(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return np.ascontiguousarray(arr)


def read_image(path: str | Path) -> np.ndarray:
    """External image (imports): PNG/JPEG/BMP or TIFF as stored, RGB order, alpha dropped,
    a single channel squeezed to (H, W); float images must be finite."""
    path = Path(path)
    arr = _drop_alpha(_dataset_error(path, io.read_image))
    check_finite(arr, path)
    return arr


def read_tiff(path: str | Path) -> np.ndarray:
    """A dataset modality file: float32 ``(H, W, C)``, finite."""
    path = Path(path)
    arr = as_hwc(_dataset_error(path, io.read_float_tiff))
    check_finite(arr, path)
    return arr


def read_png(path: str | Path) -> np.ndarray:
    """A dataset mask (PNG, as stored: uint8 0/255 or uint16 ids)."""
    return _dataset_error(Path(path), io.read_png)


def bit_scale(arr: np.ndarray) -> float:
    """Full-scale value of an integer image (255 for uint8, 65535 for uint16), else 1."""
    return float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0


def inside(root: str | Path, rel: str | Path) -> Path:
    """``root / rel`` resolved (symlinks followed) and required inside ``root``
    (``polar_render.paths.contained``; escapes refused, loops reported) -- for imports, whose
    files are named by the folder layout."""
    from polar_render.paths import UnsafePathError, contained

    try:
        return contained(root, rel, source=root, key=str(rel))
    except UnsafePathError as exc:
        raise DatasetError(str(exc)) from None


def list_images(folder: Path, root: Path | None = None) -> list[Path]:
    """Image files of ``folder`` (sorted, hidden ones skipped), each resolved and required to
    stay inside ``root`` (default ``folder``): a symlinked file pointing out of the imported
    folder, a symlink loop or a dangling symlink is refused (DatasetError)."""
    folder = Path(folder)
    root = Path(root) if root is not None else folder
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTS:
            continue
        if not p.is_symlink() and not p.is_file():
            continue  # a directory named like an image
        target = inside(root, p.relative_to(root))
        if not target.is_file():
            raise DatasetError(f"{p}: dangling symlink (its target {target} does not exist)")
        out.append(p)
    return out


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a binary mask -> (uint16 labels, count)."""
    import cv2

    n, lab = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
    return lab.astype(np.uint16), int(n - 1)
