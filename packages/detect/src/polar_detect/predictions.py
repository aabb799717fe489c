"""The predictions contract (packages/detect/README.md section 4): one directory per model run.

``<pred>/predictions.json``::

    {"model": str, "dataset": manifest path, "manifest_sha256": hex, "split": "test",
     "threshold": float | null, "scores": {sample id: image score}, "maps": {sample id:
     "maps/<id>.tiff" | null}, ...model-specific fields}

``<pred>/maps/<id>.tiff``: the anomaly map, float32 (H, W) at the sample's native size, higher
= more anomalous.  Entries of other splits (e.g. ``val`` beside ``test``) may sit in the same
file; evaluate uses them to choose the pixel threshold.

Writing: :class:`PredictionsWriter` (one map at a time, into a directory the caller builds
atomically with ``polar_render.io.atomic_dir``) or :func:`write_predictions` (everything at
once, atomic).  Reading: :func:`read_predictions` (the JSON: scores are numbers, map paths
stay inside the directory), :func:`prediction_entries` (entries joined to the dataset's
samples), :func:`check_map` / :func:`read_map` (bounded, 2-D, finite, the sample's size), and
:func:`check_predictions` (all of it).  Errors are
:class:`~polar_detect.dataset.errors.InputError` naming the file (CLIs exit with status 2).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from polar_render import io
from polar_render.limits import image_dims

from polar_detect.dataset.errors import InputError
from polar_detect.dataset.images import nonfinite_pixels
from polar_detect.dataset.sample_images import check_image
from polar_detect.dataset.samples import load_samples

PREDICTIONS = "predictions.json"


class Entry(NamedTuple):
    """One prediction joined to its dataset sample; ``map`` is None without an anomaly map."""
    sample: object
    score: float
    map: Path | None


# ------------------------------------------------------------------ writing
class PredictionsWriter:
    """``add(sid, score, amap)`` per sample, then ``finish(**fields)`` writes predictions.json.

    ``out`` is the (temporary) predictions directory; maps go to ``out/maps/<id>.tiff``
    (float32, uncompressed).  A repeated id or a non-finite map or score raises ValueError
    before anything of that sample is written."""

    def __init__(self, out):
        self.out = Path(out)
        (self.out / "maps").mkdir(parents=True, exist_ok=True)
        self.scores: dict[str, float] = {}
        self.maps: dict[str, str | None] = {}

    def _new_id(self, sid) -> str:
        sid = str(sid)
        if sid in self.scores:
            raise ValueError(f"sample id {sid!r} predicted twice")
        return sid

    def add(self, sid, score, amap=None) -> None:
        sid = self._new_id(sid)
        score = float(score)
        if not math.isfinite(score) or (amap is not None and not np.isfinite(np.asarray(amap)).all()):
            raise ValueError(f"sample {sid}: non-finite anomaly map or score")
        rel = None
        if amap is not None:
            rel = f"maps/{sid}.tiff"
            io.write_float_tiff(self.out / rel, np.asarray(amap, np.float32), compress=False)
        self.scores[sid], self.maps[sid] = score, rel

    def copy(self, sid, score, src: Path) -> None:
        """Take an existing map file as it is (``maps/<sid><suffix>``), e.g. when merging."""
        import shutil
        sid = self._new_id(sid)
        rel = f"maps/{sid}{Path(src).suffix}"
        shutil.copyfile(src, self.out / rel)
        self.scores[sid], self.maps[sid] = float(score), rel

    def finish(self, **fields) -> dict:
        """Write predictions.json: ``fields`` (model, dataset, manifest_sha256, split,
        threshold, ...) with ``scores`` and ``maps`` after them; returns the record."""
        record = {k: v for k, v in fields.items() if k not in ("scores", "maps")}
        record.update(scores=self.scores, maps=self.maps)
        io.write_json(self.out / PREDICTIONS, record)
        return record


def write_predictions(out, model_name: str, scores: dict, maps: dict, **fields) -> dict:
    """Write a whole predictions directory atomically (built under a temporary name, then
    renamed over ``out``): ``scores`` {id: float}, ``maps`` {id: (H, W) array or None};
    ``fields`` as :meth:`PredictionsWriter.finish` (dataset, manifest_sha256, split, ...)."""
    with io.atomic_dir(out) as tmp:
        w = PredictionsWriter(tmp)
        for sid, score in scores.items():
            w.add(sid, score, maps.get(sid))
        return w.finish(model=model_name, **fields)


# ------------------------------------------------------------------ reading
def load_json(path: Path) -> dict:
    """A JSON file; InputError naming it when missing or unparsable."""
    if not path.is_file():
        raise InputError(path, "not found")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot parse JSON ({e})") from e


def contained(root: Path, rel, source: Path, key: str) -> Path:
    """A path named in a data file, resolved inside ``root`` (``polar_render.paths``)."""
    from polar_render.paths import UnsafePathError
    from polar_render.paths import contained as inside
    if not isinstance(rel, str):
        raise InputError(source, f"{key}: expected a relative path, got {rel!r}")
    try:
        return inside(root, rel, source=source, key=key)
    except UnsafePathError as e:
        raise InputError.verbatim(source, str(e)) from None


def map_path(pred: Path, ppath: Path, sid: str, rel) -> Path:
    """The anomaly map ``maps.<sid>`` of a predictions.json, resolved inside its directory
    (absolute paths, ``..``, symlinks out of it refused; loops reported)."""
    return contained(Path(pred), rel, ppath, f"maps.{sid}")


def read_predictions(pred) -> tuple[dict, Path]:
    """(predictions dict, path) of ``<pred>/predictions.json``: scores are numbers, maps
    relative paths (or null) that resolve inside ``pred`` (:func:`map_path`)."""
    ppath = Path(pred) / PREDICTIONS
    p = load_json(ppath)
    if not isinstance(p, dict):
        raise InputError(ppath, "expected a JSON object")
    for k in ("scores", "maps"):
        if not isinstance(p.get(k), dict):
            raise InputError(ppath, f"missing '{k}' object")
    for sid, sc in p["scores"].items():
        if isinstance(sc, bool) or not isinstance(sc, (int, float)):
            raise InputError(ppath, f"scores.{sid}: expected a number, got {sc!r}")
    for sid, rel in p["maps"].items():
        if rel is not None:
            map_path(pred, ppath, sid, rel)
    return p, ppath


def prediction_entries(pred, preds: dict, ppath: Path, samples: dict, mpath: Path) -> list[Entry]:
    """Every scored sample of ``preds`` as an :class:`Entry`; an id the dataset lacks is an error."""
    out = []
    for sid, sc in preds["scores"].items():
        if sid not in samples:
            raise InputError(ppath, f"sample id {sid!r} is not in {mpath}")
        rel = preds["maps"].get(sid)
        out.append(Entry(samples[sid], float(sc), None if rel is None else map_path(pred, ppath, sid, rel)))
    return out


def read_map(path: Path) -> np.ndarray:
    """An anomaly map: bounded header, 2-D after squeezing, finite; float32 (H, W)."""
    check_image(path, "anomaly map")
    try:
        a = io.read_float_tiff(path)
    except OSError as e:
        raise InputError(path, f"cannot read TIFF ({e})") from e
    a = np.squeeze(a)
    if a.ndim != 2:
        raise InputError(path, f"anomaly map must be (H, W), got shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    bad = nonfinite_pixels(a)
    if bad:
        raise InputError(path, f"anomaly map contains NaN or infinite values ({bad} of {a.size} pixels)")
    return a


def map_dims(path: Path) -> tuple[int, int] | None:
    """(width, height) of an anomaly map from its header, bounded before decoding; None for
    a header no reader recognises."""
    check_image(path, "anomaly map")
    try:
        return image_dims(path)
    except Exception as e:  # noqa: BLE001 - any header error is bad input
        raise InputError(path, f"cannot read TIFF ({e})") from e


def map_pixels(path: Path) -> int:
    """Pixels of an anomaly map, from its header."""
    dims = map_dims(path)
    if dims is None:
        raise InputError(path, "cannot read TIFF (unrecognised header)")
    return dims[0] * dims[1]


def check_map(sample, mp: Path) -> None:
    """One map before any metric: bounds from the header, size = the sample's manifest
    ``size`` (so a wrong-size map is named, not its mask), then decoded once (2-D, finite)."""
    size = sample.size
    if size is not None:
        dims = map_dims(mp)
        if dims is not None and (dims[1], dims[0]) != size:
            raise InputError(mp, f"anomaly map is {dims[1]}x{dims[0]} (HxW) but sample {sample.id!r} is "
                                 f"{size[0]}x{size[1]} ({sample.manifest_path}: samples[{sample.index}].size)")
    read_map(mp)


def check_predictions(pred, data) -> list[Entry]:
    """Everything a reader relies on: predictions.json, its ids in the dataset ``data``, and
    every map (contained, bounded, the sample's size, 2-D, finite).  Returns the entries."""
    _, mpath, samples = load_samples(data)
    preds, ppath = read_predictions(pred)
    entries = prediction_entries(Path(pred), preds, ppath, samples, mpath)
    for e in entries:
        if e.map is not None:
            check_map(e.sample, e.map)
    return entries
