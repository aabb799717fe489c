"""Validated value types of the scene schema (polar_render.config.fields): numbers and ranges
with their bounds and one-line messages, colours, and ``format_errors`` turning a pydantic
error into ``<source>: <dotted.key>: <problem>`` lines."""
from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from polar_render.config.fields import (Bounds, Color, Name, Number, Range, _choice, _Section, as_range,
                                        format_errors)


class _Leaf(_Section):
    size_mm: Number(0.0, 10.0, lo_open=True)
    count: Number(1, 5, integer=True) = 1
    spread: Range(-1.0, 1.0) = 0.0


class _Root(_Section):
    name: Name = "x"
    colour: Color = [0.0, 1.0]
    parts: dict[str, _Leaf] = {}
    mode: _choice(("drop", "topdown", "station"), "a layout mode") = "drop"


def _error(model, data) -> str:
    with pytest.raises(ValidationError) as ei:
        model.model_validate(data)
    return format_errors(ei.value, "s.yaml", model)


def test_bounds_text_and_membership():
    assert Bounds().text() == "finite"
    assert Bounds(0.0).text() == ">= 0" and Bounds(0.0, lo_open=True).text() == "> 0"
    assert Bounds(hi=90.0).text() == "<= 90"
    assert Bounds(0.0, 1.0).text() == "[0, 1]" and Bounds(0.0, 1.0, lo_open=True).text() == "(0, 1]"
    assert Bounds(0.0, 1.0).holds(0.0) and Bounds(0.0, 1.0).holds(1.0) and not Bounds(0.0, 1.0).holds(1.0 + 1e-12)
    assert not Bounds(0.0, 1.0, lo_open=True).holds(0.0)


@pytest.mark.parametrize("value, message", [
    (0.0, "0.0 is out of range: must be (0, 10]"), (10.5, "10.5 is out of range: must be (0, 10]"),
    (math.nan, "expected a finite number, got nan"), (math.inf, "expected a finite number, got inf"),
    (True, "expected a number, got True"), ("3", "expected a number, got '3'")])
def test_number_bounds_and_messages(value, message):
    assert _error(_Root, {"parts": {"a": {"size_mm": value}}}) == f"s.yaml: parts.a.size_mm: {message}"


def test_numbers_and_ranges_that_pass_keep_their_value():
    leaf = _Leaf.model_validate({"size_mm": 10, "count": 5, "spread": [-1.0, 1.0]})
    assert leaf.size_mm == 10.0 and isinstance(leaf.size_mm, float)
    assert leaf.count == 5 and leaf.spread == [-1.0, 1.0]
    assert as_range(leaf.spread) == (-1.0, 1.0) and as_range(0.25) == (0.25, 0.25)
    assert "expected an integer, got 2.0" in _error(_Leaf, {"size_mm": 1, "count": 2.0})


@pytest.mark.parametrize("value, message", [
    ([0.5, -0.5], "inverted range [0.5, -0.5]: lo must be <= hi"),
    ([0.0, 2.0], "range [0.0, 2.0] leaves the valid interval [-1, 1]"),
    ([0.0, 0.1, 0.2], "expected a number or [lo, hi] (2 values), got 3 values: [0.0, 0.1, 0.2]"),
    (1.5, "1.5 is out of range: must be [-1, 1]"),
    ("wide", "expected a number or [lo, hi], got 'wide'")])
def test_range_messages(value, message):
    assert _error(_Leaf, {"size_mm": 1, "spread": value}) == f"s.yaml: spread: {message}"


def test_colour_is_rgb_or_a_range_in_the_unit_interval():
    assert _Root.model_validate({"colour": [0.1, 0.2, 0.3]}).colour == [0.1, 0.2, 0.3]
    assert _Root.model_validate({"colour": [0.1, 0.2]}).colour == [0.1, 0.2]
    assert "three numbers in [0, 1]" in _error(_Root, {"colour": [0.1, 0.2, 1.3]})
    assert "per channel in [0, 1]" in _error(_Root, {"colour": [0.5, 2.0]})


def test_format_errors_one_line_per_problem_at_dotted_keys():
    msg = _error(_Root, {"name": "a b", "mode": "topdwn", "colr": 1,
                         "parts": {"a": {"size_mm": 1, "cont": 2}, "b": {}}})
    assert msg.splitlines() == [
        "s.yaml: name: names may use letters, digits, '_' and '-' only, got 'a b'",
        "s.yaml: parts.a.cont: unknown key (did you mean 'count'?); allowed here: size_mm, count, spread",
        "s.yaml: parts.b.size_mm: required key missing",
        "s.yaml: mode: 'topdwn' is not a layout mode (did you mean 'topdown'?); one of: drop, topdown, station",
        "s.yaml: colr: unknown key (did you mean 'colour'?); allowed here: name, colour, parts, mode",
    ]
    assert "Extra inputs" not in msg and "Value error" not in msg


def test_format_errors_limits_the_lines():
    many = {"parts": {f"p{i}": {"size_mm": -1} for i in range(7)}}
    with pytest.raises(ValidationError) as ei:
        _Root.model_validate(many)
    lines = format_errors(ei.value, "s.yaml", _Root, limit=3).splitlines()
    assert len(lines) == 4 and lines[:3] == [f"s.yaml: parts.p{i}.size_mm: -1 is out of range: must be (0, 10]"
                                             for i in range(3)]
    assert lines[3] == "s.yaml: ... and 4 more"
