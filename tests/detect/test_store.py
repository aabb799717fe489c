"""polar_detect.store: the one model/checkpoint file store of every detector."""
import json
import pickle

import pytest
import torch

from polar_detect import store
from polar_detect.store import ModelFileError, StaleStateError

FMT = "polar_detect.test.model/1"


def test_round_trip_keeps_tensors_and_metadata_and_leaves_no_temporary(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b.c": torch.tensor([1, 2], dtype=torch.int64)}
    meta = {"format": FMT, "nested": {"x": [1, 2]}, "s": "é"}
    p = store.write(tmp_path / "sub" / "m.safetensors", tensors, meta)
    got, got_meta = store.read(p, FMT, "test")
    assert set(got) == set(tensors) and all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert got["b.c"].dtype == torch.int64 and got_meta == meta
    assert store.read_meta(p, FMT, "test") == meta
    assert [q.name for q in p.parent.iterdir()] == ["m.safetensors"]


def test_refusals_name_the_file_and_what_is_wrong(tmp_path):
    p = store.write(tmp_path / "m.safetensors", {"a": torch.zeros(1)}, {"format": "other/1"})
    with pytest.raises(ModelFileError, match=r"m\.safetensors: format 'other/1', expected 'polar_detect\.test\.model/1'"):
        store.read(p, FMT, "test")
    with pytest.raises(ModelFileError, match=r"none\.safetensors: missing \(no such file\)"):
        store.read_meta(tmp_path / "none.safetensors", FMT, "test")
    (tmp_path / "j.safetensors").write_text("{}")
    with pytest.raises(ModelFileError, match=r"j\.safetensors: not a polar_detect Thing safetensors file"):
        store.read(tmp_path / "j.safetensors", FMT, "Thing")


class _Trap:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_is_refused_without_running_it(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(pickle.dumps({"meta": _Trap(tmp_path / "PWNED")}))
    with pytest.raises(ModelFileError, match="nothing is ever unpickled"):
        store.read(p, FMT, "test")
    assert not (tmp_path / "PWNED").exists()


def test_non_json_metadata_is_refused_unless_allowed(tmp_path):
    with pytest.raises(ValueError):
        store.write(tmp_path / "m.safetensors", {}, {"format": FMT, "loss": float("nan")})
    assert not (tmp_path / "m.safetensors").exists()
    store.write(tmp_path / "m.safetensors", {}, {"format": FMT, "loss": float("nan")}, allow_nan=True)
    assert store.read_meta(tmp_path / "m.safetensors", FMT, "test")["loss"] != 0   # NaN read back


def test_check_state_and_finite_name_the_offending_tensor():
    own = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
    with pytest.raises(ModelFileError, match=r"missing \['b'\], unexpected \['x'\]"):
        store.check_state(own, {"w": torch.zeros(2, 2), "x": torch.zeros(1)}, "f")
    with pytest.raises(ModelFileError, match=r"tensor 'w' is torch.float32 \(3, 2\), the head needs"):
        store.check_state(own, {"w": torch.zeros(3, 2), "b": torch.zeros(2)}, "f", what="head")
    with pytest.raises(ModelFileError, match="tensor 'b' holds non-finite"):
        store.check_finite({"w": torch.zeros(1), "b": torch.tensor([float("inf")])}, "f")


def _trained_adam():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.8, 0.9))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    return net, opt


@pytest.mark.parametrize("prefix", ["optimizer.", "optim."])
def test_optimizer_state_survives_a_file_exactly(tmp_path, prefix):
    net, opt = _trained_adam()
    t, part = store.flatten_optimizer(opt.state_dict(), prefix)
    store.write(tmp_path / "c.safetensors", t, {"format": FMT, "optimizer": part})
    tensors, meta = store.read(tmp_path / "c.safetensors", FMT, "test")
    fresh = torch.optim.Adam(net.parameters(), lr=0.5)
    fresh.load_state_dict(store.unflatten_optimizer(tensors, meta["optimizer"], fresh.state_dict(), "c", prefix))
    a, b = opt.state_dict(), fresh.state_dict()
    assert b["param_groups"] == a["param_groups"] and isinstance(b["param_groups"][0]["betas"], tuple)
    for pid, st in a["state"].items():
        assert all(torch.equal(st[k], b["state"][pid][k]) for k in st)


def test_optimizer_scalars_are_read_in_both_layouts():
    _, opt = _trained_adam()
    sd = opt.state_dict()
    groups = json.loads(json.dumps(sd["param_groups"]))
    for scalars in ({"0": {"step": 3}}, {"0.step": 3}):
        out = store.unflatten_optimizer({}, {"param_groups": groups, "scalars": scalars}, sd, "c")
        assert out["state"] == {0: {"step": 3}}
    with pytest.raises(ModelFileError, match="param_groups"):
        store.unflatten_optimizer({}, {"param_groups": []}, sd, "c")


def test_differences_name_keys_and_dataset():
    meta = {"config_digest": "old", "run": {"a": {"b": 1}, "c": 2}, "dataset_digest": "0" * 64}
    diffs = store.run_differences(meta, {"a": {"b": 5}, "c": 2}, "new", "f" * 64)
    assert diffs == ["a.b 1 -> 5", f"dataset content {'0' * 12} -> {'f' * 12}"]
    many = store.config_differences({f"k{i}": i for i in range(9)}, {})
    assert len(many) == store.MAX_NAMED_DIFFERENCES + 1 and many[-1] == "3 more"
    assert store.run_differences({}, {}, "d", "x", unrecorded=" (legacy)") == [
        "config: not recorded (legacy)", "dataset: not recorded (legacy)"]


def test_inspect_run_prefers_the_matching_file_and_refuses_other_runs(tmp_path):
    model, ckpt = tmp_path / "model.safetensors", tmp_path / "checkpoint.safetensors"
    files = ((model, "m/1", "done"), (ckpt, "c/1", "resume"))
    read = lambda p, fmt: store.read_meta(p, fmt, "test")  # noqa: E731
    same = lambda want: (lambda meta: [] if meta["run"] == want else [f"run {meta['run']} -> {want}"])  # noqa: E731
    assert store.inspect_run(files, read, same(1)) == ("fresh", None)
    store.write(ckpt, {}, {"format": "c/1", "run": 1})
    assert store.inspect_run(files, read, same(1))[0] == "resume"
    store.write(model, {}, {"format": "m/1", "run": 2})
    assert store.inspect_run(files, read, same(2)) == ("done", {"format": "m/1", "run": 2})
    assert store.inspect_run(files, read, same(1))[0] == "resume"        # the stale model is skipped
    with pytest.raises(StaleStateError, match=r"model\.safetensors \(and checkpoint\.safetensors\): made by a "
                                              r"different training run \(run 2 -> 3\).*Pass --again"):
        store.inspect_run(files, read, same(3), restart="--again")
