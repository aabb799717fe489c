"""Example figures' selection and downsampling (polar_detect.evaluation.examples)."""
from __future__ import annotations

import numpy as np

from polar_detect.evaluation.examples import (EXAMPLE_SIDE, N_EXAMPLES_PER_CLASS, collect_example, downsample,
                                              finish_examples)


class _S:
    def __init__(self, sid, label, classes=(), instances=()):
        self.id, self.label = sid, label
        self.e = {"classes": list(classes), "instances": list(instances)}

    def modality_images(self):
        return [("dolp", np.full((8, 8), 0.5, np.float32))]


def test_downsample_averages_areas_and_keeps_masks_binary():
    a = np.kron(np.arange(4, dtype=np.float32).reshape(2, 2), np.ones((2 * EXAMPLE_SIDE // 2, 2 * EXAMPLE_SIDE // 2)))
    a[0, 0] += 4.0                                              # one bright pixel: averaged away, not kept
    d = downsample(a)
    assert d.shape == (EXAMPLE_SIDE, EXAMPLE_SIDE)
    assert d[0, 0] == 1.0 and d[-1, -1] == 3.0 and d[0, -1] == 1.0   # 2x2 areas averaged
    m = np.zeros((2 * EXAMPLE_SIDE, EXAMPLE_SIDE), bool)
    m[::2, ::2] = True
    dm = downsample(m)
    assert dm.dtype == bool and dm.shape == (EXAMPLE_SIDE, EXAMPLE_SIDE // 2)   # longer side -> EXAMPLE_SIDE
    many = np.random.default_rng(0).random((2 * EXAMPLE_SIDE, 2 * EXAMPLE_SIDE, 6)).astype(np.float32)
    dc = downsample(many)                                       # > 4 channels (AoLP cos/sin x RGB)
    assert dc.shape == (EXAMPLE_SIDE, EXAMPLE_SIDE, 6)
    assert np.allclose(dc[3, 5], many[6:8, 10:12].mean(axis=(0, 1)), atol=1e-6)
    small = np.ones((10, 20))
    assert downsample(small) is small                          # never upsampled


def test_collect_keeps_n_per_class_and_the_top_normal():
    ex = {}
    m = np.zeros((4, 4), bool)
    for k in range(N_EXAMPLES_PER_CLASS + 2):
        collect_example(ex, _S(f"d{k}", 1, ["dent"]), np.full((4, 4), float(k)), m, m)
    collect_example(ex, _S("both", 1, ["scratch", "dent"]), np.zeros((4, 4)), m, m)
    collect_example(ex, _S("inst", 1, instances=[{"class": "water_stain"}]), np.zeros((4, 4)), m, m)
    collect_example(ex, _S("none", 1), np.zeros((4, 4)), m, m)
    for sid, top in (("n0", 0.2), ("n1", 0.9), ("n2", 0.5)):
        collect_example(ex, _S(sid, 0), np.full((4, 4), top), m, m)
    assert [e["id"] for e in ex["dent"]] == [f"d{k}" for k in range(N_EXAMPLES_PER_CLASS)]   # first come
    assert [e["id"] for e in ex["scratch"]] == ["both"]          # a sample counts for each of its classes
    assert [e["id"] for e in ex["water_stain"]] == ["inst"]      # classes from instances when none listed
    assert [e["id"] for e in ex["anomalous"]] == ["none"]
    assert [(e["id"], e["max_score"]) for e in ex["good"]] == [("n1", 0.9)]   # the highest-scoring normal
    assert ex["good"][0]["modalities"][0][0] == "dolp"
    order = [e["class"] for e in finish_examples(ex)]
    assert order == ["anomalous"] + ["dent"] * N_EXAMPLES_PER_CLASS + ["scratch", "water_stain", "good"]
