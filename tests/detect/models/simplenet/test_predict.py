"""SimpleNet predictions (polar_detect.models.simplenet.predict): each map and score is the
detector's own output for that sample, in the contract format; channel mismatches are refused."""
import numpy as np
import pytest
import tifffile
import torch

from polar_detect.dataset.torch_dataset import PolarDataset
from polar_detect.models.simplenet import store
from polar_detect.models.simplenet.predict import PredictError, open_splits, predict_dir
from polar_detect.predictions import check_predictions

pytestmark = pytest.mark.usefixtures("one_thread")


def test_maps_and_scores_are_the_detectors_output(tiny, tmp_path):
    data, model_dir = tiny
    model, meta = store.load_model(model_dir)
    pred = predict_dir(model, meta, data, tmp_path / "p", ["test", "train"], progress=False)
    assert pred["split"] == "test" and pred["threshold"] is None and pred["modality"] == "intensity"
    entries = check_predictions(tmp_path / "p", data)
    assert len(entries) == 9 == len(pred["scores"])                   # 3 test + 6 train, every one checked
    ds = PolarDataset(data, "test", ["intensity"], normalise=False)
    for i in range(len(ds)):
        it = ds[i]
        with torch.no_grad():
            m, s = model(it["image"][None])
        got = tifffile.imread(tmp_path / "p" / pred["maps"][it["id"]])
        np.testing.assert_allclose(got, m[0].numpy(), rtol=0, atol=1e-5)        # batch of 8 vs 1: float rounding
        assert pred["scores"][it["id"]] == pytest.approx(float(s[0]), abs=1e-5)
        assert pred["scores"][it["id"]] == pytest.approx(float(got.max()), rel=1e-6)


def test_channel_mismatch_is_refused(tiny, tmp_path):
    data, _ = tiny
    with pytest.raises(PredictError, match="has 3 channels, the model was trained on 1"):
        open_splits(data, ["test"], "intensity", 1)
    _, sets = open_splits(data, ["test", "train"], "intensity", 3)
    assert {k: len(v) for k, v in sets.items()} == {"test": 3, "train": 6}
