"""Measure render noise and anomaly learnability from paired renders.

Two renders of the same samples (same scene file, seed, N, resolution, spp) are paired by
sample index:

* ``noise``: a render and the same samples on an independent Monte Carlo stream
  (``--noise-seed K``, another OUT). Per sample, over the part's pixels (``object_mask > 0``),
  the noise of one render is ``sigma = std(I_a - I_b) / sqrt(2)`` (the two noises are
  independent and equal in distribution), and also its robust form ``1.4826 * MAD / sqrt(2)``
  (insensitive to rare fireflies); both are reported relative to the part's mean intensity
  ``mean(I_a)``. ``I`` is the unpolarized intensity S0 (``intensity.tiff``), colour channels
  averaged. Also over the part's *smooth interior* (``rel_std_interior``): part pixels whose
  exact normal (``normals.tiff``) turns by less than ``EDGE_DEG`` to each 8-neighbour and that
  are not on the silhouette; the rest are geometric edges (silhouettes, stud rims), where a
  pixel's value depends on its sub-pixel coverage and the Monte Carlo anti-aliasing noise is
  largest.
* ``learnability``: per anomaly class, the count of labelled instances, their median visible
  pixels, median exact contrast (meta.json), and the median contrast-to-noise ratio
  ``CNR = |mean_k(I_anom - I_clean)| / sigma_k``, where the mean is over the instance's pixels
  k, ``I_clean`` is its clean twin (``--clean``) and ``sigma_k`` the instance pixels' noise from
  the independent-stream render (as above). CNR <= 1: the anomaly is below the render noise.
  The same for DoLP (``dolp.tiff``) in ``median_cnr_dolp``. A mean change can cancel where
  an anomaly brightens one side and darkens the other (a dent's tilted normals), so the
  table also gives ``RMS-CNR = sqrt(mean_k (I_anom - I_clean)^2) / sigma_k``; as the twin shares
  the render seed, its noise is partly shared, and a difference made of noise alone gives at
  most about sqrt(2).

``python -m polar_render.bench.measure noise --render A --noise B`` and
``python -m polar_render.bench.measure learnability --render A --clean C --noise B [--json OUT]``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from polar_render import io

MAD_TO_SIGMA = 1.4826
EDGE_DEG = 10.0


def smooth_interior(part: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Part pixels away from geometric edges (module docstring)."""
    from scipy import ndimage

    cos_min = np.cos(np.radians(EDGE_DEG))
    ok = ndimage.binary_erosion(part, structure=np.ones((3, 3), bool))
    h, w = part.shape
    pad = np.pad(normals, ((1, 1), (1, 1), (0, 0)), mode="edge")
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            nb = pad[dy:dy + h, dx:dx + w]
            ok &= np.einsum("ijk,ijk->ij", normals, nb) >= cos_min
    return ok


def _intensity(sample: Path, modality: str = "intensity") -> np.ndarray:
    """A modality's float TIFF (``intensity`` or ``dolp``), colour channels averaged."""
    x = io.read_float_tiff(sample / f"{modality}.tiff").astype(np.float64)
    return x.mean(-1) if x.ndim == 3 else x


def _meta(sample: Path) -> dict:
    return json.loads((sample / "meta.json").read_text())


def paired_samples(a: Path, b: Path) -> list[tuple[Path, Path]]:
    """Sample directories present in both renders (same index), checked to be the same samples."""
    pairs = []
    for sa in sorted((Path(a) / "samples").glob("[0-9]*")):
        sb = Path(b) / "samples" / sa.name
        if not (sa / "meta.json").is_file() or not (sb / "meta.json").is_file():
            continue
        ma, mb = _meta(sa), _meta(sb)
        if (ma["config_digest"], ma["seed"], ma["index"]) != (mb["config_digest"], mb["seed"], mb["index"]):
            raise ValueError(f"{sb}: not the same sample as {sa} (scene digest, seed or index differ)")
        pairs.append((sa, sb))
    if not pairs:
        raise ValueError(f"{a} and {b} share no finished sample")
    return pairs


def noise_sigma(diff: np.ndarray) -> tuple[float, float]:
    """(std, robust MAD-based) noise of ONE render from the difference of two independent ones."""
    if diff.size < 2:
        return float("nan"), float("nan")
    std = float(np.std(diff)) / np.sqrt(2.0)
    mad = float(np.median(np.abs(diff - np.median(diff)))) * MAD_TO_SIGMA / np.sqrt(2.0)
    return std, mad


