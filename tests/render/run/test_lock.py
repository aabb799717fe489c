"""One writer per OUT (polar_render.run.lock): a second run into a held OUT is refused, the
lock is held while a run renders, and shards share OUT while each shard runs once.

Renders are tiny (64x48, 1 spp): the plain scene on the BlenderProc fixture (3 frames).
Relocation and refusal of another configuration: test_manifest.py; full disk: test_runner.py
and test_io.py; the disk estimate: test_plan.py and test_outputs.py.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from polar_render.run import lock as runlock
from polar_render.run.request import RenderRequest
from polar_render.run.runner import RunHooks, run

from tests.render.conftest import PLAIN_SCENE
from tests.render.run.conftest import cli_render, done_samples, plain_args, summary_counts, tree_bytes


# ----------------------------------------------------------------------------- lock

def test_second_run_into_a_held_out_is_refused(tmp_path, capsys, bop_fixture_dir):
    """Another process holds OUT: the CLI refuses at once (exit 2), names its pid and host,
    and changes nothing; once it is released the same command renders."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom polar_render.run.lock import hold\n"
                               "with hold(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n",
                               str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree_bytes(out)
        rc, _, err = cli_render(capsys, *plain_args(out, bop_fixture_dir))
        assert rc == 2, err
        assert "Traceback" not in err
        assert f"{out}: another run holds this OUT (pid {holder.pid} on host " in err, err
        assert tree_bytes(out) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    rc, stdout, err = cli_render(capsys, *plain_args(out, bop_fixture_dir))
    assert rc == 0, err
    assert summary_counts(stdout) == (3, 0, 0)


def test_run_holds_out_while_it_renders(tmp_path, bop_fixture_dir):
    """The lock is held for the whole run (here: after each sample renders) and released after."""
    out = tmp_path / "out"
    seen = []

    def probe(i, *_):
        with pytest.raises(runlock.RunLockedError, match=rf"pid {os.getpid()} on host"):
            with runlock.hold(out):
                pass
        seen.append(i)

    s = run(RenderRequest(scene=PLAIN_SCENE, out=out, layout=bop_fixture_dir, n=2, res=(64, 48), spp=1,
                          progress=False), RunHooks(on_render=probe))
    assert (s.rendered, len(seen)) == (2, 2)
    with runlock.hold(out):   # released
        pass
    assert not list(out.glob(runlock.HOLDER_PREFIX + "*"))


def test_shards_share_out_but_each_shard_runs_once(tmp_path, capsys, bop_fixture_dir):
    out = tmp_path / "out"
    with runlock.hold(out, (0, 2)):
        with runlock.hold(out, (1, 2)):        # another shard of the same run: allowed
            pass
        with pytest.raises(runlock.RunLockedError, match=r"shard 0/2 is already being rendered \(pid"):
            with runlock.hold(out, (0, 2)):
                pass
        rc, _, err = cli_render(capsys, *plain_args(out, bop_fixture_dir))   # unsharded while a shard runs
        assert rc == 2 and "another run holds this OUT" in err and "shard 0/2" in err, err
        rc, stdout, err = cli_render(capsys, *plain_args(out, bop_fixture_dir, "--shard", "1/2"))
        assert rc == 0, err
        assert summary_counts(stdout) == (1, 0, 0) and done_samples(out) == ["000001"]
    rc, stdout, err = cli_render(capsys, *plain_args(out, bop_fixture_dir, "--shard", "0/2"))
    assert rc == 0 and summary_counts(stdout) == (2, 0, 0), err
    assert done_samples(out) == ["000000", "000001", "000002"]


# ----------------------------------------------------------------------------- relocation


# ----------------------------------------------------------------------------- permissions


# ----------------------------------------------------------------------------- full disk


# ----------------------------------------------------------------------------- disk estimate


