"""What a render run settles before it writes (polar_render.run.plan): every refusal here
leaves OUT absent or as it was."""
from __future__ import annotations

import shutil

import pytest

from polar_render.outputs import sample_bytes

from tests.render.run.conftest import FAST, cli_render


def test_free_space_checked_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from polar_render import limits

    need = 2 * sample_bytes(64, 48, 3)
    monkeypatch.setattr(limits.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**12, 10**12, need // 2))
    out = tmp_path / "out"
    rc, _, err = cli_render(capsys, "--scene", "usb_brick", "--n", "2", "--out", str(out), *FAST)
    assert rc == 2, err
    assert f"{out}: rendering 2 samples at 64x48 and their layout needs about" in err and "free" in err, err
    assert not out.exists()


def _request(tmp_path, **kw):
    from polar_render.run.request import RenderRequest

    kw.setdefault("scene", "usb_brick")
    return RenderRequest(out=tmp_path / "out", progress=False, **kw)


@pytest.mark.parametrize("kw, setup, match", [
    (dict(indices=[0, 9], n=3), None, r"indices: sample indices \[9\] are outside 0\.\.2"),
    (dict(n=1), lambda out: out.write_text("x"), r"--out: .*out exists and is not a directory"),
    (dict(n=1, layout_backend="blenderproc", layout="somewhere"), None, "cannot be combined with --layout"),
])
def test_plan_refuses_before_writing(tmp_path, kw, setup, match):
    from polar_render.run.plan import plan

    out = tmp_path / "out"
    if setup:
        setup(out)
    before = sorted(p.name for p in tmp_path.iterdir())
    req = _request(tmp_path, **kw)
    with pytest.raises(ValueError, match=match):
        req.validate()
        plan(req)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_plan_settles_the_run_without_writing(tmp_path):
    from polar_render.run.plan import DEFAULT_N, plan

    p = plan(_request(tmp_path, res=(64, 48), shard=(1, 2), spp=2))
    assert (p.n, p.res, p.spp, p.todo) == (DEFAULT_N, (64, 48), 2, list(range(1, DEFAULT_N, 2)))
    assert p.early["layout"] == "layout" and p.early["layout_backend"] == "embedded" and p.early["res"] == [64, 48]
    assert p.given is None and not (tmp_path / "out").exists()
