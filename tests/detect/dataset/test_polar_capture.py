"""Real polarization captures: DoFP demosaicing (polar_render.physics.dofp, the only DoFP
code) and import (issue 4).

Tolerances (documented in polar_render/physics/dofp.py): lattice samples are kept exactly; a linear
image is reproduced exactly away from the border; elsewhere in the interior the error is at
most 0.5 * (max|f_xx| + max|f_yy|) (px units), here < 1 % of the range (periods >= 48 px);
DoLP within 0.01 and AoLP within 0.02 rad (about 1 degree; DoLP >= 0.1) there.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from polar_detect.dataset.torch_dataset import PolarDataset
from polar_detect.dataset.__main__ import main as cli
from polar_detect.dataset.encodings import DatasetError, decode_aolp
from polar_detect.dataset.manifest import read_manifest
from polar_render.physics.dofp import DEFAULT_LAYOUT, demosaic, mosaic
from polar_detect.dataset.polar_capture import parse_layout, polar_modalities, read_frame

H, W = 64, 96


def smooth_scene():
    """Known smooth S0, DoLP, AoLP and the four polarizer images (Malus), float64."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    s0 = 2000 + 800 * np.sin(2 * np.pi * x / 64) * np.cos(2 * np.pi * y / 48)
    rho = 0.35 + 0.25 * np.sin(2 * np.pi * (x + y) / 80)
    phi = 0.9 * np.sin(2 * np.pi * x / 96) * np.cos(2 * np.pi * y / 128)  # within (-pi/2, pi/2), no wrap
    ims = {a: 0.5 * s0 * (1 + rho * np.cos(2 * phi - 2 * np.deg2rad(a))) for a in (0, 45, 90, 135)}
    return s0, rho, phi, ims


def test_layout_parsing():
    assert parse_layout("90,45,135,0") == DEFAULT_LAYOUT == ((90, 45), (135, 0))
    with pytest.raises(DatasetError, match="four angles"):
        parse_layout("0,45,90,90")


def test_demosaic_recovers_smooth_images_and_polarization():
    s0, rho, phi, ims = smooth_scene()
    raw = mosaic(ims)
    assert raw[0, 0] == ims[90][0, 0] and raw[0, 1] == ims[45][0, 1] and raw[1, 0] == ims[135][1, 0] \
        and raw[1, 1] == ims[0][1, 1]  # Sony IMX250MZR layout
    rec = demosaic(raw)
    offsets = {90: (0, 0), 45: (0, 1), 135: (1, 0), 0: (1, 1)}
    inner = (slice(1, -1), slice(1, -1))
    for a, (r, c) in offsets.items():
        assert np.allclose(rec[a][r::2, c::2], ims[a][r::2, c::2], rtol=0, atol=1e-3)  # samples kept
        err = np.abs(rec[a] - ims[a])[inner].max()
        f = ims[a]
        bound = 0.5 * (np.abs(f[2:] - 2 * f[1:-1] + f[:-2]).max() + np.abs(f[:, 2:] - 2 * f[:, 1:-1] + f[:, :-2]).max())
        assert err <= 1.05 * bound and err < 0.01 * np.ptp(f), (a, err, bound)
        # border (missing neighbours): the nearest sample, off by at most one pixel step in x and y
        grad = max(np.abs(np.diff(f, axis=0)).max(), np.abs(np.diff(f, axis=1)).max())
        assert np.abs(rec[a] - f).max() <= 2 * grad + bound  # corner: one step in x and one in y
    mods = polar_modalities(rec, ["intensity", "dolp", "aolp", "stokes"])
    assert np.abs(mods["intensity"][..., 0] - s0)[inner].max() < 0.01 * np.ptp(s0)
    assert np.abs(mods["dolp"][..., 0] - rho)[inner].max() < 0.01
    dphi = np.angle(np.exp(2j * (decode_aolp(mods["aolp"])[..., 0] - phi))) / 2
    assert np.abs(dphi)[inner].max() < 0.02  # AoLP error ~ intensity error / (2 DoLP S0); DoLP >= 0.1 here
    assert mods["stokes"].shape == (H, W, 3)


