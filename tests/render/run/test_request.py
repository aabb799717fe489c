"""RenderRequest validation: every bad field is refused with a message naming its CLI option."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polar_render.run.request import (MAX_SEED, MAX_SPP, OPTION, RenderRequest, RequestError, RunSummary,
                                      check_res, check_shard, parse_res, parse_shard)

OK = dict(scene="usb_brick", out=Path("out/x"))

BAD = [  # (field, bad value, expected words after "<option>: ")
    ("scene", "", "expected a non-empty path"),
    ("scene", 3, "expected a non-empty path"),
    ("out", "a\x00b", "expected a non-empty path"),
    ("layout", "", "expected a BOP dataset directory"),
    ("n", 0, "expected an integer >= 1"),
    ("n", 2.0, "expected an integer >= 1"),
    ("seed", -1, "expected an integer >= 0"),
    ("seed", MAX_SEED + 1, f"expected an integer <= {MAX_SEED}"),
    ("spp", 0, "expected an integer >= 1"),
    ("spp", MAX_SPP + 1, f"expected an integer <= {MAX_SPP}"),
    ("spp", True, "expected an integer >= 1"),
    ("workers", 0, "expected an integer >= 1"),
    ("retries", -1, "expected an integer >= 0"),
    ("noise_seed", -2, "expected an integer >= 0"),
    ("res", (0, 48), "width and height must be >= 1 pixel"),
    ("res", (64,), "expected WIDTHxHEIGHT"),
    ("shard", (3, 3), "expected k/n with 0 <= k < n"),
    ("shard", "0/2", "expected k/n (two integers)"),
    ("indices", [0, -1], "expected a list of sample indices >= 0"),
    ("indices", 3, "expected a list of sample indices >= 0"),
    ("executor", "slurm", "expected one of local, ray"),
    ("layout_backend", "blender", "expected one of embedded, blenderproc"),
    ("denoise", "nlm", "expected one of none, oidn"),
    ("light_variant", "rot45", "expected one of none, rot90, scale2"),
    ("variant", "", "expected a non-empty string"),
    ("blender", 7, "expected a non-empty string"),
    ("progress", 1, "expected True or False"),
    ("clean", "yes", "expected True or False"),
    ("worker", None, "expected True or False"),
]


@pytest.mark.parametrize("field_,value,why", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_each_bad_field_names_its_option(field_, value, why):
    with pytest.raises(RequestError) as ei:
        RenderRequest(**{**OK, field_: value})
    msg = str(ei.value)
    assert msg.startswith(f"{OPTION[field_]}: "), msg
    assert why in msg, msg


def test_every_field_has_an_option_and_a_bad_case():
    from dataclasses import fields

    names = {f.name for f in fields(RenderRequest)}
    assert names == set(OPTION)
    assert names - {"scene", "out"} <= {f for f, _, _ in BAD} | {"scene", "out"}


def test_validate_runs_again_after_a_field_changes():
    req = RenderRequest(**OK, spp=4)
    req.spp = -3
    with pytest.raises(RequestError, match=r"^--spp: expected an integer >= 1, got -3$"):
        req.validate()


def test_valid_requests_pass_and_keep_their_values():
    req = RenderRequest(**OK, n=np.int64(3), seed=MAX_SEED, spp=MAX_SPP, res=[64, 48], shard=(1, 2),
                        indices=range(4), denoise="oidn", light_variant="rot90", noise_seed=0)
    assert req.validate() is req
    assert (req.n, req.seed, req.spp, req.shard) == (3, MAX_SEED, MAX_SPP, (1, 2))


def test_parse_res_and_shard():
    assert parse_res("640x480") == (640, 480) and parse_res(" 64X48 ") == (64, 48)
    assert parse_res(None) is None and parse_shard(None) is None
    assert parse_shard("1/4") == (1, 4)
    for text in ("640", "640x", "x480", "-1x2", "6.4x4"):
        with pytest.raises(RequestError, match=r"^--res: expected WIDTHxHEIGHT"):
            parse_res(text)
    with pytest.raises(RequestError, match=r"^--res: width and height must be >= 1 pixel, got 0x4"):
        parse_res("0x4")
    for text in ("1", "1/2/3", "a/b"):
        with pytest.raises(RequestError, match=r"^--shard: expected k/n"):
            parse_shard(text)
    with pytest.raises(RequestError, match=r"^--shard: expected k/n with 0 <= k < n .* got 4/4"):
        parse_shard("4/4")


def test_check_res_pixel_limit(monkeypatch):
    monkeypatch.setenv("POLAR_MAX_IMAGE_PIXELS", "1000")
    assert check_res((40, 25)) == (40, 25)
    with pytest.raises(RequestError, match=r"^--res: 40x26 = 1,040 pixels is above the limit of 1,000"):
        check_res((40, 26))
    assert check_shard([0, 1], "shard") == (0, 1)


def test_summary_add_folds_worker_chunks():
    total = RunSummary(out=Path("o"), variant="")
    total.add(RunSummary(out=Path("o"), skipped=2, failed={3: "x"}, render_seconds=[1.0], variant="llvm"))
    total.add(RunSummary(out=Path("o"), skipped=1, failed={5: "y"}, render_seconds=[2.0], variant=""))
    assert (total.skipped, total.failed, total.render_seconds, total.variant) == (3, {3: "x", 5: "y"},
                                                                                  [1.0, 2.0], "llvm")
    total.rendered, total.seconds, total.layout_seconds = 2, 5.0, 1.0
    assert total.line().startswith("2 rendered, 3 skipped, 2 failed in 5.0 s (2.00 s/sample, layout 1.0 s")
