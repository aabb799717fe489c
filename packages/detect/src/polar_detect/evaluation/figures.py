"""Figures of the evaluation report (matplotlib, Agg backend), written as PNG files beside
report.html: ROC, precision-recall, PRO/sPRO and recall-versus-coverage curves, and one
example figure per kept sample (its modalities, the anomaly map, and the thresholded overlay:
true positives green, false positives red, false negatives blue).

Curves come from curves.json (``{"image_roc": {"fpr", "tpr"}, ...}``); modality arrays are
displayed between their 1st and 99th percentiles.  Every function returns the PNG's file name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


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


def _fmt3(x) -> str:
    """A metric in a legend: 3 decimals, integers as such, None as n/a (the tables' format)."""
    if x is None:
        return "n/a"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _roc_pr(plt, metrics: dict, curves: dict, out_dir: Path, figs: dict) -> None:
    if "image_roc" in curves or "pixel_roc" in curves:
        s = [(f"{k.split('_')[0]} (AUROC {_fmt3(metrics[k.split('_')[0]].get('auroc'))})",
              curves[k]["fpr"], curves[k]["tpr"]) for k in ("image_roc", "pixel_roc") if k in curves]
        figs["roc"] = _curve_fig(plt, out_dir / "roc.png", s, "false positive rate", "true positive rate",
                                 "ROC", diag=True)
    if "image_pr" in curves or "pixel_pr" in curves:
        s = [(f"{k.split('_')[0]} (AP {_fmt3(metrics[k.split('_')[0]].get('ap'))})",
              curves[k]["recall"], curves[k]["precision"]) for k in ("image_pr", "pixel_pr") if k in curves]
        figs["pr"] = _curve_fig(plt, out_dir / "pr.png", s, "recall", "precision", "precision-recall")


def _pro(plt, metrics: dict, curves: dict, out_dir: Path, figs: dict) -> None:
    if "pro" not in curves:
        return
    lim = metrics["aupro"]["fpr_limit"]
    s = [(f"PRO (AUPRO@{lim} {_fmt3(metrics['aupro'].get('value'))})", curves["pro"]["fpr"], curves["pro"]["pro"])]
    if "spro" in curves:
        s.append((f"sPRO (AU-sPRO@{metrics['spro']['fpr_limit']} {_fmt3(metrics['spro'].get('value'))})",
                  curves["spro"]["fpr"], curves["spro"]["spro"]))
    figs["pro"] = _curve_fig(plt, out_dir / "pro.png", s, "false positive rate", "per-region overlap",
                             "PRO / sPRO", xlim=(0, min(1.0, 2 * lim)), vline=lim)


def _coverage(plt, metrics: dict, out_dir: Path, figs: dict) -> None:
    dw = metrics.get("defect_wise_recall") or {}
    cc = dw.get("coverage_curve")
    if not (cc and cc.get("per_class")):
        return
    x = [100 * c for c in cc["coverage_thresholds"]]
    s = [(f"{n} ({dw['per_class'][n]['kind']})", x, y) for n, y in cc["per_class"].items()]
    if cc.get("mean_defect"):
        s.append(("mean over defect classes", x, cc["mean_defect"]))
    degenerate = bool((metrics.get("threshold") or {}).get("degenerate"))
    figs["coverage"] = _curve_fig(plt, out_dir / "coverage_curve.png", s, "required coverage of an instance (%)",
                                  "defect-wise recall", "recall vs coverage" + (
                                      "\n(degenerate threshold: trivial, not a result)" if degenerate else ""),
                                  marker="o")


def curve_figures(metrics: dict, curves: dict, out_dir: Path) -> dict:
    """{"roc", "pr", "pro", "coverage": PNG name} of the curves present."""
    plt, figs = _plt(), {}
    _roc_pr(plt, metrics, curves, out_dir, figs)
    _pro(plt, metrics, curves, out_dir, figs)
    _coverage(plt, metrics, out_dir, figs)
    return figs


def example_figures(examples: list, threshold, out_dir: Path) -> list:
    """[(example, PNG name)] in the given order, named ``example_<i>_<class>_<id>.png``."""
    plt, out = _plt(), []
    for i, ex in enumerate(examples):
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{ex['class']}_{ex['id']}")
        out.append((ex, _example_fig(plt, out_dir / f"example_{i:02d}_{safe}.png", ex, threshold)))
    return out
