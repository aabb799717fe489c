"""SfP prediction (polar_detect.models.sfp.predict): a copy of the dataset with a normals_learned modality, which the detectors treat like normals."""
import pytest
import torch

from polar_detect.models.sfp.train import train

from tests.detect.models.sfp.tiny import tiny_preset


pytestmark = pytest.mark.usefixtures("one_thread")


def test_predict_adds_a_modality_and_leaves_the_source_alone(small_data, tmp_path):
    from polar_detect.dataset.torch_dataset import PolarDataset
    from polar_detect.dataset.manifest import verify
    from polar_detect.models.sfp.predict import predict_dataset

    train(small_data, tmp_path / "m", tiny_preset(epochs=1), progress=False)
    before = (small_data / "manifest.json").read_bytes()
    manifest, warnings = predict_dataset(tmp_path / "m", small_data, tmp_path / "pred", progress=False)
    assert warnings == [] and (small_data / "manifest.json").read_bytes() == before
    assert verify(tmp_path / "pred") == []
    assert manifest["sfp_predictions"]["modality"] == "normals_learned"
    ds = PolarDataset(tmp_path / "pred", "all", ["normals", "normals_learned"])
    item = ds[0]["image"]
    assert item.shape[0] == 6 and torch.allclose(item[3:].norm(dim=0), torch.ones(16, 24), atol=1e-5)
    assert len(ds) == 8 and not (small_data / "samples" / ds.samples[0]["id"] / "normals_learned.tiff").exists()
    src = small_data / ds.samples[0]["files"]["dolp"]
    assert src.stat().st_nlink == 1                                     # copied by default
    predict_dataset(tmp_path / "m", small_data, tmp_path / "linked", progress=False, link=True)
    assert src.stat().st_nlink == 2 and verify(tmp_path / "linked") == []


def test_detectors_treat_learned_normals_like_normals():
    """The normals_learned modality gets the ground truth normals' value range (DRÆM textures,
    SSIM range, augmentation) and PatchCore input encoding."""
    from polar_detect import modalities
    from polar_detect.models.draem.polar import modality_config, parse_inputs
    from polar_detect.models.draem.train import TrainConfig
    from polar_detect.models.patchcore.encoding import InputEncoding

    assert modalities.nominal_range("normals_learned") == modalities.nominal_range("normals") == (-1.0, 1.0)
    assert "normals_learned" in modalities.SIGNED
    cfg = TrainConfig()
    assert modality_config(cfg, "normals_learned") == modality_config(cfg, "normals") != cfg
    assert parse_inputs("R+phi+rho+normals_learned")[-1] == "normals_learned"
    assert InputEncoding("normals_learned").kind == InputEncoding("normals").kind == "affine"
