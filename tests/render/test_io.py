"""polar_render.io, the only atomic-write and image/JSON reading code: atomic files and
directories, PNG 8/16 and float TIFF round trips, bounded decoding, JSON errors."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from polar_render import io
from polar_render.limits import InputTooLargeError

from tests.render.run.conftest import FAST


def _entries(d):
    return sorted(p.name for p in d.iterdir())


def test_atomic_write_leaves_nothing_when_the_writer_raises(tmp_path):
    target = tmp_path / "out" / "a.bin"
    io.write_bytes(target, b"old")
    seen = []
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_path(target) as tmp:
            seen.append(tmp)
            tmp.write_bytes(b"half-writ")
            raise RuntimeError("boom")
    assert seen[0].parent == target.parent            # the temporary file is in the target dir
    assert seen[0].name.startswith(".a.bin.") and seen[0].name.endswith(".part")
    assert target.read_bytes() == b"old"                # old content untouched
    assert _entries(target.parent) == ["a.bin"]         # no partial or temporary file left


def test_atomic_write_replaces_with_mode_and_fsync(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(io.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    target = tmp_path / "new" / "deep" / "b.json"
    io.write_json(target, {"x": np.float32(1.5), "a": np.arange(3)}, fsync=True)
    assert target.read_text() == '{\n "x": 1.5,\n "a": [\n  0,\n  1,\n  2\n ]\n}\n'
    assert len(synced) == 1
    assert target.stat().st_mode & 0o777 == io.FILE_MODE
    assert _entries(target.parent) == ["b.json"]


def test_full_disk_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(io.os, "write", full)
    with pytest.raises(io.NoSpaceError, match=r"c\.tiff: no space left on device"):
        io.write_float_tiff(tmp_path / "c.tiff", np.zeros((4, 4)))
    assert _entries(tmp_path) == []


@pytest.mark.parametrize("shape", [(17, 23), (17, 23, 3)])
@pytest.mark.parametrize("compress", [True, False])
def test_png16_round_trip_exact(tmp_path, shape, compress):
    a = np.random.default_rng(0).integers(0, 65536, shape, dtype=np.uint16)
    io.write_png16(tmp_path / "a.png", a, compress=compress)
    b = io.read_png(tmp_path / "a.png")
    assert b.dtype == np.uint16 and b.shape == a.shape
    np.testing.assert_array_equal(b, a)                 # also pins the RGB order (not BGR)


def test_png8_round_trip_and_dtype_checked(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    io.write_png8(tmp_path / "a.png", a)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), a)
    with pytest.raises(TypeError, match="expected uint8"):
        io.write_png8(tmp_path / "b.png", a.astype(np.uint16))
    assert not (tmp_path / "b.png").exists()


def test_rgba_png_comes_back_rgba(tmp_path):
    import cv2

    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 20, 30, 40
    cv2.imwrite(str(tmp_path / "a.png"), rgba[..., [2, 1, 0, 3]])   # OpenCV writes BGRA
    np.testing.assert_array_equal(io.read_png(tmp_path / "a.png"), rgba)


@pytest.mark.parametrize("shape", [(13, 7), (13, 7, 5)])
@pytest.mark.parametrize("compress", [True, False])
def test_float_tiff_round_trip(tmp_path, shape, compress):
    a = np.random.default_rng(2).normal(0, 1e3, shape).astype(np.float32)
    a.flat[0] = np.float32(1e-30)
    io.write_float_tiff(tmp_path / "a.tiff", a, compress=compress)
    b = io.read_image(tmp_path / "a.tiff")
    assert b.dtype == np.float32
    np.testing.assert_array_equal(b, a)
    with pytest.raises(ValueError, match="non-finite"):
        io.write_float_tiff(tmp_path / "n.tiff", np.array([[np.nan]]))
    assert not (tmp_path / "n.tiff").exists()


def _png_header_only(w, h):
    """A PNG whose IHDR declares w x h pixels but holds no image data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_oversize_image_refused_before_decoding(tmp_path, monkeypatch):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    decoded = []
    monkeypatch.setattr(io.cv2, "imread", lambda *a: decoded.append(a))
    with pytest.raises(InputTooLargeError, match=r"bomb\.png: image is 100000x100000.*POLAR_MAX_IMAGE_PIXELS"):
        io.read_png(tmp_path / "bomb.png")
    assert decoded == []                                # refused from the header alone
    import tifffile

    tifffile.imwrite(tmp_path / "t.tiff", np.zeros((8, 8), np.float32))
    monkeypatch.setenv("POLAR_MAX_IMAGE_PIXELS", "63")
    with pytest.raises(InputTooLargeError, match=r"t\.tiff: image is 8x8"):
        io.read_float_tiff(tmp_path / "t.tiff")
    monkeypatch.setenv("POLAR_MAX_IMAGE_PIXELS", "64")
    assert io.read_float_tiff(tmp_path / "t.tiff").shape == (8, 8)


