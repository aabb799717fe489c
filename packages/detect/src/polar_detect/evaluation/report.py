"""HTML evaluation report: metric tables, ROC/PR/PRO curves, the defect-wise coverage curve
and example overlays per class (true positives green, false positives red, false negatives
blue) next to the input modalities.  Figures are PNG files written beside report.html
(matplotlib, Agg backend; ``evaluation.figures``).

``build_report(metrics, curves, examples, out_dir)`` is called by ``polar_detect.evaluation.evaluate``;
``metrics`` is the metrics.json dict, ``curves`` the curves.json dict, ``examples`` a list of
``{"id", "class", "map", "mask", "pred", "modalities": [(name, array)]}``.
"""
from __future__ import annotations

import html
from pathlib import Path

from polar_render.io import write_bytes

from polar_detect.evaluation.figures import curve_figures, example_figures

SECTIONS = ("summary", "image-metrics", "pixel-metrics", "thresholded", "defect-wise-recall",
            "coverage-curve", "curves", "examples", "provenance")


class Raw(str):
    """A table cell that is already HTML (built here from escaped parts); anything else is text."""


def _fmt(x, nd=4):
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return html.escape(str(x))


def _table(rows, header=("metric", "value")):
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else _fmt(c)}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _ci(section: dict):
    """'[low, high]' of an interval stored as <metric>_ci_low/_ci_high, or None."""
    if section.get("auroc_ci_low") is None:
        return None
    return f"[{_fmt(section['auroc_ci_low'])}, {_fmt(section.get('auroc_ci_high'))}]"


def _threshold_status(th: dict) -> str:
    """One line: how much of the normal data the threshold flags, and whether that is degenerate."""
    d = th.get("degeneracy")
    if not d:
        return "n/a"
    px = "n/a" if d["normal_pixel_fraction"] is None else f"{100 * d['normal_pixel_fraction']:.2f} %"
    head = "DEGENERATE" if d["degenerate"] else "ok"
    return (f"{head}: flags {px} of normal pixels, {d['normal_images_flagged']} of {d['normal_images']} "
            f"normal images (degenerate above {100 * d['limit']:g} %)")


def _dependent(th: dict):
    """(cell formatter for values that depend on the threshold, banner HTML). With a degenerate
    threshold the values are struck and greyed with the reason; never shown as results."""
    if not th.get("degenerate"):
        return (lambda v: v), ""
    reason = html.escape((th.get("degeneracy") or {}).get("reason") or "degenerate threshold")

    def dep(v):
        if v is None or v == "":
            return v
        return Raw(f'<span class="trivial" title="{reason}"><s>{_fmt(v)}</s> (trivial)</span>')
    banner = Raw(f"<p class='degenerate'><b>Degenerate threshold</b> {_fmt(th.get('value'))} "
                 f"({_fmt(th.get('source'))}): {reason}. Struck, greyed values depend on it.</p>")
    return dep, banner


def _img(name, alt):
    return f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">' if name else "<p>not available</p>"


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{title}</h2>{body}</section>'


def _summary(m: dict, dep, banner) -> str:
    im, px, pro, sp = m["image"], m["pixel"], m["aupro"], m["spro"]
    part, th, tm = m.get("pixel_part") or {}, m.get("threshold") or {}, m.get("thresholded") or {}
    dw = m.get("defect_wise_recall") or {}
    return _section("summary", "Summary", _table([
        ("image AUROC", im.get("auroc")), ("image AUROC 95 % interval", _ci(im)), ("image AP", im.get("ap")),
        ("pixel AUROC", px.get("auroc")), ("pixel AUROC inside the part", part.get("auroc")),
        ("pixel AP", px.get("ap")),
        (f"AUPRO (FPR ≤ {pro.get('fpr_limit')})", pro.get("value")),
        (f"AU-sPRO (FPR ≤ {sp.get('fpr_limit', 0.05)})", sp.get("value")),
        ("threshold", _threshold_status(th)),
        ("pixel F1 at threshold", dep(tm.get("f1"))), ("mR_DW (defects)", dep(dw.get("mR_DW"))),
        ("mR_DW (impurities)", dep(dw.get("mR_DW_impurity")))]) + banner)


def _image_level(m: dict) -> str:
    im = m["image"]
    ci = im.get("auroc_ci") or {}
    return _section("image-metrics", "Image level", _table([
        ("images", im.get("n")), ("anomalous", im.get("n_anomalous")), ("normal", im.get("n_normal")),
        ("ignore-only images (left out)", im.get("n_ignored")),
        ("AUROC", im.get("auroc")), ("AUROC 95 % interval", _ci(im)),
        ("interval method", ci.get("method")),
        ("resamples, seed", f"{ci.get('n_resamples')}, {ci.get('seed')}" if im.get("auroc_ci") else None),
        ("AP", im.get("ap"))]))


def _pixel_level(m: dict) -> str:
    px, pro, sp = m["pixel"], m["aupro"], m["spro"]
    part, ign = m.get("pixel_part") or {}, m.get("ignore") or {}
    return _section("pixel-metrics", "Pixel level", _table([
        ("anomalous pixels", px.get("n_pos")), ("normal pixels", px.get("n_neg")),
        ("AUROC", px.get("auroc")), ("AUROC error bound", px.get("auroc_error_bound")),
        ("AP", px.get("ap")), ("exact AP lies in", f"[{_fmt(px.get('ap_lower'))}, {_fmt(px.get('ap_upper'))}]"),
        ("AUROC inside the part (object mask)", part.get("auroc")), ("AP inside the part", part.get("ap")),
        ("images with a part mask", part.get("n_images")),
        ("ignore pixels (left out of every pixel metric)", ign.get("n_ignore_pixels")),
        (f"AUPRO (FPR ≤ {pro.get('fpr_limit')}, normalised)", pro.get("value")),
        ("AUPRO error bound", pro.get("error_bound")), ("regions (connected components)", pro.get("n_regions")),
        ("AU-sPRO", sp.get("value")), ("AU-sPRO regions", sp.get("n_regions")),
        ("AU-sPRO note", sp.get("note"))]))


