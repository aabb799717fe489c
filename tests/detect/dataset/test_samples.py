"""The one sample reader of evaluation (polar_detect.dataset.samples): masks, instances and
LOCO regions of a manifest entry, read back from the files of a hand-made dataset."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from polar_detect.dataset.errors import InputError
from polar_detect.dataset.samples import defects_config, load_samples

from tests.detect.evaluation.handmade import H, LOCO_CONFIG, W, make_run


@pytest.fixture
def loco_run(tmp_path):
    return make_run(tmp_path, loco=True)


def _edit(data, fn):
    m = json.loads((data / "manifest.json").read_text())
    fn(m)
    (data / "manifest.json").write_text(json.dumps(m))


def test_masks_instances_and_regions_from_the_files(loco_run):
    data, _, _, entries, _ = loco_run
    man, mpath, samples = load_samples(data)
    assert mpath == data / "manifest.json" and list(samples) == [e["id"] for e in entries]
    e = next(x for x in entries if x["classes"] == ["dent", "water_stain"])
    s = samples[e["id"]]
    inst = cv2.imread(str(data / e["instance_mask"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(s.mask((H, W)), inst > 0)
    im, listed = s.instances((H, W), s.mask((H, W)))
    assert np.array_equal(im, inst) and [(i["id"], i["class"], i["kind"]) for i in listed] == [
        (1, "dent", "defect"), (2, "water_stain", "impurity")]
    assert s.has_regions()
    regs, thr, rel = s.regions((H, W), s.mask((H, W)))
    assert regs.shape == (2, H, W) and np.array_equal(regs[1], inst == 2)
    assert thr == [LOCO_CONFIG["dent"]["saturation_threshold"], LOCO_CONFIG["water_stain"]["saturation_threshold"]]
    assert rel == [False, True]
    normal = samples[next(x["id"] for x in entries if x["split"] == "test" and not x["label"])]
    assert not normal.mask((H, W)).any() and normal.ignore((H, W)) is None and normal.object_mask((H, W)) is None
    assert normal.instances((H, W), normal.mask((H, W))) == (None, [])
    assert [n for n, _ in normal.modality_images()] == ["intensity", "dolp"]


def test_components_stand_in_for_missing_instances_and_regions(tmp_path):
    data, _, _, entries, _ = make_run(tmp_path)                  # no LOCO regions
    sid = next(x["id"] for x in entries if x["classes"] == ["scratch"])
    _edit(data, lambda m: next(x for x in m["samples"] if x["id"] == sid).update(instance_mask=None, instances=[]))
    _, _, samples = load_samples(data)
    s = samples[sid]
    mask = s.mask((H, W))
    im, listed = s.instances((H, W), mask)
    assert listed == [{"id": 1, "class": "scratch", "kind": "defect"}] and np.array_equal(im > 0, mask)
    regs, thr, rel = s.regions((H, W), mask)                    # components, unsaturated
    assert regs.shape[0] == 1 and thr == [np.inf] and rel == [False]


def test_anomalous_sample_without_mask_and_wrong_shapes(tmp_path):
    data, _, _, entries, _ = make_run(tmp_path)
    sid = next(x["id"] for x in entries if x["label"] and x["split"] == "test")
    _, _, samples = load_samples(data)
    with pytest.raises(InputError, match=r"mask shape \(32, 40\) differs from the anomaly map \(16, 20\)"):
        samples[sid].mask((16, 20))
    _edit(data, lambda m: next(x for x in m["samples"] if x["id"] == sid).update(mask=None))
    _, _, samples = load_samples(data)
    assert samples[sid].mask((H, W)) is None                    # no pixel ground truth, not "all normal"


def test_defects_config_list_or_loco_object():
    cfg = {"defects_config": {"1": {"defect_name": "a", "saturation_threshold": 0.5},
                              "2": {"saturation_threshold": 9}}}
    assert defects_config(cfg) == {"a": {"defect_name": "a", "saturation_threshold": 0.5},
                                   "2": {"saturation_threshold": 9, "defect_name": "2"}}
    assert defects_config({"defects_config": [{"defect_name": "b"}, "junk"]}) == {"b": {"defect_name": "b"}}
    assert defects_config({}) == {}


def test_load_samples_names_the_manifest(tmp_path):
    with pytest.raises(InputError, match="manifest.json"):
        load_samples(tmp_path)
