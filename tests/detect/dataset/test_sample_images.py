"""Bounded image readers of the evaluation inputs (polar_detect.dataset.sample_images): masks
as stored (colour converted to grey), modality images as float, missing / non-finite /
undisplayable files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from polar_detect.dataset.errors import InputError
from polar_detect.dataset.sample_images import check_image, read_mask_png, read_modality


def test_mask_png_as_stored(tmp_path):
    m16 = np.zeros((5, 7), np.uint16)
    m16[1:3, 2:5] = 300
    cv2.imwrite(str(tmp_path / "inst.png"), m16)
    got = read_mask_png(tmp_path / "inst.png")
    assert got.dtype == np.uint16 and np.array_equal(got, m16)
    colour = np.zeros((5, 7, 3), np.uint8)
    colour[2, 3] = (255, 255, 255)
    cv2.imwrite(str(tmp_path / "rgb.png"), colour)
    grey = read_mask_png(tmp_path / "rgb.png")
    assert grey.shape == (5, 7) and grey[2, 3] == 255 and grey.sum() == 255


def test_missing_and_damaged_files_are_named(tmp_path):
    with pytest.raises(InputError, match=r"gone.png: mask file not found|gone.png: file not found"):
        read_mask_png(tmp_path / "gone.png")
    with pytest.raises(InputError, match="gone.tiff: anomaly map not found"):
        check_image(tmp_path / "gone.tiff", "anomaly map")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="bad.png"):
        read_mask_png(tmp_path / "bad.png")


def test_modality_images_float_or_none(tmp_path):
    a = np.random.default_rng(0).random((6, 4, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "x.tiff", a, photometric="rgb")
    assert np.array_equal(read_modality(tmp_path / "x.tiff"), a)
    chw = np.random.default_rng(1).random((3, 6, 9)).astype(np.float32)   # channels first -> last
    np.save(tmp_path / "c.npy", chw)
    assert np.array_equal(read_modality(tmp_path / "c.npy"), np.moveaxis(chw, 0, -1))
    a[2, 1, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tiff", a, photometric="rgb")
    with pytest.raises(InputError, match=r"nan.tiff: 1 of 24 pixels hold NaN"):
        read_modality(tmp_path / "nan.tiff")
    (tmp_path / "odd.npz").write_bytes(b"not a zip")
    assert read_modality(tmp_path / "odd.npz") is None             # cannot be displayed: left out
