"""``OUT/run.json`` (polar_render.run.manifest): paths stored relative to OUT (a moved run
resumes), a given layout matched by its content, and a rerun with another configuration
refused without touching OUT."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from polar_render.run.manifest import read_manifest

from tests.render.run.conftest import FAST, cli_render, done_samples, plain_args, summary_counts, tree_bytes

RES, SPP = "64x48", "2"


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def test_moved_run_resumes_and_still_validates(tmp_path, capsys):
    """run.json and meta.json hold no absolute path: a run moved elsewhere resumes (skips
    its finished samples, reuses its own layout) and still refuses another configuration."""
    a = tmp_path / "a" / "out"
    args = ["--scene", "usb_brick", "--n", "2", "--seed", "4", *FAST]
    rc, _, err = cli_render(capsys, *args, "--out", str(a))
    assert rc == 0, err
    docs = [json.loads((a / "run.json").read_text())] + [json.loads(p.read_text()) for p in a.glob("samples/*/meta.json")]
    for doc in docs:
        absolute = [s for s in _strings(doc) if s.startswith(str(tmp_path)) or s.startswith("/")]
        assert absolute == [], absolute
    assert docs[0]["layout"] == "layout" and docs[1]["frame"]["layout"] == "layout"

    b = tmp_path / "moved" / "elsewhere"
    b.parent.mkdir()
    shutil.move(a.parent, b)
    b = b / "out"
    finished = {n: (b / "samples" / n / "meta.json").stat().st_mtime_ns for n in done_samples(b)}
    layout_before = tree_bytes(b / "layout")
    rc, stdout, err = cli_render(capsys, *args, "--out", str(b))
    assert rc == 0, err
    assert summary_counts(stdout) == (0, 2, 0)
    assert {n: (b / "samples" / n / "meta.json").stat().st_mtime_ns for n in done_samples(b)} == finished
    assert tree_bytes(b / "layout") == layout_before
    m = read_manifest(b)
    assert m["layout"] == str((b / "layout").resolve())
    assert Path(m["scene_file"]).is_file()   # scenes/usb_brick/scene.yaml, found from the moved OUT

    rc, stdout, err = cli_render(capsys, *[x if x != "4" else "5" for x in args], "--out", str(b))
    assert rc == 2 and "already holds a run with different seed" in err, err
    rc, stdout, err = cli_render(capsys, *[x if x != "2" else "3" for x in args], "--out", str(b))
    assert rc == 0 and summary_counts(stdout) == (1, 2, 0), err


def test_given_layout_is_matched_by_content(tmp_path, capsys, bop_fixture_dir):
    """A run of a given layout records the layout's path relative to OUT and its digest:
    moving OUT together with the layout resumes; a changed layout is refused."""
    a = tmp_path / "a"
    shutil.copytree(bop_fixture_dir, a / "bop", copy_function=shutil.copyfile)
    for p in [a / "bop", *(a / "bop").rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    rc, _, err = cli_render(capsys, *plain_args(a / "out", a / "bop", "--n", "2"))
    assert rc == 0, err
    assert json.loads((a / "out" / "run.json").read_text())["layout"] == "../bop"
    b = tmp_path / "b"
    shutil.move(a, b)
    rc, stdout, err = cli_render(capsys, *plain_args(b / "out", b / "bop", "--n", "2"))
    assert rc == 0 and summary_counts(stdout) == (0, 2, 0), err
    gt = b / "bop" / "train_pbr" / "000000" / "scene_gt.json"
    d = json.loads(gt.read_text())
    d["0"][0]["cam_t_m2c"][2] += 5.0
    gt.write_text(json.dumps(d))
    before = tree_bytes(b / "out")
    rc, _, err = cli_render(capsys, *plain_args(b / "out", b / "bop", "--n", "2"))
    assert rc == 2 and "already holds a run with different layout" in err, err
    assert tree_bytes(b / "out") == before


def _tree_state(root: Path) -> dict:
    """{relative path: (size, mtime_ns, bytes)} of every file under root."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change", [("--seed", "1", "seed"), ("--spp", "3", "spp")], ids=["A", "B"])
def test_rerun_with_different_config_refused(tmp_path, capsys, change):
    flag, value, key = change
    out = tmp_path / "out"
    base = {"--scene": "usb_brick", "--n": "2", "--res": RES, "--spp": SPP, "--seed": "0", "--out": str(out)}
    rc, _, err = cli_render(capsys, *[x for kv in base.items() for x in kv])
    assert rc == 0, err
    before = _tree_state(out)
    assert any(k.startswith("samples/") for k in before)

    # More samples than before: a refused run must not extend the layout either.
    changed = {**base, flag: value, "--n": "6"}
    rc, _, err = cli_render(capsys, *[x for kv in changed.items() for x in kv])
    assert rc == 2
    m = re.search(r"already holds a run with different (.+?) \(", err)
    assert m, err
    assert m.group(1).split(", ") == [key], err
    assert f"{key}=" in err
    assert _tree_state(out) == before, "the refused run modified OUT"

    rc, stdout, err = cli_render(capsys, *[x for kv in base.items() for x in kv])
    assert rc == 0, err
    assert summary_counts(stdout) == (0, 2, 0)


def test_paths_are_stored_relative_to_out_and_resolved_back(tmp_path):
    from polar_render.run.manifest import rel_to_out, resolve_run_path

    out = tmp_path / "runs" / "a"
    assert rel_to_out(out, out / "layout") == "layout"
    assert rel_to_out(out, tmp_path / "bop") == "../../bop"
    assert resolve_run_path(out, "../../bop") == (tmp_path / "bop").resolve()
    assert resolve_run_path(out, "/abs/layout") == Path("/abs/layout")        # older runs stored absolute paths


def test_check_run_manifest_refuses_another_configuration(tmp_path):
    from polar_render.run.manifest import check_run_manifest

    out = tmp_path / "out"
    out.mkdir()
    first = {"scene": "s", "config_digest": "d", "seed": 1, "spp": 4, "layout": "layout", "variant": "v"}
    check_run_manifest(out, first)
    written = (out / "run.json").read_bytes()
    check_run_manifest(out, {**first, "denoise": "none", "noise_seed": None}, write=False)   # implied by absence
    check_run_manifest(out, {"scene": "s", "seed": 1}, write=False)                          # absent keys: not compared
    with pytest.raises(ValueError, match=r"already holds a run with different seed, spp \(seed=1, spp=4\)"):
        check_run_manifest(out, {**first, "seed": 2, "spp": 8})
    with pytest.raises(ValueError, match=r"different denoise \(denoise=None\)"):
        check_run_manifest(out, {**first, "denoise": "oidn"})
    assert (out / "run.json").read_bytes() == written                       # a refusal writes nothing
    (out / "run.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"run\.json: expected a JSON object; choose another --out or delete it"):
        check_run_manifest(out, first)
    (out / "run.json").write_text("{")
    with pytest.raises(ValueError, match=r"run\.json: unreadable run manifest"):
        read_manifest(out)
    with pytest.raises(ValueError, match=r"not found; \S+ holds no render run"):
        read_manifest(tmp_path / "empty")
