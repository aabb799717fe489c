"""SimpleNet / ensemble model files (polar_detect.models.simplenet.store): exact round trip,
the detector schema validated before anything is built, run identity for resume."""
import copy

import pytest
import torch

from polar_detect.models.simplenet import store


def test_save_load_round_trip_is_exact(tiny, tmp_path):
    _, model_dir = tiny
    model, meta = store.load_model(model_dir)
    header = {k: v for k, v in meta.items() if k not in ("format", "detector", "meta")}
    path = store.save_model(tmp_path / store.MODEL_FILE, model, meta["detector"]["kind"], header, meta["meta"])
    again, meta2 = store.load_model(tmp_path)
    assert meta2 == meta
    a, b = model.stored_state(), again.stored_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert all(torch.equal(u, v) for u, v in zip(model(x), again(x)))
    assert path.name == store.MODEL_FILE


@pytest.mark.parametrize("key, value, expect", [
    ("kind", "patchcore", "detector.kind"),
    ("head.dim", 7, "detector.head"),
    ("head.noise_std", -0.5, "detector.head.noise_std"),
    ("head.margin", float("nan"), "detector.head.margin"),
    ("transform.out_dim", 10 ** 6, "detector.transform"),
    ("blur_sigma", -1, "detector.blur_sigma"),
    ("sources", [], "detector.sources"),
])
def test_bad_detector_config_is_refused(tiny, key, value, expect):
    _, model_dir = tiny
    _, meta = store.load_model(model_dir)
    cfg = copy.deepcopy(meta["detector"])
    store.check_detector(cfg, "m")                              # the real one passes
    *parents, leaf = key.split(".")
    d = cfg
    for p in parents:
        d = d[p]
    d[leaf] = value
    with pytest.raises(store.ModelFileError, match=expect.replace(".", r"\.")):
        store.check_detector(cfg, "m")


def test_inspect_run(tiny, tmp_path):
    _, model_dir = tiny
    meta = store.read_meta(model_dir / store.MODEL_FILE, store.MODEL_FORMAT)
    record, data_digest = meta["run"], meta["dataset_digest"]
    assert store.inspect_run(model_dir, record, data_digest)[0] == "done"
    assert store.inspect_run(tmp_path, record, data_digest) == ("fresh", None)
    other = {**record, "train_config": {**record["train_config"], "noise_std": 0.9}}
    with pytest.raises(store.StaleStateError, match="noise_std"):
        store.inspect_run(model_dir, other, data_digest)
    with pytest.raises(store.StaleStateError, match="dataset content"):
        store.inspect_run(model_dir, record, "0" * 64)
    assert store.inspect_run(model_dir, other, data_digest, restart=True) == ("fresh", None)
