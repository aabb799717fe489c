"""Sample i is a pure function of (scene config, seed, i).

The LLVM and scalar variants render bit-identically run to run here (box filter; each
pixel's samples are accumulated in a fixed order per thread block), so these tests demand
exact equality. If a backend ever accumulates in a nondeterministic order (e.g. CUDA
atomics with a wide filter), the tolerance belongs here, stated, not silently in the code.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from polar_render.config import load_scene


from .conftest import render_dir, samples, scene_variant

KW = dict(scene="usb_brick", n=4, res=(96, 72), spp=2, seed=3, progress=False)
MODALITIES = ("stokes", "pol0", "pol45", "pol90", "pol135", "intensity", "dolp", "aolp",
              "normals", "depth", "object_mask", "part_mask", "anomaly_mask")


def _same(a: dict, b: dict) -> None:
    for k in MODALITIES:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert a["meta"]["sampled"] == b["meta"]["sampled"]


def test_same_seed_same_output_and_alone_equals_batch(tmp_path):
    batch = samples(render_dir(tmp_path / "batch", **KW))
    again = samples(render_dir(tmp_path / "again", **KW))
    for a, b in zip(batch, again):
        _same(a, b)
    # sample 2 rendered alone (fresh run, no earlier samples in the process's scene)
    alone = samples(render_dir(tmp_path / "alone", indices=[2], **KW))
    assert len(alone) == 1 and alone[0]["meta"]["index"] == 2
    _same(alone[0], batch[2])
    # reversed order in one run
    rev = samples(render_dir(tmp_path / "rev", indices=[3, 1], **KW))
    _same(rev[0], batch[1])
    _same(rev[1], batch[3])


def test_other_seed_differs_and_every_value_is_recorded(tmp_path):
    a = samples(render_dir(tmp_path / "a", **KW))[0]
    b = samples(render_dir(tmp_path / "b", **{**KW, "seed": 4}))[0]
    assert not np.array_equal(a["stokes"], b["stokes"])
    sampled = a["meta"]["sampled"]
    cfg = load_scene("usb_brick")
    part_names = [p.name for p in cfg.objects[1].parts]
    assert [p["part"] for p in sampled["parts"]] == part_names
    top = next(p for p in sampled["parts"] if p["part"] == "brick_top")
    assert 0.001 <= top["alpha"] <= 0.011 and all(0 <= c <= 1 for c in top["color"])
    bottom = next(p for p in sampled["parts"] if p["part"] == "brick_bottom")
    assert 0.1 <= bottom["alpha"] <= 0.7
    assert 2.25 <= sampled["spot"]["intensity"] <= 3.375
    assert 1.0 <= sampled["spot"]["radius_m"] <= 1.5
    dist = np.linalg.norm(np.subtract(sampled["spot"]["position_m"], sampled["spot"]["target_m"]))
    assert np.isclose(dist, sampled["spot"]["radius_m"])
    meta = a["meta"]
    assert meta["variant"].endswith("polarized") and meta["versions"]["mitsuba"]
    assert set(meta["files"]) == set(MODALITIES)
    json.dumps(meta)  # everything recorded is plain JSON


_RECOMPILE_PROBE = r"""
import json, sys
import drjit as dr
from polar_render import pipeline
from polar_render.pipeline import RenderRequest, run


builds, per_sample = [], []


class CountingScene(pipeline.MitsubaScene):
    def __init__(self, *a, **k):
        builds.append(1)
        super().__init__(*a, **k)


real_render = pipeline.render_images


def recording_render(*a, **k):
    dr.kernel_history()  # drain
    out = real_render(*a, **k)
    per_sample.append(sorted({e["hash"] for e in dr.kernel_history() if e.get("type") == dr.KernelType.JIT}))
    return out


pipeline.MitsubaScene, pipeline.render_images = CountingScene, recording_render
dr.set_flag(dr.JitFlag.KernelHistory, True)
summary = run(RenderRequest(scene=sys.argv[1], out=sys.argv[2], n=5, res=(96, 72), spp=2, seed=9, progress=False))
print(json.dumps({"rendered": summary.rendered, "builds": len(builds), "per_sample": per_sample}))
"""


@pytest.mark.parametrize("anomalies", ["off", "all_classes"])
def test_no_recompilation_after_first_sample(tmp_path, anomalies):
    """Per-sample updates go through mi.traverse: the scene is built once per run and no
    sample after the first launches a kernel the first did not. Kernels are compared by
    hash: ``cache_hit`` alone is blind, because Dr.Jit's on-disk cache marks a kernel
    re-specialised on a literal (e.g. a texture's ``to_uv``) as a hit when an earlier run
    compiled it. Every sample must take the same code path for this to be meaningful, so
    anomalies are either off or every class appears in every sample.

    Runs in a fresh process, as ``make render`` does: in a process that already built and
    dropped other scenes (this test session), Dr.Jit can release their objects after the
    next run's first sample, which changes a registry bound baked into the render kernel
    and compiles it once more (a one-time cost, not a per-sample one)."""
    import json
    import subprocess
    import sys

    from polar_render.config import load_scene

    cfg = load_scene("usb_brick")
    # every class in every sample (a floor of 1 visible px: at 96x72 most anomalies are tiny)
    spec = {} if anomalies == "off" else {**cfg.anomalies, "probability": 1.0, "count": len(cfg.anomalies["classes"]),
                                          "min_visible_px": 1, "max_view_angle_deg": 89.0}
    scene = scene_variant(tmp_path, anomalies=spec)
    out = subprocess.run([sys.executable, "-c", _RECOMPILE_PROBE, str(scene), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    # one scene (plus its stain-capable twin when stains occur), never rebuilt per sample
    assert res["rendered"] == 5 and res["builds"] == (1 if anomalies == "off" else 2)
    assert res["per_sample"][0], "no kernels recorded"
    # samples whose stain was dropped (not visible) take the stain-free scene's code path: a
    # sample may launch new kernels only as the first of its path, never later
    paths = [any(e["class"] == "water_stain" for e in json.loads(p.read_text())["anomaly_events"])
             for p in sorted((tmp_path / "run" / "samples").glob("*/meta.json"))]
    seen, new = set(), []
    for k, (h, path) in enumerate(zip(res["per_sample"], paths)):
        if path in paths[:k]:
            new.append(sorted(set(h) - seen))
        seen |= set(h)
    assert not any(new), f"kernels not seen in an earlier sample of the same code path: {new}"
