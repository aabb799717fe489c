"""Evaluate a model's predictions against a dataset: metrics.json + report.html.

    python -m polar_detect.evaluation.evaluate --pred DIR --data DIR --out DIR [--val-pred DIR]

Inputs follow packages/detect/README.md: ``<data>/manifest.json`` (section 2) and
``<pred>/predictions.json`` + float32 TIFF maps (section 4).  Samples of the predictions'
split (default ``test``) are evaluated; prediction entries for ``val`` samples (in --pred or
--val-pred) choose the F1-maximising pixel threshold.  Without validation predictions the
threshold is the one stored in predictions.json, else it is chosen on the evaluated split
itself and flagged ``"source": "test (optimistic)"``.

MVTec LOCO regions (read when present, as ``polar_detect.dataset import-loco`` writes them):
each instance of a sample may carry ``"region_mask": "rel/path.png"`` (one PNG per defect
region, nonzero = region) with ``"saturation_threshold"`` and ``"relative_saturation"``
(LOCO ``defects_config.json`` semantics; a resolved ``"saturation_px"`` is used only when the
raw pair is absent).  Also accepted: a sample-level ``"regions": [{"mask", "class",
"saturation_threshold", "relative_saturation"}]`` list, with missing saturation fields looked
up by class in the manifest-level ``"defects_config"``.  With no region anywhere, sPRO is
reported as null.

Ignore regions (datasets built with ``--min-visible-px``/``--min-contrast``): a sample's
``ignore`` mask (0/255 PNG) marks pixels that are neither normal nor anomalous; they are left
out of every pixel metric (AUROC, AP, AUPRO, sPRO, the F1 threshold on val, thresholded F1).
Samples with ``"ignore_image": true`` (every anomaly instance ignored) are left out of the
image-level metrics (``image.n_ignored`` counts them); their other pixels stay normal pixels.

Added for the issue-13 benchmark: ``image.auroc_ci_low``/``auroc_ci_high`` (stratified
percentile bootstrap over images, ``--bootstrap`` resamples, default 1000, ``--bootstrap-seed``
0, 95 %); ``pixel_part`` = pixel AUROC/AP over the part only (sample ``object_mask``, as
``dataset build`` from renders stores it; null with a note without it); and
``instance_detection_rate`` = {class: detected / annotated instances} at the chosen threshold
(an instance is detected when >= 1 predicted-positive pixel, and >= ``--min-coverage`` of its
area, lies inside it; see ``metrics/defect_recall.py``).

The pixel sweeps are exact while the evaluated pixels fit ``--max-exact-pixels``; above that
they use fixed-bin histograms (``--bins``) over the global score range and every affected
number is reported with its error bound.  Bad input exits with status 2 and names the file.

Layout: this module reads the inputs (``dataset.samples`` for the manifest,
``polar_detect.predictions`` for predictions.json and the maps) and assembles metrics.json;
``image_level`` (image AUROC/AP, per class and group), ``thresholds`` (pixel threshold, sweep
mode), ``pixels`` (every pixel metric), ``examples`` and ``report``/``figures`` (report.html).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from polar_render.io import write_bytes
from polar_render.progress import progress

from polar_detect.dataset.errors import InputError
from polar_detect.dataset.manifest import sha256_file
from polar_detect.dataset.samples import load_samples
from polar_detect.evaluation.examples import finish_examples
from polar_detect.evaluation.image_level import image_metrics
from polar_detect.evaluation.pixels import PixelPass
from polar_detect.evaluation.report import build_report
from polar_detect.evaluation.thresholds import choose_threshold, flag_degenerate, sweep_settings
from polar_detect.metrics._curve import DEFAULT_BINS, DEFAULT_MAX_EXACT
from polar_detect.metrics.bootstrap import DEFAULT_RESAMPLES
from polar_detect.predictions import check_map, prediction_entries, read_map, read_predictions

FORMAT = "polar_detect.metrics/1"

APPROX_NOTE = {"exact": "exact sweeps over every distinct score",
               "hist": "fixed-bin histograms; pixel AUROC within +-pixel.auroc_error_bound, exact AP in "
                       "[pixel.ap_lower, pixel.ap_upper], AUPRO/sPRO within +-error_bound; the F1-max "
                       "threshold and every thresholded metric are exact (candidate bins rescanned: "
                       "identical to exact mode)"}
IGNORE_NOTE = ("ignore pixels are left out of every pixel metric; ignore-only images "
               "(manifest ignore_image) out of the image-level metrics")


@dataclass
class Inputs:
    """What one evaluation reads: the dataset, the predictions and the entries to score."""
    manifest: dict
    mpath: Path
    manifest_sha: str
    preds: dict
    ppath: Path
    split: str
    test: list
    val: list
    n_missing: int


class Warnings(list):
    """Warnings of a run, kept for metrics.json and printed to stderr unless quiet."""

    def __init__(self, quiet: bool):
        super().__init__()
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        self.append(msg)
        if not self.quiet:
            print(f"warning: {msg}", file=sys.stderr)


def _nan_to_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, np.generic):
        return _nan_to_none(x.item())
    return x


def _write_json(path: Path, obj, indent=None) -> None:
    """Atomic JSON write (``polar_render.io.write_bytes``: temporary file, then rename)."""
    import json
    write_bytes(path, json.dumps(obj, indent=indent).encode())


# ------------------------------------------------------------------ reading
def _read_inputs(pred_dir: Path, data_dir: Path, val_pred_dir, strict: bool, warn) -> Inputs:
    """Dataset + predictions, the manifest checksum compared, entries selected."""
    man, mpath, samples = load_samples(data_dir)
    manifest_sha = sha256_file(mpath)
    preds, ppath = read_predictions(pred_dir)
    if preds.get("manifest_sha256") and preds["manifest_sha256"] != manifest_sha:
        if strict:
            raise InputError(ppath, "manifest_sha256 does not match the dataset manifest")
        warn(f"{ppath}: manifest_sha256 {preds['manifest_sha256'][:12]}... does not match {mpath} "
             f"({manifest_sha[:12]}...)")
    split, test, val, n_missing = _select_entries(preds, ppath, pred_dir, samples, mpath, val_pred_dir, warn)
    return Inputs(man, mpath, manifest_sha, preds, ppath, split, test, val, n_missing)


def _select_entries(preds, ppath, pred_dir, samples, mpath, val_pred_dir, warn):
    """(split, evaluated entries, validation entries, n_missing); an entry is (sample, score, map path)."""
    split = preds.get("split") or "test"
    all_entries = prediction_entries(pred_dir, preds, ppath, samples, mpath)
    test = [e for e in all_entries if e[0].split == split]
    val = [e for e in all_entries if e[0].split == "val" and split != "val"]
    if val_pred_dir is not None:
        vp, vpath = read_predictions(Path(val_pred_dir))
        seen = {e[0].id for e in val}
        val += [e for e in prediction_entries(Path(val_pred_dir), vp, vpath, samples, mpath)
                if e[0].split == "val" and e[0].id not in seen]
    if not test:
        raise InputError(ppath, f"no prediction for any sample of split {split!r} in {mpath}")
    n_missing = sum(1 for s in samples.values() if s.split == split) - len(test)
    if n_missing:
        warn(f"{n_missing} {split} samples of the manifest have no prediction; evaluated {len(test)}")
    return split, test, val, n_missing


def _check_inputs(entries) -> None:
    """Before any metric: each map (``predictions.check_map``) and each sample's ground-truth
    files (paths, bounds, size, sha256: ``Sample.check_files``).  Maps are single-channel
    float32, so the extra decode costs about as much as one more metric pass over them."""
    for s, _, mp in entries:
        check_map(s, mp)
        s.check_files()


# ------------------------------------------------------------------ evaluation
def _pixel_metrics(inp: Inputs, opts: dict, warn):
    """(PixelPass after the evaluated split, threshold info, sweep kwargs, n pixels)."""
    test_px = [e for e in inp.test if e[2] is not None]
    val_px = [e for e in inp.val if e[2] is not None]
    if len(test_px) < len(inp.test):
        warn(f"{len(inp.test) - len(test_px)} evaluated samples have no anomaly map (pixel metrics skip them)")
    _check_inputs(test_px + val_px)
    kw, total_px = sweep_settings(test_px, val_px, opts["bins"], opts["max_exact_pixels"])
    thr_info = choose_threshold(val_px, kw, opts["threshold"], inp.preds, warn)
    px = PixelPass(kw, opts["fpr_limit"], opts["spro_fpr_limit"], opts["min_coverage"], inp.manifest.get("classes"),
                   any(e[0].has_regions() for e in test_px), thr_info.get("value") if thr_info else None)
    for s, _, mp in progress(test_px, desc=f"evaluating {inp.split}"):
        px.add(s, read_map(mp), mp)
    if px.n_no_mask:
        warn(f"{px.n_no_mask} anomalous samples have no mask (left out of the pixel metrics)")
    if not thr_info:
        warn("no validation predictions and no stored threshold: choosing the F1-max threshold on the "
             "evaluated split (optimistic)")
        thr_info = px.threshold_on_test()
    return px, thr_info, kw, total_px


def _record(inp: Inputs, image, results, thr_info, px, kw, total_px, opts, warnings) -> dict:
    """metrics.json (NaN written as null)."""
    preds, sha = inp.preds, inp.manifest_sha
    return _nan_to_none({
        "format": FORMAT, "model": preds.get("model"), "dataset": str(inp.mpath),
        "dataset_name": inp.manifest.get("name"), "manifest_sha256": sha,
        "predictions_manifest_sha256": preds.get("manifest_sha256"),
        "manifest_sha256_match": (preds.get("manifest_sha256") == sha) if preds.get("manifest_sha256") else None,
        "predictions": str(inp.ppath), "split": inp.split, "n_missing_predictions": inp.n_missing,
        "image": image, **results, "threshold": thr_info,
        "ignore": {"n_ignore_images": image["n_ignored"], "n_images_with_ignore_pixels": px.n_ignore_maps,
                   "n_ignore_pixels": px.n_ignore_px, "rules": inp.manifest.get("ignore_rules"),
                   "note": IGNORE_NOTE},
        "approximation": {
            "mode": kw["mode"], "bins": opts["bins"] if kw["mode"] == "hist" else None,
            "value_range": kw["value_range"], "max_exact_pixels": opts["max_exact_pixels"], "n_pixels": total_px,
            "note": APPROX_NOTE["hist" if kw["mode"] == "hist" else "exact"]},
        "warnings": warnings,
    })


def evaluate(pred_dir, data_dir, out_dir, val_pred_dir=None, *, bins=DEFAULT_BINS,
             max_exact_pixels=DEFAULT_MAX_EXACT, fpr_limit=0.3, spro_fpr_limit=0.05,
             min_coverage=0.0, threshold=None, strict=False, report=True, quiet=False,
             n_bootstrap=DEFAULT_RESAMPLES, bootstrap_seed=0) -> dict:
    """Evaluate ``pred_dir`` against ``data_dir``; writes metrics.json, curves.json and (with
    ``report``) report.html + figures into ``out_dir``; returns the metrics dict."""
    out_dir = Path(out_dir)
    opts = dict(bins=bins, max_exact_pixels=max_exact_pixels, fpr_limit=fpr_limit, threshold=threshold,
                spro_fpr_limit=spro_fpr_limit, min_coverage=min_coverage)
    warn = Warnings(quiet)
    inp = _read_inputs(Path(pred_dir), Path(data_dir), val_pred_dir, strict, warn)
    image, curves = image_metrics(inp.test, inp.ppath, n_bootstrap, bootstrap_seed)
    px, thr_info, kw, total_px = _pixel_metrics(inp, opts, warn)
    px.curves(curves)
    results = px.results()
    flag_degenerate(thr_info, results, px, warn)
    metrics = _record(inp, image, results, thr_info, px, kw, total_px, opts, list(warn))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "metrics.json", metrics, indent=2)
    _write_json(out_dir / "curves.json", _nan_to_none(curves))
    if report:
        build_report(metrics, curves, finish_examples(px.examples), out_dir)
    return metrics


# ------------------------------------------------------------------ CLI
def option_error(a) -> str | None:
    """The first out-of-range option (a one-line message naming it), checked before any work."""
    checks = [
        ("--fpr-limit", a.fpr_limit, 0 < a.fpr_limit <= 1, "in (0, 1]"),
        ("--spro-fpr-limit", a.spro_fpr_limit, 0 < a.spro_fpr_limit <= 1, "in (0, 1]"),
        ("--min-coverage", a.min_coverage, 0 <= a.min_coverage <= 1, "in [0, 1]"),
        ("--bins", a.bins, a.bins >= 2, ">= 2"),
        ("--max-exact-pixels", a.max_exact_pixels, a.max_exact_pixels >= 0, ">= 0"),
        ("--bootstrap", a.bootstrap, a.bootstrap >= 0, ">= 0"),
        ("--threshold", a.threshold, a.threshold is None or math.isfinite(a.threshold), "a finite number"),
    ]
    for flag, value, ok, what in checks:
        if not ok:
            return f"{flag} {value}: must be {what}"
    return None


def summary(m: dict, data, where) -> str:
    """The console summary; metrics that depend on a degenerate threshold are shown in
    brackets as trivial, with the reason on a second line, never as plain results."""
    def f(x):
        return "n/a" if x is None else f"{x:.4f}"
    th = m.get("threshold") or {}
    bad = bool(th.get("degenerate"))

    def dep(x):
        return f"({f(x)}: trivial, degenerate threshold)" if bad else f(x)
    dw = m["defect_wise_recall"] or {}
    line = (f"{m['model'] or 'model'} on {m['dataset_name'] or data}/{m['split']}: "
            f"image AUROC {f(m['image']['auroc'])}"
            + (f" [{f(m['image'].get('auroc_ci_low'))}, {f(m['image'].get('auroc_ci_high'))}]"
               if "auroc_ci_low" in m["image"] else "")
            + f", pixel AUROC {f(m['pixel']['auroc'])} (part {f(m['pixel_part'].get('auroc'))}), "
            f"AUPRO@{m['aupro']['fpr_limit']} {f(m['aupro'].get('value'))}, "
            f"F1 {dep((m['thresholded'] or {}).get('f1'))}, mR_DW {dep(dw.get('mR_DW'))} "
            f"-> report: {os.fspath(where)}")
    if bad:
        line += (f"\nDEGENERATE THRESHOLD {th['value']:.6g} ({th.get('source')}): "
                 f"{th['degeneracy']['reason']}")
    return line


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m polar_detect.evaluation.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pred", required=True, type=Path, help="predictions dir (predictions.json + maps/)")
    ap.add_argument("--data", required=True, type=Path, help="dataset dir (manifest.json)")
    ap.add_argument("--out", required=True, type=Path, help="output dir for metrics.json, report.html, PNGs")
    ap.add_argument("--val-pred", type=Path, default=None, help="predictions on the val split (threshold)")
    ap.add_argument("--threshold", type=float, default=None, help="override the pixel threshold")
    ap.add_argument("--fpr-limit", type=float, default=0.3, help="AUPRO FPR limit (default 0.3)")
    ap.add_argument("--spro-fpr-limit", type=float, default=0.05, help="AU-sPRO FPR limit (default 0.05)")
    ap.add_argument("--min-coverage", type=float, default=0.0,
                    help="defect-wise recall coverage fraction (default 0: at least one pixel)")
    ap.add_argument("--bins", type=int, default=DEFAULT_BINS, help="histogram bins in memory-bounded mode")
    ap.add_argument("--max-exact-pixels", type=int, default=DEFAULT_MAX_EXACT,
                    help="exact sweeps up to this many pixels, histograms above")
    ap.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES,
                    help="stratified bootstrap resamples for the image AUROC 95%% interval (0: none)")
    ap.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resamples")
    ap.add_argument("--strict", action="store_true", help="exit 2 when manifest_sha256 does not match")
    ap.add_argument("--no-report", action="store_true", help="write metrics.json only")
    a = ap.parse_args(argv)
    bad = option_error(a)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    try:
        m = evaluate(a.pred, a.data, a.out, a.val_pred, bins=a.bins, max_exact_pixels=a.max_exact_pixels,
                     fpr_limit=a.fpr_limit, spro_fpr_limit=a.spro_fpr_limit, min_coverage=a.min_coverage,
                     threshold=a.threshold, strict=a.strict, report=not a.no_report,
                     n_bootstrap=a.bootstrap, bootstrap_seed=a.bootstrap_seed)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    where = a.out / ("report.html" if not a.no_report else "metrics.json")
    print(summary(m, a.data, where))
    return 0


if __name__ == "__main__":
    sys.exit(main())
