"""What a render build keeps, pins and borrows: render roles, ignore rules, normalisation reuse.

Render roles (``dataset build --render DIR[:train|:eval]``):

* ``DIR`` (pooled): today's behaviour, its samples share the ratio-based splits;
* ``DIR:train``: every sample goes to train; a render pinned to train must hold normal
  samples only (no anomalous sample, no sample with ignored anomaly instances): the build is
  refused before anything is written, naming a few offending sample ids;
* ``DIR:eval``: every sample goes to val or test (``val_fraction`` of its normal, anomalous
  and ignore-only samples to val, the rest to test), never to train.

Ignore rules (``--min-visible-px N``, ``--min-contrast V | cls=V,... | V,cls=V``): an
instance that would count as anomalous (every instance; only defects with ``--impurities
normal``) is *ignored* when the renderer flagged it ``below_min_visible``, when its
``visible_px`` is below N, or when its ``contrast`` is below the threshold of its class (the
per-class value, else the bare default V; no threshold when neither is given).  Renders made
before the renderer recorded visibility lack the fields: a missing ``visible_px`` falls back
to ``area_px`` (then to the instance's pixel count in ``anomaly_mask.png``), a missing
``contrast`` counts as +inf (never ignored by the contrast threshold), a missing
``below_min_visible`` as false.  ``contrast`` units differ per class (``contrast_measure``:
``normal_deviation_deg``, ``reflectance_change``, ``presence``, ``material_difference``), so a
bare default applies one number to different units; per-class values are the sensible form.

Normalisation reuse (``--norm-from TRAIN_DATA``): the per-modality ``scale``/``offset`` of
another dataset's manifest are copied instead of computed from this build's train split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from polar_detect.dataset.encodings import DatasetError, channel_names

ROLES = ("train", "eval")
POOLED = "pooled"
N_LISTED = 5  # offending sample ids named in an error message


# -- render roles -------------------------------------------------------------------------
def parse_render(arg) -> tuple[Path, str]:
    """``"DIR"`` -> (DIR, "pooled"); ``"DIR:train"`` / ``"DIR:eval"`` -> (DIR, role); a
    ``(path, role)`` pair is checked; a ``Path`` is taken literally (pooled)."""
    if isinstance(arg, tuple):
        path, role = arg
        role = role or POOLED
        if role not in ROLES + (POOLED,):
            raise DatasetError(f"--render {path}:{role}: unknown role {role!r}; use DIR, DIR:train or DIR:eval")
        return Path(path), role
    if isinstance(arg, Path):
        return arg, POOLED
    text = str(arg)
    head, sep, tail = text.rpartition(":")
    if sep and head and tail in ROLES:
        return Path(head), tail
    if sep and head and tail and "/" not in tail and not Path(text).exists():
        raise DatasetError(f"--render {text}: unknown role {tail!r}; use DIR, DIR:train or DIR:eval")
    return Path(text), POOLED


# -- ignore rules -------------------------------------------------------------------------
def parse_min_contrast(spec) -> dict[str, float]:
    """``"2"`` -> {"*": 2.0}; ``"dent=2,water_stain=0.05"`` -> per class; ``"0.5,dent=2"`` both
    ("*" = default for classes not named).  None / "" -> {}."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, (int, float)):
        items = [("*", spec)]
    else:
        items = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.rpartition("=")
            items.append((name.strip() if sep else "*", value.strip()))
    out: dict[str, float] = {}
    for name, value in items:
        if not name:
            raise DatasetError(f"--min-contrast {spec}: empty class name before '='")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise DatasetError(f"--min-contrast {spec}: {value!r} is not a number") from None
        if not math.isfinite(v) or v < 0:
            raise DatasetError(f"--min-contrast {spec}: thresholds must be finite and >= 0, got {value!r}")
        if name in out:
            raise DatasetError(f"--min-contrast {spec}: {'the default' if name == '*' else repr(name)} given twice")
        out[name] = v
    return out


