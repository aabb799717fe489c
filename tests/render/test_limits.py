"""Bounds on untrusted input (polar_render.limits): pixel and face limits from the header, each
changed by its environment variable, and the free-space check of a run (estimate x margin)."""
from __future__ import annotations

import shutil
import struct

import pytest

from polar_render import limits
from polar_render.limits import InputTooLargeError


def _png_header(path, w, h):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    return path


def test_defaults_and_environment_overrides(monkeypatch):
    for var in ("POLAR_MAX_IMAGE_PIXELS", "POLAR_MAX_MESH_FACES", "POLAR_DISK_MARGIN"):
        monkeypatch.delenv(var, raising=False)
    assert (limits.max_image_pixels(), limits.max_mesh_faces(), limits.disk_margin()) == (100_000_000, 5_000_000, 1.2)
    monkeypatch.setenv("POLAR_MAX_IMAGE_PIXELS", "1234")
    monkeypatch.setenv("POLAR_MAX_MESH_FACES", "56")
    monkeypatch.setenv("POLAR_DISK_MARGIN", "2.5")
    assert (limits.max_image_pixels(), limits.max_mesh_faces(), limits.disk_margin()) == (1234, 56, 2.5)
    monkeypatch.setenv("POLAR_MAX_MESH_FACES", "")
    assert limits.max_mesh_faces() == 5_000_000            # empty: the default


@pytest.mark.parametrize("var, text, needle", [("POLAR_MAX_IMAGE_PIXELS", "lots", "expected a int"),
                                               ("POLAR_MAX_IMAGE_PIXELS", "1.5", "expected a int"),
                                               ("POLAR_MAX_MESH_FACES", "0", "must be > 0"),
                                               ("POLAR_DISK_MARGIN", "-1", "must be > 0")])
def test_bad_environment_values_name_the_variable(monkeypatch, var, text, needle):
    monkeypatch.setenv(var, text)
    fn = {"POLAR_MAX_IMAGE_PIXELS": limits.max_image_pixels, "POLAR_MAX_MESH_FACES": limits.max_mesh_faces,
          "POLAR_DISK_MARGIN": limits.disk_margin}[var]
    with pytest.raises(InputTooLargeError, match=rf"{var}={text!r}: {needle}"):
        fn()


def test_image_pixels_are_checked_from_the_header(tmp_path, monkeypatch):
    big = _png_header(tmp_path / "big.png", 100, 50)        # header only: no pixels to decode
    assert limits.image_dims(big) == (100, 50)
    monkeypatch.setenv("POLAR_MAX_IMAGE_PIXELS", "5000")
    limits.check_image_file(big)                             # exactly at the limit
    monkeypatch.setenv("POLAR_MAX_IMAGE_PIXELS", "4999")
    with pytest.raises(InputTooLargeError, match=r"big\.png: image is 100x50 = 5,000 pixels, above the limit of "
                                                 r"4,999 \(POLAR_MAX_IMAGE_PIXELS\)"):
        limits.check_image_file(big)
    (tmp_path / "notes.txt").write_text("not an image")
    assert limits.image_dims(tmp_path / "notes.txt") is None
    limits.check_image_file(tmp_path / "notes.txt")          # unknown formats are left to their reader


def test_mesh_faces_are_checked_from_ply_and_stl_headers(tmp_path, monkeypatch):
    ply = tmp_path / "m.ply"
    ply.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\n"
                    b"element face 7\nproperty list uchar int vertex_indices\nend_header\n")
    stl = tmp_path / "m.stl"
    stl.write_bytes(b"\0" * 80 + struct.pack("<I", 9) + b"\0" * 50 * 9)
    monkeypatch.setenv("POLAR_MAX_MESH_FACES", "9")
    limits.check_mesh_file(ply)
    limits.check_mesh_file(stl)
    monkeypatch.setenv("POLAR_MAX_MESH_FACES", "6")
    with pytest.raises(InputTooLargeError, match=r"^objects\.1: \S*m\.ply: mesh has 7 faces, above the limit of 6 "
                                                 r"\(POLAR_MAX_MESH_FACES\)"):
        limits.check_mesh_file(ply, where="objects.1")
    with pytest.raises(InputTooLargeError, match=r"m\.stl: mesh has 9 faces"):
        limits.check_mesh_file(stl)
    # a binary STL whose count does not match its size is not trusted (left to the reader)
    stl.write_bytes(b"\0" * 80 + struct.pack("<I", 10**9) + b"\0" * 50)
    limits.check_mesh_file(stl)
    with pytest.raises(InputTooLargeError, match="mesh has 7 faces"):
        limits.check_face_count(7, "m.obj")


def test_free_space_is_estimate_times_margin(tmp_path, monkeypatch):
    free = 1000
    monkeypatch.setattr(limits.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**6, 10**6 - free, free))
    monkeypatch.setenv("POLAR_DISK_MARGIN", "2")
    target = tmp_path / "not" / "yet" / "there"              # probed at its nearest existing parent
    limits.check_free_space(target, 500, what="rendering 1 sample")
    with pytest.raises(InputTooLargeError) as ei:
        limits.check_free_space(target, 501, what="rendering 1 sample")
    msg = str(ei.value)
    assert msg.startswith(f"{target}: rendering 1 sample needs about") and "POLAR_DISK_MARGIN 2" in msg, msg
    assert not target.exists()
