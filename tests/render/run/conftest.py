"""Helpers shared by the run tests (lock, manifest, plan, runner): the render CLI run
in-process, its summary line, and snapshots of an OUT directory."""
from __future__ import annotations

import re
from pathlib import Path

from polar_render import cli

from tests.render.conftest import PLAIN_SCENE

FAST = ["--res", "64x48", "--spp", "1"]


def cli_render(capsys, *args) -> tuple[int, str, str]:
    """``polar-render render ARGS --quiet`` in-process: (exit status, stdout, stderr)."""
    rc = cli.main(["render", *args, "--quiet"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def summary_counts(stdout: str) -> tuple[int, int, int]:
    """(rendered, skipped, failed) of the summary line."""
    m = re.search(r"(\d+) rendered, (\d+) skipped, (\d+) failed", stdout)
    assert m, stdout
    return tuple(int(x) for x in m.groups())


def plain_args(out: Path, layout: Path, *extra) -> list[str]:
    """CLI arguments: the plain test scene on ``layout``, tiny and fast, into ``out``."""
    return ["--scene", str(PLAIN_SCENE), "--layout", str(layout), "--out", str(out), *FAST, *extra]


def tree_bytes(root: Path) -> dict:
    """{relative path: bytes} of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def done_samples(out: Path) -> list[str]:
    """Names of the finished samples (with meta.json) of the run in ``out``."""
    return sorted(p.parent.name for p in (out / "samples").glob("*/meta.json"))
