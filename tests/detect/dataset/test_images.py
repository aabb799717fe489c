"""polar_detect.dataset.images: the dataset's reading rules on top of polar_render.io
(missing files, alpha dropped, channels last, finite floats, bounded headers), per encoding."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from polar_render import io
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.images import image_size, read_image, read_png, read_tiff, tiff_channels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [None, 3])
def test_import_png_round_trip(tmp_path, dtype, channels):
    shape = (6, 10) if channels is None else (6, 10, channels)
    a = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    (io.write_png8 if dtype == np.uint8 else io.write_png16)(tmp_path / "a.png", a)
    b = read_image(tmp_path / "a.png")
    assert b.dtype == dtype
    np.testing.assert_array_equal(b, a)
    assert image_size(tmp_path / "a.png") == (6, 10)


def test_import_drops_alpha_keeps_rgb(tmp_path):
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 7
    cv2.imwrite(str(tmp_path / "a.png"), rgba[..., [2, 1, 0, 3]])
    b = read_image(tmp_path / "a.png")
    assert b.shape == (4, 5, 3)
    np.testing.assert_array_equal(b[0, 0], [200, 100, 50])


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_modality_tiff_round_trip_channels_last(tmp_path, channels):
    from polar_detect.dataset.writer import write_tiff

    a = np.random.default_rng(1).normal(size=(5, 7, channels)).astype(np.float32)
    write_tiff(tmp_path / "m.tiff", a)
    assert tiff_channels(tmp_path / "m.tiff") == channels
    b = read_tiff(tmp_path / "m.tiff")
    assert b.shape == (5, 7, channels) and b.dtype == np.float32
    np.testing.assert_array_equal(b, a)


def test_mask_png_as_stored(tmp_path):
    ids = np.zeros((5, 6), np.uint16)
    ids[1:3, 2:5] = 3
    ids[4, 0] = 1000
    io.write_png16(tmp_path / "i.png", ids)
    np.testing.assert_array_equal(read_png(tmp_path / "i.png"), ids)


def test_errors_are_dataset_errors_naming_the_file(tmp_path, monkeypatch):
    import tifffile

    with pytest.raises(DatasetError, match=r"gone\.tiff: missing"):
        read_tiff(tmp_path / "gone.tiff")
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match=r"bad\.png: not a readable"):
        read_png(tmp_path / "bad.png")
    tifffile.imwrite(tmp_path / "nan.tiff", np.array([[1.0, np.nan], [np.inf, 0.0]], np.float32))
    with pytest.raises(DatasetError, match=r"nan\.tiff: 2 of 4 pixels hold NaN"):
        read_tiff(tmp_path / "nan.tiff")
    with pytest.raises(DatasetError, match=r"nan\.tiff: 2 of 4 pixels"):
        read_image(tmp_path / "nan.tiff")
    io.write_png8(tmp_path / "big.png", np.zeros((10, 10), np.uint8))
    monkeypatch.setenv("POLAR_MAX_IMAGE_PIXELS", "99")
    with pytest.raises(DatasetError, match=r"big\.png: image is 10x10.*POLAR_MAX_IMAGE_PIXELS"):
        read_image(tmp_path / "big.png")
