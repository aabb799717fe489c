"""Output-level tools of the ensemble (polar_detect.models.ensemble.outputs): merge, the z-scored average on real predictions, timed runs."""
import json
import sys

import numpy as np
import pytest

from polar_detect.models.ensemble.__main__ import main
from polar_detect.models.simplenet.__main__ import main as simplenet_main

from tests.detect.simplenet_tiny import FAST, one_thread, pred_maps



def test_output_level_average_and_merge(tiny, tmp_path, capsys):
    from polar_detect.models.patchcore.__main__ import main as patchcore_main
    data, _, pc = tiny

    def run():
        from tests.detect.simplenet_tiny import train_simplenet
        train_simplenet(data, tmp_path / "sn")
    one_thread(run)
    assert simplenet_main(["predict", "--model", str(tmp_path / "sn"), "--data", str(data), "--split", "test,val",
                           "--out", str(tmp_path / "p_sn"), "--quiet"]) == 0
    for split in ("test", "val"):
        assert patchcore_main(["predict", "--model", str(pc), "--data", str(data), "--split", split,
                               "--out", str(tmp_path / f"p_pc_{split}"), "--quiet"]) == 0
    assert main(["merge", "--pred", str(tmp_path / "p_pc_test"), "--pred", str(tmp_path / "p_pc_val"),
                 "--out", str(tmp_path / "p_pc")]) == 0
    merged = json.loads((tmp_path / "p_pc" / "predictions.json").read_text())
    assert merged["split"] == "test" and len(merged["scores"]) == 4
    assert main(["average", "--pred", str(tmp_path / "p_sn"), "--pred", str(tmp_path / "p_pc"),
                 "--out", str(tmp_path / "avg"), "--score", "mean", "--quiet"]) == 0
    avg = json.loads((tmp_path / "avg" / "predictions.json").read_text())
    st = [i["stats"] for i in avg["average"]["inputs"]]
    _, sn_maps = pred_maps(tmp_path / "p_sn")
    _, pc_maps = pred_maps(tmp_path / "p_pc")
    _, a_maps = pred_maps(tmp_path / "avg")
    sid = "000009"   # the anomalous test sample: map = mean of the two z-scored maps
    want = ((sn_maps[sid] - st[0]["mean"]) / st[0]["std"] + (pc_maps[sid] - st[1]["mean"]) / st[1]["std"]) / 2
    np.testing.assert_allclose(a_maps[sid], want, rtol=1e-5, atol=1e-5)


def test_timed_logs_seconds_and_throughput(tiny, tmp_path, capsys):
    data, _, _ = tiny
    log = tmp_path / "timing.json"
    pred = tmp_path / "p"
    model = tmp_path / "sn"
    one_thread(lambda: simplenet_main(["train", "--data", str(data), "--out", str(model), *FAST]))
    assert main(["timed", "--log", str(log), "--name", "sn_predict", "--pred", str(pred), "--",
                 "python", "-m", "polar_detect.models.simplenet", "predict", "--model", str(model), "--data", str(data),
                 "--out", str(pred), "--quiet"]) == 0
    rec = json.loads(log.read_text())["sn_predict"]
    assert rec["images"] == 2 and rec["seconds"] > 0 and rec["images_per_s"] == pytest.approx(2 / rec["seconds"], rel=1e-2)
    assert main(["timed", "--log", str(log), "--name", "fails", "--", sys.executable, "-c",
                 "import sys; sys.exit(3)"]) == 3
    assert "fails" not in json.loads(log.read_text())


def test_split_commands_and_timed_stop_at_the_first_failure(tmp_path):
    from polar_detect.models.ensemble.outputs import split_commands, timed
    assert split_commands(["a", "1", "--", "--", "b", "--"]) == [["a", "1"], ["b"]]
    assert split_commands([]) == []
    log, marker = tmp_path / "t.json", tmp_path / "ran"
    cmds = [[sys.executable, "-c", "import sys; sys.exit(4)"],
            [sys.executable, "-c", f"open({str(marker)!r}, 'w')"]]
    assert timed(cmds, log, "x") == 4
    assert not marker.exists() and not log.exists()              # later commands do not run, nothing logged
    assert timed(cmds[1:], log, "y") == 0 and marker.exists()
    rec = json.loads(log.read_text())["y"]
    assert rec["seconds"] > 0 and "images" not in rec and rec["command"].split()[1] == "-c"