def _thresholded(m: dict, dep, banner) -> str:
    th, tm = m.get("threshold") or {}, m.get("thresholded") or {}
    return _section("thresholded", "Thresholded pixel metrics", _table([
        ("threshold", th.get("value")), ("chosen on", th.get("source")),
        ("validation F1", th.get("val_f1")), ("status", _threshold_status(th)),
        ("precision", dep(tm.get("precision"))),
        ("recall", dep(tm.get("recall"))), ("F1", dep(tm.get("f1"))), ("TP", tm.get("tp")), ("FP", tm.get("fp")),
        ("FN", tm.get("fn")), ("TN", tm.get("tn"))]) + banner)


def _defect_recall(m: dict, dep, banner) -> str:
    dw = m.get("defect_wise_recall") or {}
    rows = [(n, c["kind"], c["n_instances"], c["detected"], dep(c["recall"]), dep(c["pixel_coverage"]),
             dep(c["mean_instance_coverage"])) for n, c in (dw.get("per_class") or {}).items()]
    rows += [("mR_DW (defect classes)", "", "", "", dep(dw.get("mR_DW")), "", ""),
             ("mR_DW (impurity classes)", "", "", "", dep(dw.get("mR_DW_impurity")), "", "")]
    return _section("defect-wise-recall", "Defect-wise recall",
                    f"<p>An instance is detected when predicted-positive pixels cover at least "
                    f"{_fmt(100 * (dw.get('min_coverage') or 0.0), 1)} % of it (0 % = at least one pixel); "
                    "a prediction blob counts for every instance it overlaps.</p>" + _table(
                        rows, ("class", "kind", "instances", "detected", "R_DW", "pixel coverage",
                               "mean instance coverage")) + banner)


def _coverage(m: dict, figs: dict, dep, banner) -> str:
    cc = (m.get("defect_wise_recall") or {}).get("coverage_curve")
    table = ""
    if cc:
        rows = [(n,) + tuple(dep(v) for v in y) for n, y in (cc.get("per_class") or {}).items()]
        table = _table(rows, ("class",) + tuple(f"{100 * c:g}%" for c in cc["coverage_thresholds"]))
    return _section("coverage-curve", "Recall versus coverage",
                    _img(figs.get("coverage"), "coverage curve") + table + banner)


def _examples(ex_files, banner) -> str:
    shown = "".join(f"<h3>{html.escape(ex['class'])} — {html.escape(ex['id'])}</h3>" + _img(f, ex["class"])
                    for ex, f in ex_files)
    return _section("examples", "Examples per class",
                    '<p>Overlay: true positives <span style="color:#0a0">green</span>, false positives '
                    '<span style="color:#d00">red</span>, false negatives <span style="color:#05f">blue</span>.</p>'
                    + (shown or "<p>no example</p>") + banner)


def _provenance(m: dict) -> str:
    ap_ = m.get("approximation") or {}
    return _section("provenance", "Provenance and approximations", _table([
        ("dataset manifest", m.get("dataset")), ("manifest sha256", m.get("manifest_sha256")),
        ("manifest sha256 in predictions", m.get("predictions_manifest_sha256")),
        ("predictions", m.get("predictions")), ("sweep mode", ap_.get("mode")),
        ("bins", ap_.get("bins")), ("pixels", ap_.get("n_pixels")), ("note", ap_.get("note"))]))


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
         "td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:4px}"
         ".warn{background:#fff3cd;padding:.5em;border:1px solid #e0c060}"
         ".trivial{color:#999}.degenerate{background:#f3f3f3;color:#555;padding:.4em;border-left:4px solid #c00}")


def _header(m: dict) -> str:
    out = (f"<h1>Evaluation: {_fmt(m.get('model'))} on {_fmt(m.get('dataset_name'))} "
           f"({_fmt(m.get('split'))})</h1>")
    if m.get("warnings"):
        out += "<div class='warn'><b>Warnings</b><ul>" + "".join(
            f"<li>{html.escape(w)}</li>" for w in m["warnings"]) + "</ul></div>"
    return out


def build_report(metrics: dict, curves: dict, examples: list, out_dir) -> Path:
    """Write the figures and ``out_dir/report.html`` (atomic: a reader never sees half a
    report); returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs = curve_figures(metrics, curves, out_dir)
    ex_files = example_figures(examples, (metrics.get("threshold") or {}).get("value"), out_dir)
    dep, banner = _dependent(metrics.get("threshold") or {})
    parts = [_header(metrics), _summary(metrics, dep, banner), _image_level(metrics), _pixel_level(metrics),
             _thresholded(metrics, dep, banner), _defect_recall(metrics, dep, banner),
             _coverage(metrics, figs, dep, banner),
             _section("curves", "ROC, precision-recall and PRO curves",
                      _img(figs.get("roc"), "ROC") + _img(figs.get("pr"), "PR") + _img(figs.get("pro"), "PRO")),
             _examples(ex_files, banner), _provenance(metrics)]
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>polar_detect evaluation</title>"
           f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    path = out_dir / "report.html"
    write_bytes(path, doc.encode())
    return path