def test_demosaic_linear_image_exact_and_layout_matters():
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    ims = {a: 100 + 3 * x + 2 * y + a for a in (0, 45, 90, 135)}
    layout = "0,45,90,135"
    rec = demosaic(mosaic(ims, layout), layout)
    for a in ims:
        assert np.allclose(rec[a][1:-1, 1:-1], ims[a][1:-1, 1:-1], atol=1e-3)
    wrong = demosaic(mosaic(ims, layout))  # decoded with the default (wrong) layout
    assert not np.allclose(wrong[0][1:-1, 1:-1], ims[0][1:-1, 1:-1], atol=1)
    with pytest.raises(ValueError, match="even height and width"):
        demosaic(np.zeros((5, 6)))
    with pytest.raises(ValueError, match="single-channel"):
        demosaic(np.zeros((4, 6, 3)))


def test_bad_mosaic_file_is_a_dataset_error_naming_it(tmp_path):
    cv2.imwrite(str(tmp_path / "odd.png"), np.zeros((5, 6), np.uint16))
    with pytest.raises(DatasetError, match=r"odd\.png: a DoFP mosaic needs even height and width"):
        read_frame("mosaic", tmp_path / "odd.png", DEFAULT_LAYOUT)
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"rgb\.png: a DoFP mosaic is single-channel"):
        read_frame("mosaic", tmp_path / "rgb.png", DEFAULT_LAYOUT)


def test_import_polar_mosaic_and_angles(tmp_path, capsys):
    s0, rho, phi, ims = smooth_scene()
    dn = {a: np.clip(np.rint(v), 0, 65535).astype(np.uint16) for a, v in ims.items()}
    mos = tmp_path / "mosaic"
    mos.mkdir()
    for k in range(2):
        cv2.imwrite(str(mos / f"frame{k}.png"), mosaic(dn))
    masks = tmp_path / "masks"
    masks.mkdir()
    gt = np.zeros((H, W), np.uint8)
    gt[10:20, 10:30] = 255
    cv2.imwrite(str(masks / "frame1.png"), gt)
    assert cli(["import-polar", "--src", str(mos), "--out", str(tmp_path / "d"), "--modalities",
                "intensity,aolp,dolp,pol0", "--masks", str(masks), "--no-progress"]) == 0
    assert "2 mosaic frames" in capsys.readouterr().out
    m = read_manifest(tmp_path / "d")
    assert m["mosaic_layout"] == [[90, 45], [135, 0]] and {s["split"] for s in m["samples"]} == {"test"}
    assert [s["label"] for s in m["samples"]] == [0, 1] and m["classes"] == {"anomaly": "defect"}
    ds = PolarDataset(tmp_path / "d", "test", ["intensity", "aolp", "dolp", "pol0"], normalise=False)
    item = ds[1]
    want = polar_modalities(demosaic(mosaic(dn)), ["intensity", "aolp", "dolp", "pol0"])
    assert np.array_equal(item["image"].numpy(), np.concatenate(list(want.values()), -1).transpose(2, 0, 1))
    assert item["mask"].sum() == 200 and item["label"] == 1
    # the same scene as four angle images gives the same modalities up to demosaicing
    ang = tmp_path / "angles"
    ang.mkdir()
    for a, v in dn.items():
        cv2.imwrite(str(ang / f"shot_{a}.png"), v)
    assert cli(["import-polar", "--src", str(ang), "--out", str(tmp_path / "a"), "--modalities", "dolp",
                "--no-progress"]) == 0
    d = tifffile.imread(tmp_path / "a" / read_manifest(tmp_path / "a")["samples"][0]["files"]["dolp"])
    assert np.abs(d - rho).max() < 2e-3  # 16-bit quantisation only
    # bad input
    assert cli(["import-polar", "--src", str(ang), "--out", str(tmp_path / "n"), "--modalities", "normals"]) == 2
    assert "unknown modality 'normals'" in capsys.readouterr().err
    (ang / "shot_135.png").unlink()
    assert cli(["import-polar", "--src", str(ang), "--out", str(tmp_path / "n"), "--mode", "angles"]) == 2
    assert "lacks the angle image(s) [135]" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()
