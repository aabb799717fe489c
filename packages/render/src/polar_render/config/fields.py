"""Validated value types of the scene schema and one-line error messages (a leaf module).

The building blocks of :mod:`polar_render.config.schema` (and of sections other modules own,
e.g. :class:`polar_render.physics.dofp.Dofp`): finite numbers and ``[lo, hi]`` ranges with
bounds (:class:`Bounds` is what the key reference prints), colours, names, flags, choices with
did-you-mean hints, the strict section base class, and :func:`format_errors`, which turns a
pydantic ``ValidationError`` into ``<source>: <dotted.key>: <problem>`` lines.
"""
import difflib
import math
import numbers
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, PlainValidator, Tag, ValidationError


INF = math.inf


NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class Bounds:
    """Closed interval [lo, hi] (``lo_open``: (lo, hi]) of a number, a range's ends or a
    colour channel; ``kind`` names the value's shape in messages and the key reference."""
    lo: float = -INF
    hi: float = INF
    lo_open: bool = False
    kind: str = "number"

    def holds(self, x: float) -> bool:
        return (self.lo < x if self.lo_open else self.lo <= x) and x <= self.hi

    def text(self) -> str:
        if self.lo == -INF and self.hi == INF:
            return "finite"
        if self.hi == INF:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo == -INF:
            return f"<= {self.hi:g}"
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"


