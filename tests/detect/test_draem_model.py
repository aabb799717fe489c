"""DRÆM training, resume, polarimetric averaging and ONNX export on a synthetic set."""
import numpy as np
import pytest
import torch

from polar_detect.draem.infer import predict, predict_dataset
from polar_detect.draem.model import DRAEM, DRAEMScorer
from polar_detect.draem.polar import PolarDRAEM, parse_inputs, train_polar
from polar_detect.draem.synthetic import SyntheticDataset
from polar_detect.draem.train import CHECKPOINT, FINAL, load_model, preset, train

#: Image AUROC the briefly trained tiny model must reach (chance = 0.5).
MIN_AUROC = 0.8


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the CI box has 2 shared cores and oversubscribed OpenMP
    threads slow training by >10x; also keeps float reductions in a fixed order."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def auroc(labels, scores) -> float:
    """Mann-Whitney rank formula (ties averaged)."""
    labels, scores = np.asarray(labels), np.asarray(scores, float)
    order = scores.argsort()
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for v in np.unique(scores):                     # average ranks of ties
        ranks[scores == v] = ranks[scores == v].mean()
    pos, neg = labels == 1, labels == 0
    return (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * neg.sum())


def test_auroc_helper():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5


@pytest.mark.parametrize("shape", [(64, 64), (40, 72)])
def test_shapes(shape):
    m = DRAEM(3, 8, 4).eval()
    rec, logits = m(torch.rand(2, 3, 64, 64))
    assert rec.shape == (2, 3, 64, 64) and logits.shape == (2, 2, 64, 64)
    maps, scores = predict(m, torch.rand(2, 3, *shape))
    assert maps.shape == (2, *shape) and scores.shape == (2,)
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_tiny_model_separates_obvious_anomalies(tmp_path, capsys):
    train_set = SyntheticDataset(32, 64, 3, anomalous=0.0, seed=1)
    test_set = SyntheticDataset(32, 64, 3, anomalous=0.5, seed=2)
    cfg = preset("small", recon_width=8, disc_width=8, epochs=30, batch_size=8, lr=1e-3)
    model = train(train_set, tmp_path, cfg, progress=False)
    res = list(predict_dataset(model, test_set, batch_size=16))
    labels = [test_set[i]["label"] for i in range(len(test_set))]
    a = auroc(labels, [s for _, _, s in res])
    with capsys.disabled():
        print(f"\n[draem] tiny model (8/8, 120 steps) image AUROC = {a:.3f} "
              f"(chance 0.5, required >= {MIN_AUROC})")
    assert a >= MIN_AUROC


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_equals_uninterrupted(tmp_path):
    data = SyntheticDataset(8, 32, 3, seed=5)
    cfg = preset("small", recon_width=4, disc_width=4, epochs=3, batch_size=4, lr=1e-3,
                 milestones=(0.34, 0.67))                    # lr decays at epochs 1 and 2
    full = _state(train(data, tmp_path / "a", cfg, progress=False))
    train(data, tmp_path / "b", cfg, progress=False, stop_after_epoch=1)
    assert (tmp_path / "b" / CHECKPOINT).exists() and not (tmp_path / "b" / FINAL).exists()
    from polar_detect.draem import store
    assert store.read_meta(tmp_path / "b" / CHECKPOINT, store.CHECKPOINT_FORMAT)["epoch"] == 1
    resumed = _state(train(data, tmp_path / "b", cfg, progress=False))
    assert full.keys() == resumed.keys()
    diff = max(float((full[k].double() - resumed[k].double()).abs().max()) for k in full)
    assert diff <= 1e-6, diff
    # and an interrupted run that is NOT resumed differs (the test can fail)
    fresh = _state(train(data, tmp_path / "c", preset("small", recon_width=4, disc_width=4,
                                                      epochs=2, batch_size=4, lr=1e-3),
                         progress=False))
    assert max(float((full[k].double() - fresh[k].double()).abs().max())
               for k in full if full[k].is_floating_point()) > 1e-6
    m, meta = load_model(tmp_path / "a" / FINAL)
    assert meta["size"] == [32, 32] and len(meta["history"]) == 3


def test_polar_prediction_is_mean_of_inputs():
    torch.manual_seed(0)
    models = {"intensity": DRAEM(3, 4, 4).eval(), "aolp": DRAEM(2, 4, 4).eval(),
              "normals": DRAEM(3, 4, 4).eval()}
    for m in models.values():                       # make BN statistics non-trivial
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
    pol = PolarDRAEM(models, (32, 32))
    x = {"intensity": torch.rand(2, 3, 32, 32), "aolp": torch.rand(2, 2, 32, 32) * 2 - 1,
         "normals": torch.rand(2, 3, 32, 32)}
    maps, scores = pol.predict(x)
    each = [predict(m, x[k], (32, 32)) for k, m in models.items()]
    assert torch.allclose(maps, sum(e[0] for e in each) / 3, atol=1e-7)
    assert torch.allclose(scores, sum(e[1] for e in each) / 3, atol=1e-7)
    assert not torch.allclose(each[0][1], each[1][1])   # inputs really differ


def test_parse_inputs():
    # Polar-Ano's n is the learned normal (issue 18); ground truth is the explicit oracle
    assert parse_inputs("R+phi+rho+n") == ["intensity", "aolp", "dolp", "normals_learned"]
    assert parse_inputs("R+phi+rho+n_oracle") == ["intensity", "aolp", "dolp", "normals"]
    assert parse_inputs("intensity,aolp") == ["intensity", "aolp"]
    with pytest.raises(ValueError):
        parse_inputs("R+intensity")


def test_train_polar_roundtrip(tmp_path):
    sets = {"intensity": SyntheticDataset(4, 32, 3, seed=1),
            "dolp": SyntheticDataset(4, 32, 1, seed=2)}
    cfg = preset("small", recon_width=4, disc_width=4, epochs=1, batch_size=2)
    pol = train_polar(lambda k: sets[k], "R+rho", tmp_path, cfg, progress=False)
    loaded = PolarDRAEM.load(tmp_path)
    assert loaded.inputs == ["intensity", "dolp"] and loaded.size == (32, 32)
    x = {k: torch.stack([sets[k][i]["image"] for i in range(2)]) for k in sets}
    a, b = pol.predict(x), loaded.predict(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    from polar_detect.draem.export import export_onnx, verify
    torch.manual_seed(0)
    model = DRAEM(3, 4, 4).eval()
    path = export_onnx(model, tmp_path / "draem.onnx", (64, 64))
    x = torch.rand(3, 3, 64, 64)                                   # dynamic batch
    res = verify(path, model, x, atol=1e-4)
    assert res["checked"]
    if "max_abs_diff_map" not in res:
        pytest.skip("onnxruntime not installed: checker only")
    with torch.no_grad():
        m, s = DRAEMScorer(model)(x)
    assert res["max_abs_diff_map"] < 1e-4 and res["max_abs_diff_score"] < 1e-4
