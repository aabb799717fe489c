"""Bounded image readers of the evaluation inputs: ground-truth PNGs, anomaly-map TIFFs and
modality files shown in the report.

Every reader first checks the file exists and that its header declares at most
``POLAR_MAX_IMAGE_PIXELS`` pixels (``polar_render.limits``; nothing decoded yet), then
refuses NaN/inf.  Errors are :class:`~polar_detect.dataset.errors.InputError` naming the
file.  Masks come back as stored (uint8/uint16, colour PNGs converted to grey); anomaly maps
as float32 (H, W); modality images as float32 (H, W) or (H, W, C), RGB order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from polar_render import io

from polar_detect.dataset.errors import InputError
from polar_detect.dataset.images import nonfinite_pixels


def check_image(path: Path, what: str = "file") -> None:
    """The file exists and its header declares at most ``POLAR_MAX_IMAGE_PIXELS`` pixels."""
    from polar_render.limits import InputTooLargeError, check_image_file
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        check_image_file(path)
    except InputTooLargeError as e:
        raise InputError.verbatim(path, str(e)) from None
    except Exception as e:  # noqa: BLE001 - a damaged header is bad input
        raise InputError(path, f"cannot read the image header ({type(e).__name__}: {e})") from e


def _check_pixels(path: Path, n: int) -> None:
    from polar_render.limits import max_image_pixels
    if n > max_image_pixels():
        raise InputError(path, f"image has {n:,} pixels, above the limit of {max_image_pixels():,} "
                               f"(POLAR_MAX_IMAGE_PIXELS)")


def read_mask_png(path: Path) -> np.ndarray:
    """A mask PNG as stored, (H, W): grey as is, colour converted to grey, grey+alpha -> grey."""
    import cv2
    check_image(path)
    try:
        a = io.read_png(path)
    except OSError:
        raise InputError(path, "cannot read image") from None
    if a.ndim == 3:
        a = a[..., 0] if a.shape[2] in (1, 2) else cv2.cvtColor(a[..., :3], cv2.COLOR_RGB2GRAY)
    return a


def read_modality(path: Path):
    """Any image-like modality file -> (H, W) or (H, W, C) float array (for the report
    figures), or None for a format that cannot be displayed. Oversized headers and non-finite
    values are refused (InputError), not skipped."""
    if path.suffix.lower() not in (".npy", ".npz"):
        check_image(path, "modality image")
    a = _decode_modality(path)
    if a is not None:
        bad = nonfinite_pixels(a)
        if bad:
            raise InputError(path, f"{bad} of {int(np.prod(a.shape[:2]))} pixels hold NaN or infinite values")
    return a


def _decode_any(path: Path):
    """The stored array of a TIFF, .npy (header checked before loading), .npz or OpenCV image."""
    suf = path.suffix.lower()
    if suf in (".tif", ".tiff"):
        return io.read_float_tiff(path)
    if suf == ".npy":
        a = np.load(path, mmap_mode="r")   # header only until the size is checked
        if a.ndim >= 2:
            _check_pixels(path, a.shape[0] * a.shape[1])
        return a
    if suf == ".npz":
        z = np.load(path)
        return z[z.files[0]]
    return io.read_png(path)


def _decode_modality(path: Path):
    try:
        a = _decode_any(path)
        if a is None:
            return None
        a = np.asarray(a, np.float32)
        if a.ndim == 3 and a.shape[0] <= 4 < a.shape[-1]:
            a = np.moveaxis(a, 0, -1)
        return a
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - a modality we cannot display is left out of the figure
        return None
