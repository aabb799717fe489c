"""PolarDataset: render -> dataset -> loader round trip, geometry, worker processes (issue 4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from polar_detect.dataset.torch_dataset import PolarDataset
from polar_detect.dataset.build import build_from_renders
from polar_detect.dataset.encodings import DatasetError
from polar_render.outputs import load_sample

from tests.detect.dataset.real_render import ANOMALOUS, render_dir

MODS = ["intensity", "aolp", "dolp", "normals", "pol0", "pol45", "pol90", "pol135", "stokes"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    render = render_dir(tmp_path_factory)
    out = tmp_path_factory.mktemp("data") / "usb_brick"
    build_from_renders([render], out, MODS, seed=0, progress=False)
    return render, out


def _hwc(x):
    return x[..., None] if x.ndim == 2 else x


def test_round_trip_pixel_identical(data):
    """Every modality and both masks come back bit-identical to the render (native size)."""
    render, out = data
    ds = PolarDataset(out, "all", MODS, normalise=False)
    assert len(ds) == 6
    n_anom = 0
    for i in range(len(ds)):
        item = ds[i]
        smp = load_sample(render / "samples" / item["id"])
        meta = smp["meta"]
        c = 3
        expect = [_hwc(smp["intensity"])]
        phi = _hwc(smp["aolp"]).astype(np.float32)
        expect += [np.cos(2 * phi), np.sin(2 * phi), _hwc(smp["dolp"]), smp["normals"]]
        for a in (0, 45, 90, 135):
            dn = smp[f"pol{a}"]
            expect.append((dn.astype(np.float64) / meta["files"][f"pol{a}"]["exposure_scale"]).astype(np.float32))
        expect.append(smp["stokes"][..., : 3 * c])  # S0, S1, S2
        want = torch.from_numpy(np.concatenate(expect, -1).transpose(2, 0, 1).copy())
        assert item["image"].dtype == torch.float32 and item["image"].shape == want.shape == (ds.n_channels, 48, 64)
        assert torch.equal(item["image"], want), item["id"]
        # the 16-bit polarizer DNs are recoverable exactly
        pol0 = item["image"][15:18].numpy().transpose(1, 2, 0)
        assert np.array_equal(np.rint(pol0 * meta["files"]["pol0"]["exposure_scale"]).astype(np.uint16), smp["pol0"])
        # AoLP decodes back (mod pi) from its (cos 2phi, sin 2phi) channels
        dec = 0.5 * np.arctan2(item["image"][6:9].numpy(), item["image"][3:6].numpy()).transpose(1, 2, 0)
        diff = np.angle(np.exp(2j * (dec - phi)))
        assert np.abs(diff).max() < 1e-5
        if int(item["id"]) in ANOMALOUS:
            n_anom += 1
            inst = smp["anomaly_mask"]
            assert item["label"] == 1
            assert torch.equal(item["instance_mask"], torch.from_numpy(inst.astype(np.int64)))
            assert torch.equal(item["mask"][0], torch.from_numpy((inst > 0).astype(np.float32)))
        else:
            assert item["label"] == 0 and item["mask"].sum() == 0 and item["instance_mask"].sum() == 0
        assert item["mask"].shape == (1, 48, 64) and item["instance_mask"].dtype == torch.long
    assert n_anom == len(ANOMALOUS)


def test_normalisation_from_manifest(data):
    _, out = data
    raw = PolarDataset(out, "train", ["intensity", "dolp"], normalise=False)
    ds = PolarDataset(out, "train", ["intensity", "dolp"])
    scale = ds.info["intensity"]["scale"]
    a, b = raw[0]["image"], ds[0]["image"]
    assert torch.equal(b[:3], a[:3] / scale) and torch.equal(b[3:], a[3:])
    assert ds.channels("intensity") == 3 and ds.channels("dolp") == 3
    other = PolarDataset(out, "train", ["intensity"], normalisation={"intensity": {"scale": 2.0}})
    assert torch.equal(other[0]["image"], a[:3] / 2.0)


def test_resize_and_crop_consistent(data):
    _, out = data
    ds = PolarDataset(out, "all", ["dolp", "aolp"], size=(24, 32), crop=(16, 24))
    full = PolarDataset(out, "all", ["dolp", "aolp"], normalise=False)
    i = next(k for k, s in enumerate(ds.samples) if s["id"] == "000003")
    item, ref = ds[i], full[i]
    assert item["image"].shape == (9, 16, 24) and item["mask"].shape == (1, 16, 24)
    assert item["instance_mask"].shape == (16, 24)
    # masks: nearest resize of the native mask (2x down = every other pixel centre), then the same crop
    nat = ref["instance_mask"]
    want = torch.nn.functional.interpolate(nat[None, None].double(), size=(24, 32), mode="nearest-exact")[0, 0]
    assert torch.equal(item["instance_mask"], want[4:20, 4:28].long())
    assert torch.equal(item["mask"][0], (item["instance_mask"] > 0).float())
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    # images: the same geometry (antialiased bilinear) as the masks
    img = torch.nn.functional.interpolate(ref["image"][None], size=(24, 32), mode="bilinear", align_corners=False,
                                          antialias=True)[0]
    assert torch.allclose(item["image"], img[:, 4:20, 4:28])


def test_dataloader_workers_do_not_reopen_manifest(data, tmp_path):
    import shutil

    _, out = data
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    ds = PolarDataset(copy, ("val", "test"), ["intensity", "aolp"], size=32)
    (copy / "manifest.json").unlink()  # items must not need it
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    ids, labels = [], []
    for batch in loader:
        assert batch["image"].shape[1:] == (9, 32, 32) and batch["mask"].shape[1:] == (1, 32, 32)
        ids += batch["id"]
        labels += batch["label"].tolist()
    assert sorted(ids) == sorted(s["id"] for s in ds.samples) and sum(labels) == len(ANOMALOUS)


def test_loader_errors(data, tmp_path):
    _, out = data
    with pytest.raises(DatasetError, match="unknown modality 'depth'"):
        PolarDataset(out, "train", ["intensity", "depth"])
    with pytest.raises(DatasetError, match="unknown split"):
        PolarDataset(out, "training", ["intensity"])
    with pytest.raises(DatasetError, match="no dataset manifest"):
        PolarDataset(tmp_path, "train", ["intensity"])
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(out, copy)
    ds = PolarDataset(copy, "train", ["dolp"])
    (copy / ds.samples[0]["files"]["dolp"]).unlink()
    with pytest.raises(DatasetError, match="dolp.tiff: missing"):
        ds[0]
