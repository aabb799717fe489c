"""HTML evaluation report: metric tables, ROC/PR/PRO curves, the defect-wise coverage curve
and example overlays per class (true positives green, false positives red, false negatives
blue) next to the input modalities.  Figures are PNG files written beside report.html
(matplotlib, Agg backend).

``build_report(metrics, curves, examples, out_dir)`` is called by ``polar_detect.evaluate``;
``metrics`` is the metrics.json dict, ``curves`` the curves.json dict, ``examples`` a list of
``{"id", "class", "map", "mask", "pred", "modalities": [(name, array)]}``.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

SECTIONS = ("summary", "image-metrics", "pixel-metrics", "thresholded", "defect-wise-recall",
            "coverage-curve", "curves", "examples", "provenance")


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


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


def _display(a: np.ndarray) -> np.ndarray:
    """Modality array -> (H, W, 3) float in [0, 1] (3 channels as RGB, else the first channel)."""
    a = np.asarray(a, np.float32)
    if a.ndim == 3:
        a = a[..., :3] if a.shape[2] >= 3 else a[..., 0]
    lo, hi = np.percentile(a, 1), np.percentile(a, 99)
    a = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)


def overlay(base: np.ndarray, mask: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """TP green, FP red, FN blue over a dimmed grey base (H, W, 3) in [0, 1]."""
    g = base.mean(axis=2) if base.ndim == 3 else base
    out = np.repeat((0.5 * g)[..., None], 3, axis=2)
    tp, fp, fn = pred & mask, pred & ~mask, ~pred & mask
    out[tp] = (0.0, 0.85, 0.0)
    out[fp] = (0.9, 0.0, 0.0)
    out[fn] = (0.0, 0.3, 1.0)
    return out


def _curve_fig(plt, path, series, xlabel, ylabel, title, xlim=None, diag=False, vline=None, marker=None):
    fig, ax = plt.subplots(figsize=(4.8, 4.0), dpi=100)
    for label, x, y in series:
        ax.plot(x, y, label=label, lw=1.6, marker=marker, ms=3)
    if diag:
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    if vline is not None:
        ax.axvline(vline, ls="--", c="grey", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if xlim:
        ax.set_xlim(*xlim)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def _example_fig(plt, path, ex, threshold):
    mods = ex.get("modalities") or []
    panels = [(n, _display(a)) for n, a in mods]
    base = panels[0][1] if panels else np.zeros(ex["map"].shape + (3,), np.float32)
    if base.shape[:2] != ex["mask"].shape:
        import cv2
        base = cv2.resize(base, ex["mask"].shape[::-1], interpolation=cv2.INTER_AREA)
    n = len(panels) + 2
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.9), dpi=100)
    axes = np.atleast_1d(axes)
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    axes[-2].imshow(ex["map"], cmap="inferno", interpolation="nearest")
    axes[-2].set_title("anomaly map", fontsize=9)
    axes[-1].imshow(overlay(base, ex["mask"], ex["pred"]), interpolation="nearest")
    axes[-1].set_title(f"score >= {threshold:.4g}" if threshold is not None else "overlay", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"{ex['class']} - sample {ex['id']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


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


def build_report(metrics: dict, curves: dict, examples: list, out_dir) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plt = _plt()
    figs = {}
    if "image_roc" in curves or "pixel_roc" in curves:
        s = [(f"{k.split('_')[0]} (AUROC {_fmt(metrics[k.split('_')[0]].get('auroc'), 3)})",
              curves[k]["fpr"], curves[k]["tpr"]) for k in ("image_roc", "pixel_roc") if k in curves]
        figs["roc"] = _curve_fig(plt, out_dir / "roc.png", s, "false positive rate", "true positive rate",
                                 "ROC", diag=True)
    if "image_pr" in curves or "pixel_pr" in curves:
        s = [(f"{k.split('_')[0]} (AP {_fmt(metrics[k.split('_')[0]].get('ap'), 3)})",
              curves[k]["recall"], curves[k]["precision"]) for k in ("image_pr", "pixel_pr") if k in curves]
        figs["pr"] = _curve_fig(plt, out_dir / "pr.png", s, "recall", "precision", "precision-recall")
    if "pro" in curves:
        lim = metrics["aupro"]["fpr_limit"]
        s = [(f"PRO (AUPRO@{lim} {_fmt(metrics['aupro'].get('value'), 3)})", curves["pro"]["fpr"], curves["pro"]["pro"])]
        if "spro" in curves:
            s.append((f"sPRO (AU-sPRO@{metrics['spro']['fpr_limit']} {_fmt(metrics['spro'].get('value'), 3)})",
                      curves["spro"]["fpr"], curves["spro"]["spro"]))
        figs["pro"] = _curve_fig(plt, out_dir / "pro.png", s, "false positive rate", "per-region overlap",
                                 "PRO / sPRO", xlim=(0, min(1.0, 2 * lim)), vline=lim)
    dw = metrics.get("defect_wise_recall") or {}
    cc = dw.get("coverage_curve")
    if cc and cc.get("per_class"):
        x = [100 * c for c in cc["coverage_thresholds"]]
        s = [(f"{n} ({dw['per_class'][n]['kind']})", x, y) for n, y in cc["per_class"].items()]
        if cc.get("mean_defect"):
            s.append(("mean over defect classes", x, cc["mean_defect"]))
        degenerate = bool((metrics.get("threshold") or {}).get("degenerate"))
        figs["coverage"] = _curve_fig(plt, out_dir / "coverage_curve.png", s, "required coverage of an instance (%)",
                                      "defect-wise recall", "recall vs coverage" + (
                                          "\n(degenerate threshold: trivial, not a result)" if degenerate else ""),
                                      marker="o")
    thr = (metrics.get("threshold") or {}).get("value")
    ex_files = []
    for i, ex in enumerate(examples):
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{ex['class']}_{ex['id']}")
        ex_files.append((ex, _example_fig(plt, out_dir / f"example_{i:02d}_{safe}.png", ex, thr)))

    def img(name, alt):
        return f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">' if name else "<p>not available</p>"

    im, px, pro, sp = metrics["image"], metrics["pixel"], metrics["aupro"], metrics["spro"]
    part, ign = metrics.get("pixel_part") or {}, metrics.get("ignore") or {}
    th, tm = metrics.get("threshold") or {}, metrics.get("thresholded") or {}
    dep, banner = _dependent(th)
    parts = [f"<h1>Evaluation: {_fmt(metrics.get('model'))} on {_fmt(metrics.get('dataset_name'))} "
             f"({_fmt(metrics.get('split'))})</h1>"]
    if metrics.get("warnings"):
        parts.append("<div class='warn'><b>Warnings</b><ul>" + "".join(
            f"<li>{html.escape(w)}</li>" for w in metrics["warnings"]) + "</ul></div>")
    parts.append('<section id="summary"><h2>Summary</h2>' + _table([
        ("image AUROC", im.get("auroc")), ("image AUROC 95 % interval", _ci(im)), ("image AP", im.get("ap")),
        ("pixel AUROC", px.get("auroc")), ("pixel AUROC inside the part", part.get("auroc")),
        ("pixel AP", px.get("ap")),
        (f"AUPRO (FPR ≤ {pro.get('fpr_limit')})", pro.get("value")),
        (f"AU-sPRO (FPR ≤ {sp.get('fpr_limit', 0.05)})", sp.get("value")),
        ("threshold", _threshold_status(th)),
        ("pixel F1 at threshold", dep(tm.get("f1"))), ("mR_DW (defects)", dep(dw.get("mR_DW"))),
        ("mR_DW (impurities)", dep(dw.get("mR_DW_impurity")))]) + banner + "</section>")
    parts.append('<section id="image-metrics"><h2>Image level</h2>' + _table([
        ("images", im.get("n")), ("anomalous", im.get("n_anomalous")), ("normal", im.get("n_normal")),
        ("ignore-only images (left out)", im.get("n_ignored")),
        ("AUROC", im.get("auroc")), ("AUROC 95 % interval", _ci(im)),
        ("interval method", (im.get("auroc_ci") or {}).get("method")),
        ("resamples, seed", f"{(im.get('auroc_ci') or {}).get('n_resamples')}, {(im.get('auroc_ci') or {}).get('seed')}"
         if im.get("auroc_ci") else None),
        ("AP", im.get("ap"))]) + "</section>")
    parts.append('<section id="pixel-metrics"><h2>Pixel level</h2>' + _table([
        ("anomalous pixels", px.get("n_pos")), ("normal pixels", px.get("n_neg")),
        ("AUROC", px.get("auroc")), ("AUROC error bound", px.get("auroc_error_bound")),
        ("AP", px.get("ap")), ("exact AP lies in", f"[{_fmt(px.get('ap_lower'))}, {_fmt(px.get('ap_upper'))}]"),
        ("AUROC inside the part (object mask)", part.get("auroc")), ("AP inside the part", part.get("ap")),
        ("images with a part mask", part.get("n_images")),
        ("ignore pixels (left out of every pixel metric)", ign.get("n_ignore_pixels")),
        (f"AUPRO (FPR ≤ {pro.get('fpr_limit')}, normalised)", pro.get("value")),
        ("AUPRO error bound", pro.get("error_bound")), ("regions (connected components)", pro.get("n_regions")),
        ("AU-sPRO", sp.get("value")), ("AU-sPRO regions", sp.get("n_regions")),
        ("AU-sPRO note", sp.get("note"))]) + "</section>")
    parts.append('<section id="thresholded"><h2>Thresholded pixel metrics</h2>' + _table([
        ("threshold", th.get("value")), ("chosen on", th.get("source")),
        ("validation F1", th.get("val_f1")), ("status", _threshold_status(th)),
        ("precision", dep(tm.get("precision"))),
        ("recall", dep(tm.get("recall"))), ("F1", dep(tm.get("f1"))), ("TP", tm.get("tp")), ("FP", tm.get("fp")),
        ("FN", tm.get("fn")), ("TN", tm.get("tn"))]) + banner + "</section>")
    rows = [(n, c["kind"], c["n_instances"], c["detected"], dep(c["recall"]), dep(c["pixel_coverage"]),
             dep(c["mean_instance_coverage"])) for n, c in (dw.get("per_class") or {}).items()]
    rows += [("mR_DW (defect classes)", "", "", "", dep(dw.get("mR_DW")), "", ""),
             ("mR_DW (impurity classes)", "", "", "", dep(dw.get("mR_DW_impurity")), "", "")]
    parts.append('<section id="defect-wise-recall"><h2>Defect-wise recall</h2>'
                 f"<p>An instance is detected when predicted-positive pixels cover at least "
                 f"{_fmt(100 * (dw.get('min_coverage') or 0.0), 1)} % of it (0 % = at least one pixel); "
                 "a prediction blob counts for every instance it overlaps.</p>" + _table(
                     rows, ("class", "kind", "instances", "detected", "R_DW", "pixel coverage",
                            "mean instance coverage")) + banner + "</section>")
    cov_rows = []
    if cc:
        for n, y in (cc.get("per_class") or {}).items():
            cov_rows.append((n,) + tuple(dep(v) for v in y))
    parts.append('<section id="coverage-curve"><h2>Recall versus coverage</h2>' + img(figs.get("coverage"), "coverage curve")
                 + (_table(cov_rows, ("class",) + tuple(f"{100 * c:g}%" for c in cc["coverage_thresholds"])) if cc else "")
                 + banner + "</section>")
    parts.append('<section id="curves"><h2>ROC, precision-recall and PRO curves</h2>'
                 + img(figs.get("roc"), "ROC") + img(figs.get("pr"), "PR") + img(figs.get("pro"), "PRO") + "</section>")
    parts.append('<section id="examples"><h2>Examples per class</h2><p>Overlay: true positives '
                 '<span style="color:#0a0">green</span>, false positives <span style="color:#d00">red</span>, '
                 'false negatives <span style="color:#05f">blue</span>.</p>'
                 + ("".join(f"<h3>{html.escape(ex['class'])} — {html.escape(ex['id'])}</h3>" + img(f, ex["class"])
                            for ex, f in ex_files) or "<p>no example</p>") + banner + "</section>")
    ap_ = metrics.get("approximation") or {}
    parts.append('<section id="provenance"><h2>Provenance and approximations</h2>' + _table([
        ("dataset manifest", metrics.get("dataset")), ("manifest sha256", metrics.get("manifest_sha256")),
        ("manifest sha256 in predictions", metrics.get("predictions_manifest_sha256")),
        ("predictions", metrics.get("predictions")), ("sweep mode", ap_.get("mode")),
        ("bins", ap_.get("bins")), ("pixels", ap_.get("n_pixels")), ("note", ap_.get("note"))]) + "</section>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:4px}"
             ".warn{background:#fff3cd;padding:.5em;border:1px solid #e0c060}"
             ".trivial{color:#999}.degenerate{background:#f3f3f3;color:#555;padding:.4em;border-left:4px solid #c00}")
    doc = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>polar_detect evaluation</title>"
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    path = out_dir / "report.html"
    tmp = out_dir / ".report.html.tmp"
    tmp.write_text(doc)
    tmp.replace(path)  # atomic: a reader never sees half a report
    return path
