"""Image readers of the dataset package: imports (external images), dataset files (float32
TIFF modalities, PNG masks), header-only sizes, folder listings.

Every reader first calls :func:`check_bounds` (``polar_render.limits.check_image_file``: the
header's width x height against ``POLAR_MAX_IMAGE_PIXELS``, before decoding, so a tiny PNG
or TIFF declaring 100000 x 100000 pixels is refused without being decompressed), and every
float image is checked for NaN / inf after decoding (:func:`check_finite`). Errors are
:class:`DatasetError` naming the file.

Arrays come back as stored (uint8/uint16/float), RGB order, alpha dropped (imports);
dataset modality files as float32 ``(H, W, C)``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .encodings import DatasetError, as_hwc

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_EXTS = (".tif", ".tiff")


def check_bounds(path: str | Path) -> None:
    """Refuse an image whose header declares more than ``POLAR_MAX_IMAGE_PIXELS`` pixels, or
    whose TIFF header cannot be parsed; a missing file is reported as missing."""
    from polar_render.limits import InputTooLargeError, check_image_file

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        check_image_file(path)
    except InputTooLargeError as exc:
        raise DatasetError(str(exc)) from None
    except Exception as exc:  # a damaged TIFF header: tifffile raises many types
        raise DatasetError(f"{path}: unreadable image header: {type(exc).__name__}: {exc}") from None


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) from the file header without decoding; None for an unknown format."""
    from polar_render.limits import image_dims

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


def _decode_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        return tifffile.imread(path)
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable TIFF: {type(exc).__name__}: {exc}") from None


def read_image(path: str | Path) -> np.ndarray:
    """External image (imports): PNG/JPEG/BMP through OpenCV, TIFF through tifffile."""
    path = Path(path)
    check_bounds(path)
    if path.suffix.lower() in TIFF_EXTS:
        arr = _decode_tiff(path)
    else:
        import cv2

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise DatasetError(f"{path}: unreadable image")
        if arr.ndim == 3:
            arr = arr[..., 2::-1] if arr.shape[-1] >= 3 else arr
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    check_finite(arr, path)
    return np.ascontiguousarray(arr)


def read_tiff(path: str | Path) -> np.ndarray:
    """A dataset modality file: float32 ``(H, W, C)``, finite."""
    path = Path(path)
    check_bounds(path)
    arr = as_hwc(_decode_tiff(path))
    check_finite(arr, path)
    return arr


def read_png(path: str | Path) -> np.ndarray:
    """A dataset mask (PNG, as stored: uint8 0/255 or uint16 ids)."""
    import cv2

    path = Path(path)
    check_bounds(path)
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DatasetError(f"{path}: unreadable PNG")
    return arr


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
