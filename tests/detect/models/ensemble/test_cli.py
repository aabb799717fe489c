"""Feature-level ensemble end to end at toy size.

* One source equals the single model: ``ensemble train --source lite0:s8+s16`` and
  ``simplenet train`` (same options, same seed; PCA keeping all channels, the default, and
  a reduced PCA) give bitwise identical maps and scores -- the ensemble's source handling,
  resizing, balancing (one source: one global factor), PCA and training glue reduce exactly
  to SimpleNet's. A different seed gives different maps (the equality is not vacuous).
* Heterogeneous sources (Lite0/1 backbones, a trained DRÆM's encoder, a PatchCore's
  distance map) train, predict and export to ONNX (equal to torch).

The feature sources, the output-level tools (merge, average, timed) and loco-layout have their
own files (test_sources.py, test_outputs.py, test_loco_layout.py).
"""
import numpy as np
import pytest
import torch

from polar_detect.models.ensemble.__main__ import main
from polar_detect.models.simplenet.__main__ import main as simplenet_main

from tests.detect.simplenet_tiny import FAST, one_thread, pred_maps


@pytest.mark.parametrize("pca", ["all", "24"])
def test_one_source_ensemble_equals_simplenet(tiny, tmp_path, pca):
    data, _, _ = tiny
    opts = [*FAST, "--pca-dim", pca]

    def run():
        assert simplenet_main(["train", "--data", str(data), "--out", str(tmp_path / "sn"), *opts]) == 0
        assert main(["train", "--data", str(data), "--out", str(tmp_path / "ens"), "--source", "lite0:s8+s16",
                     *opts]) == 0
        assert main(["train", "--data", str(data), "--out", str(tmp_path / "ens_seed"), "--source", "lite0",
                     *opts, "--seed", "1"]) == 0
        for name in ("sn", "ens", "ens_seed"):
            assert main(["predict", "--model", str(tmp_path / name), "--data", str(data), "--split", "test,val",
                         "--out", str(tmp_path / f"{name}_pred"), "--quiet"]) == 0
    one_thread(run)
    s1, m1 = pred_maps(tmp_path / "sn_pred")
    s2, m2 = pred_maps(tmp_path / "ens_pred")
    s3, m3 = pred_maps(tmp_path / "ens_seed_pred")
    assert s1 == s2
    assert all(np.array_equal(m1[k], m2[k]) for k in m1)
    assert any(not np.allclose(m1[k], m3[k]) for k in m1)


def test_heterogeneous_sources_train_predict_export(tiny, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from polar_detect.models.simplenet import store
    from polar_detect.models.simplenet.export import verify
    data, draem, pc = tiny
    srcs = ["--source", "lite0:s8", "--source", "lite1:s8+s16", "--source", f"draem:{draem}@s4",
            "--source", f"patchcore:{pc}"]
    assert one_thread(lambda: main(["train", "--data", str(data), "--out", str(tmp_path / "ens"), *srcs, *FAST,
                                    "--pca-dim", "16"])) == 0
    assert "4 source(s), 257 -> 16 channels" in capsys.readouterr().out     # 40 + 152 + 64 (DRÆM s4: 4 x 16) + 1
    net, meta = store.load_model(tmp_path / "ens")
    assert [s["kind"] for s in meta["detector"]["sources"]] == ["backbone", "backbone", "draem", "patchcore"]
    assert meta["detector"]["transform"]["source_channels"] == [40, 152, 64, 1]
    assert main(["predict", "--model", str(tmp_path / "ens"), "--data", str(data), "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    assert main(["export", "--model", str(tmp_path / "ens"), "--out", str(tmp_path / "e.onnx"),
                 "--size", "56x40"]) == 0
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    r = verify(tmp_path / "e.onnx", net, x)
    tol = 2e-5 * max(1.0, r["map_range"])          # float32 rounding at the maps' magnitude
    assert r["max_abs_diff_map"] <= tol and r["max_abs_diff_score"] <= tol, r
