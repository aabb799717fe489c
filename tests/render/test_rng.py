"""polar_render.rng: the one table of random streams.

The pinned values below are what the streams gave before they were gathered in one module
(``np.random.default_rng([seed, i, k])`` inline in five modules): a change of derivation
would silently change every rendered data set, so it must fail here first."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import polar_render
from polar_render import rng

PACKAGE = Path(polar_render.__file__).resolve().parent
SCRIPT = PACKAGE / "layout" / "blenderproc" / "script.py"
# Raw seeding outside rng.py, each with its reason (anything else must go through the table):
ALLOWED_RAW = {
    "rng.py": "the table itself",
    "layout/blenderproc/script.py": "runs in Blender's Python, imports nothing from polar_render "
                                    "(its scene_seed is checked against rng.blenderproc_seed below)",
    "physics/dofp.py": "coerces a caller's Generator or seed (the caller passes rng.stream('sensor', ...))",
}
RAW_SEEDING = re.compile(r"default_rng\(|SeedSequence\(|np\.random\.seed\(|random\.seed\(|random\.Random\(")
STREAM_CALL = re.compile(r"\bstream\(\s*[\"'](\w+)[\"']")


def _sources():
    return {p.relative_to(PACKAGE).as_posix(): p.read_text() for p in PACKAGE.rglob("*.py")}


def test_pinned_values_of_every_stream():
    """Bit-identical to the derivations the renders of existing data sets used."""
    assert rng.render_seed(5, 0) == int(np.random.default_rng([5, 0, 2]).integers(0, 2**31 - 1))
    assert [rng.render_seed(5, i, k) for i in range(3) for k in range(3)] == [
        1216135920, 597124255, 1472070898, 1184002087, 1312209248, 45224801, 1996933766, 1647022892, 1875367670]
    assert [rng.blenderproc_seed(5, s) for s in range(4)] == [245407421, 574538421, 3831894547, 4215978152]
    for name, tail in (("appearance", 1), ("anomaly", 3), ("sensor", 4)):
        for i in range(3):
            assert np.array_equal(rng.stream(name, 5, i).random(4), np.random.default_rng([5, i, tail]).random(4))
    assert np.array_equal(rng.stream("layout", 7, 2).random(4), np.random.default_rng([7, 2]).random(4))


def test_deterministic_and_independent():
    names = [n for n, row in rng.STREAMS.items() if not row.sub]
    first = {n: rng.stream(n, 3, 1).random(8) for n in names}
    again = {n: rng.stream(n, 3, 1).random(8) for n in names}
    for n in names:
        assert np.array_equal(first[n], again[n]), n            # same (seed, index): same values
        assert not np.array_equal(first[n], rng.stream(n, 3, 2).random(8)), n   # other index
        assert not np.array_equal(first[n], rng.stream(n, 4, 1).random(8)), n   # other seed
    # every stream of one (seed, index) is distinct from every other one
    draws = {n: tuple(v) for n, v in first.items()}
    assert len(set(draws.values())) == len(draws), "two streams share their values"
    noise = {rng.render_seed(3, 1, k) for k in range(5)} | {rng.render_seed(3, 1)}
    assert len(noise) == 6                                     # --noise-seed K: one new stream per K


def test_entropy_is_the_table_row():
    for name, row in rng.STREAMS.items():
        sub = 6 if row.sub else None
        words = rng.entropy(name, 11, 4, sub)
        assert words[:2] == [11, 4] and tuple(words[2:2 + len(row.tail)]) == row.tail
        assert words[2 + len(row.tail):] == ([7] if row.sub else [])
    # distinct entropies once SeedSequence drops trailing zero words (its convention)
    canon = set()
    for name, row in rng.STREAMS.items():
        words = rng.entropy(name, 11, 4, 0 if row.sub else None)
        while words and words[-1] == 0:
            words.pop()
        canon.add(tuple(words))
    assert len(canon) == len(rng.STREAMS)


def test_refuses_unknown_names_and_bad_sub_streams():
    with pytest.raises(KeyError, match="unknown random stream"):
        rng.stream("apperance", 0, 0)
    with pytest.raises(ValueError, match="needs"):
        rng.stream("render_noise", 0, 0)
    with pytest.raises(ValueError, match="takes no"):
        rng.stream("sensor", 0, 0, sub=1)
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match=">= 0"):
            rng.render_seed(0, 0, bad)


def test_sampler_seeds_in_range():
    seeds = [rng.render_seed(s, i) for s in range(4) for i in range(50)]
    assert all(0 <= x < rng.SAMPLER_SEED_END for x in seeds) and len(set(seeds)) == len(seeds)


def test_table_complete_every_stream_name_used_is_in_the_table():
    """Scan the package: every named stream it draws is a row of the table, every row is
    drawn somewhere, and nothing seeds numpy or random outside the table."""
    used = set()
    for rel, text in _sources().items():
        used |= set(STREAM_CALL.findall(text))
        if rel not in ALLOWED_RAW:
            assert not RAW_SEEDING.search(text), f"{rel} seeds a generator itself: use polar_render.rng"
    assert used, "the scan found no stream() call: the pattern is stale"
    assert used <= set(rng.STREAMS), f"streams not in the table: {sorted(used - set(rng.STREAMS))}"
    # rows drawn through their own helper rather than stream("name")
    via_helper = {"render", "render_noise", "blenderproc"}
    assert set(rng.STREAMS) - via_helper <= used, f"rows nobody draws: {sorted(set(rng.STREAMS) - via_helper - used)}"
    text = "\n".join(t for r, t in _sources().items() if r != "rng.py")
    assert "render_seed(" in text


def test_table_documented():
    doc = rng.__doc__
    for name, row in rng.STREAMS.items():
        assert f"``{name}``" in doc, name
        shown = ", ".join(["seed", "s" if row.index == "scene" else "i", *map(str, row.tail)])
        assert f"[{shown}" in doc, (name, shown)


def test_blenderproc_script_copy_matches_the_table():
    """The import-free copy in the BlenderProc script (it cannot import polar_render)."""
    tree = ast.parse(SCRIPT.read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "scene_seed")
    ns = {"np": np}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(SCRIPT), "exec"), ns)
    for seed in (0, 5, 2**31):
        for s in range(6):
            assert ns["scene_seed"](seed, s) == rng.blenderproc_seed(seed, s)
