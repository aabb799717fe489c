"""Reading external images (imports): PNG/JPEG/BMP through OpenCV, TIFF through tifffile.

Arrays come back as stored (uint8/uint16/float), RGB order, alpha dropped; errors are
DatasetError naming the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .encodings import DatasetError

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            arr = tifffile.imread(path)
        except Exception as exc:
            raise DatasetError(f"{path}: unreadable TIFF: {type(exc).__name__}: {exc}") from None
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
    return np.ascontiguousarray(arr)


def bit_scale(arr: np.ndarray) -> float:
    """Full-scale value of an integer image (255 for uint8, 65535 for uint16), else 1."""
    return float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not p.name.startswith("."))


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a binary mask -> (uint16 labels, count)."""
    import cv2

    n, lab = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
    return lab.astype(np.uint16), int(n - 1)
