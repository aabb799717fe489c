"""Polar-Ano eq. 4 over per-input predictions: ``A = (1/|I|) sum_i A_i`` (issue 13).

Polar-Ano trains one model per input i in I (R, phi, rho, n) and averages the per-input
anomaly maps. This module combines existing predictions directories (contract section 4,
one per input, same dataset and split) into one, so it works for any model that writes
that contract (``patchcore predict``, ``draem predict --inputs R``, ...).

Departure from the paper (``standardise="normal"``, the default): DRÆM's maps are
segmentation probabilities in [0, 1], directly comparable across inputs; PatchCore's are
nearest-neighbour feature distances whose scale depends on the input (a DoLP model's
distances may be several times an intensity model's), so a plain mean would be dominated by
one input. Each input's map is therefore standardised first with statistics of that
input's own *normal* images before averaging::

    A(x) = (1/|I|) sum_i (A_i(x) - mu_i) / sigma_i

where mu_i and sigma_i are the mean and standard deviation over all pixels of input i's
maps of the label-0 samples of ``stats_split`` (default ``val``: predict with
``--split test,val``) in the predictions directory, labels read from the dataset
manifest. The validation normal images are never in any model's memory bank, so
their distances are the honest normal-pixel distribution (training images would give
too-small distances). A z-score is an affine map per input, so each input's own ranking
(and thus its own AUROC) is unchanged; only the relative weighting across inputs changes.
``standardise="none"`` is the paper's eq. 4 exactly (for DRÆM-like [0, 1] maps).

Image score: ``score="max"`` (default) is the maximum of the averaged map, PatchCore's own
image-score rule applied to the combined map; ``score="mean"`` averages the per-input image
scores, each standardised with the mean/std of the same normal images' scores (the image-level
analogue; with ``standardise="none"`` the plain mean, as ``draem.polar.PolarDRAEM`` does).

The output has ``threshold: null`` (the inputs' thresholds live in other units;
``polar_detect.evaluation.evaluate`` chooses one on the val entries, which are averaged too) and records
every input and its statistics under ``"average"``.

CLI: ``python -m polar_detect.models.patchcore average --pred DIR --pred DIR ... --out DIR``
(also ``python -m polar_detect.evaluation.average``). Mixed datasets, splits, sample sets or map
sizes are refused (exit 2).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
from polar_render.io import atomic_dir
from polar_render.progress import progress as progress_bar

from polar_detect.dataset.errors import DatasetError, InputError
from polar_detect.dataset.manifest import read_manifest
from polar_detect.dataset.sample_images import check_image
from polar_detect.predictions import PredictionsWriter, map_path, read_map, read_predictions

STANDARDISE = ("normal", "none")
SCORES = ("max", "mean")


class AverageError(ValueError):
    """Predictions that cannot be averaged; the message names the directory or file."""


# ---------------------------------------------------------------------------- core maths
def standardise(a: np.ndarray, stats: dict | None) -> np.ndarray:
    """``(a - mean) / std`` in float64 (``stats=None``: unchanged)."""
    a = np.asarray(a, dtype=np.float64)
    return a if stats is None else (a - stats["mean"]) / stats["std"]


def combine_maps(maps, stats=None) -> np.ndarray:
    """Eq. 4 with per-input standardisation: mean over inputs of ``standardise(map_i, stats_i)``.
    ``maps``: list of (H, W) arrays (one per input); ``stats``: list of dicts or None."""
    stats = stats if stats is not None else [None] * len(maps)
    if len(stats) != len(maps) or not maps:
        raise AverageError("combine_maps: need one statistic per map and at least one map")
    return np.mean([standardise(m, s) for m, s in zip(maps, stats)], axis=0)


def map_stats(maps) -> dict:
    """Mean and standard deviation over every pixel of a list of maps (float64)."""
    n = sum(int(np.asarray(m).size) for m in maps)
    if n == 0:
        raise AverageError("no pixels to compute statistics on")
    s = sum(float(np.sum(np.asarray(m, dtype=np.float64))) for m in maps)
    mean = s / n
    var = sum(float(np.sum((np.asarray(m, dtype=np.float64) - mean) ** 2)) for m in maps) / n
    return {"mean": mean, "std": float(np.sqrt(var)), "n_pixels": n}


# ---------------------------------------------------------------------------- I/O
def load_predictions(pred_dir) -> dict:
    """``predictions.json`` read and checked by ``predictions.read_predictions`` (the contract's
    one reader), plus what averaging needs: predictions exist, scores and maps name the same samples."""
    try:
        p, path = read_predictions(Path(pred_dir))
    except InputError as e:
        raise AverageError(str(e)) from None
    if not p["scores"]:
        raise AverageError(f"{path}: no predictions")
    if set(p["scores"]) != set(p["maps"]):
        raise AverageError(f"{path}: 'scores' and 'maps' name different samples")
    missing = sorted(sid for sid, rel in p["maps"].items() if rel is None)
    if missing:
        raise AverageError(f"{path}: maps.{missing[0]} is null; averaging needs a map for every sample")
    return p


def _read_map(pred_dir: Path, pred: dict, sid: str) -> np.ndarray:
    """The map of sample ``sid`` through ``predictions.map_path`` (resolved inside ``pred_dir``)
    and ``predictions.read_map`` (missing, oversized, unreadable, non-2-D or non-finite maps
    refused), as float64."""
    try:
        path = map_path(pred_dir, pred_dir / "predictions.json", sid, pred["maps"][sid])
        return read_map(path).astype(np.float64)
    except InputError as e:
        raise AverageError(str(e)) from None


def _check_map_headers(preds: list[dict], dirs: list[Path]) -> None:
    """Every map resolves inside its directory, exists and is within POLAR_MAX_IMAGE_PIXELS
    (header only), before anything is read or written."""
    for p, d in zip(preds, dirs):
        for sid, rel in p["maps"].items():
            try:
                check_image(map_path(d, d / "predictions.json", sid, rel), "anomaly map")
            except InputError as e:
                raise AverageError(str(e)) from None


def _check_same(preds: list[dict], dirs: list[Path]) -> None:
    """Same dataset (manifest sha256, else path), same split, same samples."""
    first, d0 = preds[0], dirs[0]
    for p, d in zip(preds[1:], dirs[1:]):
        a, b = first.get("manifest_sha256"), p.get("manifest_sha256")
        if a and b:
            if a != b:
                raise AverageError(f"{d}: dataset differs from {d0} (manifest sha256 {b[:12]} vs {a[:12]}; "
                                   f"{p.get('dataset')} vs {first.get('dataset')})")
        elif Path(str(p.get("dataset"))).resolve() != Path(str(first.get("dataset"))).resolve():
            raise AverageError(f"{d}: dataset {p.get('dataset')!r} differs from {d0}'s {first.get('dataset')!r}")
        if p.get("split") != first.get("split"):
            raise AverageError(f"{d}: split {p.get('split')!r} differs from {d0}'s {first.get('split')!r}")
        if set(p["scores"]) != set(first["scores"]):
            only_a = sorted(set(first["scores"]) - set(p["scores"]))[:5]
            only_b = sorted(set(p["scores"]) - set(first["scores"]))[:5]
            raise AverageError(f"{d}: predicts other samples than {d0} (only in {d0}: {only_a}, "
                               f"only in {d}: {only_b}; predict every input with the same --split)")


def _labels(pred: dict, pred_dir: Path) -> dict[str, tuple[str, int]]:
    """{sample id: (split, label)} from the manifest the predictions name (sha256 checked)."""
    mpath = Path(str(pred.get("dataset")))
    if mpath.is_dir():
        mpath = mpath / "manifest.json"
    try:
        raw = mpath.read_bytes()
    except OSError:
        raise AverageError(f"{pred_dir / 'predictions.json'}: its dataset manifest {mpath} is not readable "
                           f"(needed for the normal samples' statistics; --standardise none needs none)") from None
    sha = pred.get("manifest_sha256")
    if sha and hashlib.sha256(raw).hexdigest() != sha:
        raise AverageError(f"{mpath}: changed since {pred_dir} was predicted (sha256 mismatch)")
    try:
        man = read_manifest(mpath)     # the one manifest reader: structure, splits, labels checked
    except DatasetError as e:
        raise AverageError(f"{mpath}: not a dataset manifest ({e})") from None
    return {str(s["id"]): (str(s["split"]), int(s["label"])) for s in man["samples"]}


# ---------------------------------------------------------------------------- driver
def average_predictions(pred_dirs, out_dir, standardise: str = "normal", stats_split: str = "val",
                        score: str = "max", name: str | None = None, progress: bool = False) -> dict:
    """Combine per-input predictions directories into ``out_dir/predictions.json`` + maps.

    Returns the written predictions dict. Raises :class:`AverageError` on mixed inputs."""
    if standardise not in STANDARDISE:
        raise AverageError(f"standardise must be one of {STANDARDISE}, got {standardise!r}")
    if score not in SCORES:
        raise AverageError(f"score must be one of {SCORES}, got {score!r}")
    dirs = [Path(d) for d in pred_dirs]
    if not dirs:
        raise AverageError("no predictions directory given (--pred DIR, once per input)")
    seen = {}
    for d in dirs:
        key = d.resolve()
        if key in seen:
            raise AverageError(f"{d}: given twice (would weigh one input double)")
        seen[key] = d
    out = Path(out_dir)
    if out.resolve() in seen:
        raise AverageError(f"{out}: the output directory is one of the inputs")
    preds = [load_predictions(d) for d in dirs]
    _check_same(preds, dirs)
    _check_map_headers(preds, dirs)
    ids = sorted(preds[0]["scores"])

    stats: list[dict | None] = [None] * len(dirs)
    if standardise == "normal":
        labels = _labels(preds[0], dirs[0])
        normal = [i for i in ids if labels.get(i) == (stats_split, 0)]
        if not normal:
            raise AverageError(
                f"{dirs[0]}: no label-0 '{stats_split}' samples among the predictions to standardise with; "
                f"predict each input with --split {preds[0].get('split') or 'test'},{stats_split}")
        for k, (p, d) in enumerate(zip(preds, dirs)):
            st = map_stats([_read_map(d, p, i) for i in normal])
            if not np.isfinite(st["std"]) or st["std"] <= 0:
                raise AverageError(f"{d}: maps of the normal '{stats_split}' samples are constant "
                                   f"(std {st['std']}); cannot standardise")
            sc = np.array([float(p["scores"][i]) for i in normal])
            st.update(score_mean=float(sc.mean()), score_std=float(sc.std()), n_images=len(normal),
                      split=stats_split)
            if score == "mean" and not st["score_std"] > 0:
                raise AverageError(f"{d}: image scores of the {len(normal)} normal '{stats_split}' samples "
                                   f"do not vary; --score mean cannot standardise them (use --score max)")
            stats[k] = st

    with atomic_dir(out) as tmp:   # built under a temporary name; no stale map of an earlier run survives
        result = _write_average(tmp, preds, dirs, ids, stats, standardise, stats_split, score, name, progress)
    return result


def _image_score(a: np.ndarray, preds, stats, sid: str, score: str) -> float:
    """Image score of the averaged map ``a``: its max, or the mean standardised input score."""
    if score == "max":
        return float(a.max())
    return float(np.mean([(float(p["scores"][sid]) - (s["score_mean"] if s else 0.0)) / (s["score_std"] if s else 1.0)
                          for p, s in zip(preds, stats)]))


def _write_average(out: Path, preds, dirs, ids, stats, standardise, stats_split, score, name, progress) -> dict:
    """Averaged maps and ``predictions.json`` of every sample into ``out`` (a fresh directory)."""
    w = PredictionsWriter(out)
    for sid in progress_bar(ids, desc="average", enabled=progress):
        each = [_read_map(d, p, sid) for p, d in zip(preds, dirs)]
        shapes = {m.shape for m in each}
        if len(shapes) != 1:
            raise AverageError(f"sample {sid}: map sizes differ across inputs "
                               f"{dict(zip(map(str, dirs), (m.shape for m in each)))}")
        a = combine_maps(each, stats)
        w.add(sid, _image_score(a, preds, stats, sid, score), a.astype(np.float32))
    inputs = [{"pred": str(d), "model": p.get("model"), "modality": p.get("modality"), "stats": s}
              for p, d, s in zip(preds, dirs, stats)]
    label = "+".join(str(p.get("modality") or p.get("model") or d.name) for p, d in zip(preds, dirs))
    return w.finish(model=name or f"average({label})", dataset=preds[0].get("dataset"),
                    manifest_sha256=preds[0].get("manifest_sha256"), split=preds[0].get("split"), threshold=None,
                    average={"equation": "Polar-Ano eq. 4" + (", per-input z-score" if stats[0] else ""),
                             "standardise": standardise, "stats_split": stats_split if stats[0] else None,
                             "score": score, "inputs": inputs})


# ---------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--pred", action="append", required=True, metavar="DIR",
                   help="predictions directory of one input (repeat once per input)")
    p.add_argument("--out", required=True, help="output predictions directory")
    p.add_argument("--standardise", choices=STANDARDISE, default="normal",
                   help="normal: z-score each input's maps with its normal --stats-split samples "
                        "(default); none: plain mean (Polar-Ano eq. 4 as published)")
    p.add_argument("--stats-split", default="val",
                   help="split whose label-0 samples give each input's statistics (default val)")
    p.add_argument("--score", choices=SCORES, default="max",
                   help="image score: max of the averaged map (default) or mean of standardised scores")
    p.add_argument("--name", default=None, help="model name in predictions.json")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args) -> dict:
    res = average_predictions(args.pred, args.out, args.standardise, args.stats_split, args.score,
                              args.name, progress=not args.quiet)
    print(f"averaged {len(args.pred)} inputs over {len(res['scores'])} samples "
          f"({args.standardise} standardisation, score {args.score}); wrote {Path(args.out) / 'predictions.json'}")
    return res


def main(argv=None) -> int:
    ap = add_arguments(argparse.ArgumentParser(prog="python -m polar_detect.evaluation.average",
                                               description=__doc__.split("\n\n")[0]))
    args = ap.parse_args(argv)
    try:
        run(args)
    except AverageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