def part_noise(render: Path, noisy: Path) -> dict:
    """Relative noise on the part per sample and its median over samples (module docstring)."""
    rows = []
    for sa, sb in paired_samples(render, noisy):
        part = io.read_png(sa / "object_mask.png") > 0
        inner = smooth_interior(part, io.read_float_tiff(sa / "normals.tiff"))
        a, b = _intensity(sa), _intensity(sb)
        mean = float(a[part].mean()) if part.any() else float("nan")
        std, mad = noise_sigma((a - b)[part])
        std_in, _ = noise_sigma((a - b)[inner])
        rows.append({"sample": sa.name, "mean": mean, "rel_std": std / mean, "rel_mad": mad / mean,
                     "rel_std_interior": std_in / float(a[inner].mean()) if inner.any() else float("nan"),
                     "interior_share": float(inner.sum() / max(part.sum(), 1))})
    med = {k: float(np.nanmedian([r[k] for r in rows])) for k in ("rel_std", "rel_mad", "rel_std_interior")}
    return {"samples": rows, **{f"median_{k}": v for k, v in med.items()},
            "max_rel_std": float(np.max([r["rel_std"] for r in rows])),
            "max_rel_std_interior": float(np.nanmax([r["rel_std_interior"] for r in rows]))}


def learnability(render: Path, clean: Path, noisy: Path) -> dict:
    """Per-class table: count, median visible px, median contrast, median CNR (module docstring)."""
    per: dict[str, dict[str, list]] = {}
    cleans = dict(paired_samples(render, clean))
    for sa, sn in paired_samples(render, noisy):
        meta = _meta(sa)
        if not meta.get("anomalies"):
            continue
        inst = io.read_png(sa / "anomaly_mask.png")
        imgs = {m: (_intensity(sa, m), _intensity(sn, m), _intensity(cleans[sa], m)) for m in ("intensity", "dolp")}
        for t in meta["anomalies"]:
            k = inst == t["id"]
            row = per.setdefault(t["class"], {"visible_px": [], "contrast": [], "cnr": [], "cnr_dolp": [],
                                              "measure": []})
            for key, (a, n, c) in (("cnr", imgs["intensity"]), ("cnr_dolp", imgs["dolp"])):
                std, _ = noise_sigma((a - n)[k])
                d = (a - c)[k]
                row[key].append(abs(float(d.mean())) / std if std > 0 else float("inf"))
                row.setdefault(f"rms_{key}", []).append(float(np.sqrt(np.mean(d**2))) / std if std > 0 else float("inf"))
            row["visible_px"].append(int(k.sum()))
            row["contrast"].append(float(t.get("contrast", float("nan"))))
            row["measure"].append(t.get("contrast_measure", ""))
    return {cls: {"count": len(r["cnr"]), "median_visible_px": float(np.median(r["visible_px"])),
                  "median_contrast": float(np.median(r["contrast"])), "contrast_measure": r["measure"][0],
                  "median_cnr": float(np.median(r["cnr"])), "share_cnr_le_1": float(np.mean(np.asarray(r["cnr"]) <= 1)),
                  "median_cnr_dolp": float(np.median(r["cnr_dolp"])),
                  "median_rms_cnr": float(np.median(r["rms_cnr"])), "median_rms_cnr_dolp": float(np.median(r["rms_cnr_dolp"]))}
            for cls, r in sorted(per.items())}


def markdown(table: dict) -> str:
    lines = ["| class | count | median visible px | median contrast (unit) | median CNR I | CNR I <= 1 "
             "| median CNR DoLP | median RMS-CNR I / DoLP |", "|---|---|---|---|---|---|---|---|"]
    for cls, r in table.items():
        lines.append(f"| {cls} | {r['count']} | {r['median_visible_px']:.0f} | {r['median_contrast']:.3g} "
                     f"({r['contrast_measure']}) | {r['median_cnr']:.2f} | {100 * r['share_cnr_le_1']:.0f} % "
                     f"| {r['median_cnr_dolp']:.2f} | {r['median_rms_cnr']:.2f} / {r['median_rms_cnr_dolp']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m polar_render.bench.measure", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("noise", help="part noise relative to its mean intensity")
    p.add_argument("--render", required=True)
    p.add_argument("--noise", required=True, help="the same samples rendered with --noise-seed")
    q = sub.add_parser("learnability", help="per-class visibility and contrast-to-noise table")
    q.add_argument("--render", required=True)
    q.add_argument("--clean", required=True, help="clean twins (--clean)")
    q.add_argument("--noise", required=True, help="the same samples rendered with --noise-seed")
    for x in (p, q):
        x.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "noise":
            res = part_noise(Path(args.render), Path(args.noise))
            print(f"part noise over {len(res['samples'])} samples, relative to the mean intensity: median std "
                  f"{100 * res['median_rel_std']:.2f} % (robust {100 * res['median_rel_mad']:.2f} %, max "
                  f"{100 * res['max_rel_std']:.2f} %); smooth interior: median std "
                  f"{100 * res['median_rel_std_interior']:.2f} % (max {100 * res['max_rel_std_interior']:.2f} %)")
        else:
            res = learnability(Path(args.render), Path(args.clean), Path(args.noise))
            print(markdown(res))
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        io.write_json(Path(args.json), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