def _real(v, integer: bool = False) -> float:
    """A finite int/float (bools and strings are refused)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or (integer and not isinstance(v, numbers.Integral)):
        raise ValueError(f"expected {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {v!r}")
    return v


def _number(b: Bounds, integer: bool):
    def check(v):
        x = _real(v, integer)
        if not b.holds(x):
            raise ValueError(f"{x!r} is out of range: must be {b.text()}")
        return x if integer else float(x)
    return check


def as_range(value) -> tuple[float, float]:
    """(lo, hi) of a validated range value: ``[lo, hi]`` or one number (lo == hi)."""
    if isinstance(value, (list, tuple)):
        return float(value[0]), float(value[1])
    return float(value), float(value)


def _range(b: Bounds, integer: bool):
    def check(v):
        """A number (fixed) or [lo, hi] (uniform), both ends inside ``b``; returned as written."""
        if isinstance(v, (list, tuple)):
            if len(v) != 2:
                raise ValueError(f"expected a number or [lo, hi] (2 values), got {len(v)} values: {list(v)!r}")
            lo, hi = (_real(x, integer) for x in v)
            if lo > hi:
                raise ValueError(f"inverted range {list(v)!r}: lo must be <= hi")
            for x in (lo, hi):
                if not b.holds(x):
                    raise ValueError(f"range {list(v)!r} leaves the valid interval {b.text()}")
            return list(v)
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"expected a number or [lo, hi], got {v!r}")
        x = _real(v, integer)
        if not b.holds(x):
            raise ValueError(f"{x!r} is out of range: must be {b.text()}")
        return v
    return check


def Number(lo=-INF, hi=INF, *, lo_open=False, integer=False):
    """A single finite number (``integer``: an int) in [lo, hi] (``lo_open``: (lo, hi])."""
    b = Bounds(lo, hi, lo_open, "integer" if integer else "number")
    return Annotated[Any, b, PlainValidator(_number(b, integer))]


def Range(lo=-INF, hi=INF, *, lo_open=False, integer=False):
    """``[lo, hi]`` drawn uniformly per sample, or one number (fixed); both ends in [lo, hi]."""
    b = Bounds(lo, hi, lo_open, "int range" if integer else "range")
    return Annotated[Any, b, PlainValidator(_range(b, integer))]


def Tolerance(hi=INF):
    """A symmetric tolerance +-t (one number >= 0)."""
    return Number(0.0, hi)


def _color(v):
    if isinstance(v, (list, tuple)) and len(v) == 3:
        for x in v:
            if not 0.0 <= _real(x) <= 1.0:
                raise ValueError(f"an [r, g, b] colour needs three numbers in [0, 1], got {list(v)!r}")
        return list(v)
    try:
        return _range(Bounds(0.0, 1.0), False)(v)
    except ValueError as exc:
        raise ValueError(f"expected [r, g, b] (nominal) or a range [lo, hi] per channel in [0, 1]: {exc}") from None


Color = Annotated[Any, Bounds(0.0, 1.0, kind="colour"), PlainValidator(_color)]


def _vector(n: int, what: str):
    def check(v):
        if not isinstance(v, (list, tuple)) or len(v) != n:
            raise ValueError(f"expected {what}, got {v!r}")
        return [_real(x) for x in v]
    return Annotated[Any, Bounds(kind=f"{n} numbers"), PlainValidator(check)]


def _name(v):
    if not isinstance(v, str) or not NAME_RE.match(v):
        raise ValueError(f"names may use letters, digits, '_' and '-' only, got {v!r}")
    return v


Name = Annotated[str, PlainValidator(_name)]


def _text(v):
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


Text = Annotated[str, PlainValidator(_text)]


def _flag(v):
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


Flag = Annotated[bool, PlainValidator(_flag)]


def _obj_id(v):
    """BOP obj_id: a positive integer (YAML may give the key as text)."""
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"object keys are BOP obj_ids (integers >= 1), got {v!r}")
    return v


ObjId = Annotated[int, PlainValidator(_obj_id)]


def _choice(options, what: str, kind: str | None = None):
    """One of ``options`` (``kind``: how the key reference names them, default the list)."""
    options = tuple(options)

    def check(v):
        if not isinstance(v, str) or v not in options:
            text = str(v).lower()
            prefix = sorted((o for o in map(str, options) if o and text.startswith(o.lower())), key=len)[-1:]
            close = prefix or difflib.get_close_matches(str(v), [str(o) for o in options], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            listed = ", ".join(map(str, options)) if len(options) <= 12 else \
                f"{len(options)} names, e.g. {', '.join(map(str, options[:8]))}, ..."
            raise ValueError(f"{v!r} is not {what}{hint}; one of: {listed}")
        return v
    return Annotated[str, Bounds(kind=kind or "one of " + ", ".join(map(str, options))), PlainValidator(check)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    def dump(self) -> dict:
        """Plain dict with defaults filled in; unset optional keys are left out."""
        return self.model_dump(exclude_none=True)


def _strip(t):
    """Annotated / Optional[X] -> X (a tagged union is kept)."""
    while True:
        o = typing.get_origin(t)
        if o is Annotated:
            t = typing.get_args(t)[0]
        elif o in (Union, types.UnionType):
            args = [a for a in typing.get_args(t) if a is not type(None)]
            if len(args) != 1:
                return t
            t = args[0]
        else:
            return t


def _tagged(t) -> dict | None:
    """{tag: model} of a discriminated union, else None."""
    t = _strip(t)
    if typing.get_origin(t) not in (Union, types.UnionType):
        return None
    out = {}
    for a in typing.get_args(t):
        if typing.get_origin(a) is Annotated:
            base, *meta = typing.get_args(a)
            out.update({m.tag: base for m in meta if isinstance(m, Tag)})
    return out or None


def _walk(loc: tuple, root) -> tuple[list, Any]:
    """(loc without union tags and '[key]' markers, the type at that location or None)."""
    node, clean = root, []
    for el in loc:
        if el == "[key]":
            continue
        members = _tagged(node) if node is not None else None
        if members is not None:
            node = members.get(el)
            continue
        t = _strip(node) if node is not None else None
        if isinstance(t, type) and issubclass(t, BaseModel):
            f = t.model_fields.get(el)
            node = f.annotation if f is not None else None
        elif typing.get_origin(t) is dict:
            node = typing.get_args(t)[1]
        elif typing.get_origin(t) is list:
            args = typing.get_args(t)
            node = args[0] if args else None
        else:
            node = None
        clean.append(el)
    return clean, node


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _unknown_key(key, parent, union, tag_key=None) -> str:
    """Message for a key the model at ``parent`` does not have: a near miss, or the
    other material types / layout modes that do have it, and what is allowed here."""
    t = _strip(parent) if parent is not None else None
    allowed = list(t.model_fields) if isinstance(t, type) and issubclass(t, BaseModel) else []
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    others = [f"{tag_key(m) if tag_key else 'type'}: {tag}" for tag, m in (union or {}).items() if key in m.model_fields]
    if others and not close:
        hint = f" (a key of {' / '.join(others)})"
    if str(key) in ("scale", "scaling", "scale_factor") and "unit" in allowed:
        hint = " (a mesh in other units: unit: mm, cm, m or in)"
    return f"unknown key{hint}; allowed here: {', '.join(allowed)}" if allowed else "unknown key"


def _message(err: dict, parent, union=None, tag_key=None) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return "required key missing"
    if kind == "extra_forbidden":
        return _unknown_key(err["loc"][-1], parent, union, tag_key)
    if kind.startswith("bad_tag:"):
        tag, given = kind.split(":")[1], err["input"]
        if isinstance(given, dict) and tag not in given:
            return f"required key missing; {msg}"
        return f"{msg}, got {_short(given.get(tag) if isinstance(given, dict) else given)}"
    if kind == "too_short":
        n = err.get("ctx", {}).get("min_length", 1)
        return f"needs at least {n} entr{'y' if n == 1 else 'ies'}, got {_short(err['input'])}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {_short(err['input'])}"
    return f"{msg}, got {_short(err['input'])}"


def format_errors(exc: ValidationError, source, root, limit: int = 30, tag_key=None) -> str:
    """One line per error: ``<source>: <dotted.key>: <problem>`` (``root``: the model validated;
    ``tag_key(model)``: the key that selects a member of a tagged union, default ``type``)."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        clean, _ = _walk(loc, root)
        _, parent = _walk(loc[:-1], root)
        _, above = _walk(loc[:-2], root)
        if err["type"].startswith("bad_tag:"):   # the tag key itself (type, mode) is what is wrong
            clean.append(err["type"].split(":")[1])
        dotted = ".".join(str(x) for x in clean)
        why = _message(err, parent, _tagged(above) if above is not None else None, tag_key)
        lines.append(f"{source}: {dotted}: {why}" if dotted else f"{source}: {why}")
    lines = list(dict.fromkeys(lines))
    more = len(lines) - limit
    return "\n".join(lines[:limit] + ([f"{source}: ... and {more} more"] if more > 0 else []))