@dataclass(frozen=True)
class IgnoreRules:
    """Which anomaly instances become ignore regions (module docstring)."""

    min_visible_px: int = 0
    min_contrast: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.min_visible_px, bool) or int(self.min_visible_px) != self.min_visible_px \
                or self.min_visible_px < 0:
            raise DatasetError(f"--min-visible-px must be an integer >= 0, got {self.min_visible_px!r}")
        object.__setattr__(self, "min_contrast", parse_min_contrast(self.min_contrast))

    def check_classes(self, classes) -> None:
        """Refuse class names of ``--min-contrast`` that no render has (typos)."""
        unknown = sorted(c for c in self.min_contrast if c != "*" and c not in classes)
        if unknown:
            raise DatasetError(f"--min-contrast: class(es) {', '.join(map(repr, unknown))} appear in no "
                               f"render's anomalies (classes seen: {', '.join(sorted(classes)) or 'none'})")

    def contrast_threshold(self, cls: str) -> float | None:
        return self.min_contrast.get(cls, self.min_contrast.get("*"))

    def reason(self, inst: dict, visible_px: int, where) -> str | None:
        """Why ``inst`` is ignored (None: kept). ``visible_px`` already resolved."""
        if inst.get("below_min_visible") is True:
            return "below_min_visible"
        if self.min_visible_px and visible_px < self.min_visible_px:
            return f"visible_px {visible_px} < {self.min_visible_px}"
        thr = self.contrast_threshold(str(inst.get("class")))
        c = contrast_of(inst, where)
        if thr is not None and c < thr:
            return f"contrast {c:.6g} < {thr:g}" + (f" ({inst['contrast_measure']})" if inst.get("contrast_measure") else "")
        return None

    def record(self) -> dict:
        """The manifest's ``ignore_rules``."""
        return {"min_visible_px": int(self.min_visible_px), "min_contrast": dict(self.min_contrast),
                "below_min_visible": "always ignored",
                "missing_fields": "visible_px -> area_px -> pixels in anomaly_mask; contrast -> +inf "
                                  "(never ignored by contrast); below_min_visible -> false"}


def contrast_of(inst: dict, where) -> float:
    c = inst.get("contrast")
    if c is None:
        return math.inf
    if isinstance(c, bool) or not isinstance(c, (int, float)) or math.isnan(c) or c < 0:
        raise DatasetError(f"{where}: anomaly {inst.get('id')} has contrast {c!r}; expected a number >= 0")
    return float(c)


def visible_px_of(inst: dict, counted=None) -> int | None:
    """``visible_px``, else ``area_px``, else ``counted(id)`` (pixels in the mask), else None."""
    for key in ("visible_px", "area_px"):
        if inst.get(key) is not None:
            return int(inst[key])
    return None if counted is None else int(counted(int(inst["id"])))


def list_ids(ids, n: int = N_LISTED) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


# -- normalisation reuse ------------------------------------------------------------------
def borrowed_normalisation(norm_from, modalities, colour) -> tuple[dict, dict]:
    """(``{modality: {"scale", "offset", "normalisation"}}``, manifest record) copied from the
    dataset ``norm_from``; refuses a modality it lacks or whose channels differ."""
    from polar_detect.dataset.manifest import manifest_path, read_manifest, sha256_file

    path = manifest_path(norm_from)
    src = read_manifest(path)
    out = {}
    for mod in modalities:
        entry = src["modalities"].get(mod)
        if entry is None:
            raise DatasetError(f"--norm-from {path}: has no modality {mod!r} (it has "
                               f"{', '.join(src['modalities'])})")
        want = channel_names(mod, colour)
        have = entry.get("channel_names")
        if have is not None and list(have) != want:
            raise DatasetError(f"--norm-from {path}: modality {mod!r} has channels {have}, this build {want}")
        out[mod] = {"scale": float(entry.get("scale", 1.0)), "offset": float(entry.get("offset", 0.0)),
                    "normalisation": str(entry.get("normalisation", ""))}
    record = {"dataset": str(path.parent.resolve()), "manifest": str(path.resolve()),
              "manifest_sha256": sha256_file(path), "name": src.get("name"), "modalities": list(modalities)}
    return out, record