def test_unreadable_images_name_the_file(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "junk.tiff").write_bytes(b"II*\x00garbage")
    with pytest.raises(OSError, match=r"junk\.png: not a readable image"):
        io.read_png(tmp_path / "junk.png")
    with pytest.raises(OSError, match=r"junk\.tiff: not a readable TIFF"):
        io.read_float_tiff(tmp_path / "junk.tiff")
    with pytest.raises(OSError, match=r"none\.png: not a readable image"):
        io.read_image(tmp_path / "none.png")


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    (b"", r"file is empty \(expected a run manifest\)"),
    (b"\xff\xfe{}", "cannot read: not UTF-8 text"),
    (b'{"a": 1,\n "b": }', "invalid JSON at line 2 column"),
    (b"[1, 2]", "expected a run manifest, got a JSON list"),
    (b"[" * 100000, "invalid JSON"),
], ids=["missing", "empty", "not-utf8", "bad-json", "not-object", "deep"])
def test_json_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(io.FileFormatError, match=rf"^{tmp_path}/run\.json: {message}"):
        io.read_json_object(path, what="a run manifest")

    class MyError(ValueError):
        pass

    with pytest.raises(MyError, match=r"run\.json: "):
        io.read_json_object(path, what="a run manifest", error=MyError)


def test_json_object_read(tmp_path):
    io.write_json(tmp_path / "a.json", {"k": [1, 2.5, None]})
    assert io.read_json_object(tmp_path / "a.json") == {"k": [1, 2.5, None]}
    io.write_json(tmp_path / "l.json", [1, 2])
    assert io.read_json(tmp_path / "l.json") == [1, 2]


def test_atomic_dir_swap_keeps_old_when_the_rename_fails(tmp_path, monkeypatch):
    final = tmp_path / "data"
    with io.atomic_dir(final) as d:
        (d / "f").write_text("v1")
    real_replace = os.replace

    def failing(src, dst):
        if ".tmp-data" in str(src):
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", failing)
    with pytest.raises(OSError, match="Input/output error"):
        with io.atomic_dir(final) as d:
            (d / "f").write_text("v2")
    assert (final / "f").read_text() == "v1"            # the old directory is back
    assert _entries(tmp_path) == ["data"]               # no .tmp-* or .old-* left
    monkeypatch.setattr(io.os, "replace", real_replace)
    with io.atomic_dir(final) as d:
        (d / "f").write_text("v3")
    assert (final / "f").read_text() == "v3" and _entries(tmp_path) == ["data"]


def test_atomic_dir_error_in_block_keeps_old(tmp_path):
    final = tmp_path / "s"
    with io.atomic_dir(final) as d:
        (d / "meta.json").write_text("{}")
    with pytest.raises(KeyError):
        with io.atomic_dir(final) as d:
            assert d.parent == tmp_path and d.name.startswith(".tmp-s--")
            (d / "meta.json").write_text('{"new": 1}')
            raise KeyError("x")
    assert (final / "meta.json").read_text() == "{}" and _entries(tmp_path) == ["s"]


def test_no_world_writable_files_and_readable_layout(tmp_path):
    """Even with umask 000 nothing under OUT is world-writable; with umask 022 the layout
    files are readable by others (0644), like every other file of the run."""
    def render(out: Path, umask: int):
        r = subprocess.run([sys.executable, "-m", "polar_render.cli", "render", "--scene", "usb_brick", "--n", "1",
                            "--out", str(out), *FAST, "--quiet"], capture_output=True, text=True, timeout=300,
                           preexec_fn=lambda: os.umask(umask))
        assert r.returncode == 0, r.stderr[-3000:]
        return [out, *out.rglob("*")]

    for p in render(tmp_path / "open", 0o000):
        mode = p.lstat().st_mode & 0o777
        assert mode & 0o002 == 0, (p, oct(mode))
    for p in render(tmp_path / "usual", 0o022):
        mode = p.lstat().st_mode & 0o777
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))
    assert (tmp_path / "usual" / "layout" / "models" / "obj_000001.ply").is_file()


def test_short_writes_are_completed_and_a_stalled_write_is_a_full_disk(tmp_path, monkeypatch):
    """The kernel reports a full disk as a short write first: short writes are retried,
    a write that makes no progress is ENOSPC, named by file."""
    real, calls = os.write, []

    def short(fd, data):
        calls.append(len(data))
        return real(fd, bytes(data[: max(1, len(data) // 2)]))

    monkeypatch.setattr(io.os, "write", short)
    io.write_bytes(tmp_path / "a.bin", bytes(range(256)) * 4)
    monkeypatch.setattr(io.os, "write", real)
    assert (tmp_path / "a.bin").read_bytes() == bytes(range(256)) * 4 and len(calls) > 5

    monkeypatch.setattr(io.os, "write", lambda fd, data: 0 if len(data) < 600 else real(fd, bytes(data[:500])))
    with pytest.raises(io.NoSpaceError, match=r"b\.bin: no space left on device"):
        io.write_bytes(tmp_path / "b.bin", b"x" * 1000)
    monkeypatch.setattr(io.os, "write", real)
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]
