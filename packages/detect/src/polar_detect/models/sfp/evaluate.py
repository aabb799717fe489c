"""``sfp evaluate``: angular error of predicted normals on held-out data, against physics.

Pixels: the part's pixels (``object_mask``) whose ground truth normal is non-zero, pooled
over every image of the chosen splits (default ``test,val``: a dataset built with
``--render DIR:eval`` from renders the network never saw). Per method and input:

* ``mean_deg``, ``median_deg``: angular error in degrees (angle between unit vectors);
* ``within_11.25``, ``within_22.5``, ``within_30``: share (0..1) of pixels with error
  below 11.25 / 22.5 / 30 degrees (the usual SfP thresholds);
* ``n_pixels``, ``n_images``.

Methods: ``learned`` (the network), and the physics baseline (``physics.py``) as optimistic
per-pixel oracles: ``physics_oracle`` (best of the 2 diffuse + 4 specular candidates per
pixel, chosen with the ground truth), ``physics_diffuse_oracle`` (best of 2),
``physics_specular_oracle`` (best of 4), all at refractive index ``ior``.

Inputs (``sensors``): ``exact`` = the dataset's stored modalities (renders: exact, OIDN
-denoised Stokes); ``dofp`` = the same scene seen through the project's DoFP sensor model
and demosaiced (``data.dofp_observe``, auto exposure, noise seeded by ``(seed, index)``),
as a real polarization camera would deliver it. Both methods see the same inputs.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from polar_detect.models.sfp import physics
from polar_detect.models.sfp.data import Sample, SfPSamples, dofp_observe, network_input

THRESHOLDS = (11.25, 22.5, 30.0)
SENSORS = ("exact", "dofp")
PHYSICS = {"physics_oracle": "all", "physics_diffuse_oracle": "diffuse", "physics_specular_oracle": "specular"}


class EvaluateError(ValueError):
    """Bad evaluation setup (message names the option or file)."""


def summarise(errors_deg: np.ndarray, n_images: int) -> dict:
    """Mean, median and threshold shares of a flat array of angular errors (degrees)."""
    e = np.asarray(errors_deg, np.float64)
    if e.size == 0:
        return {"mean_deg": None, "median_deg": None, **{f"within_{t:g}": None for t in THRESHOLDS},
                "n_pixels": 0, "n_images": n_images}
    return {"mean_deg": float(e.mean()), "median_deg": float(np.median(e)),
            **{f"within_{t:g}": float(np.mean(e < t)) for t in THRESHOLDS},
            "n_pixels": int(e.size), "n_images": int(n_images)}


def combined_polarization(s: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(DoLP, AoLP radians) (H, W) of the colour channels' summed Stokes vectors."""
    c = s.dolp.shape[0]
    lin = s.intensity * s.dolp
    s0, s1, s2 = s.intensity.sum(0), (lin * s.aolp[:c]).sum(0), (lin * s.aolp[c:]).sum(0)
    rho = np.divide(np.hypot(s1, s2), s0, out=np.zeros_like(s0), where=s0 > 1e-12)
    return np.clip(rho, 0.0, 1.0), 0.5 * np.arctan2(s2, s1)


@torch.no_grad()
def predict_normals(net, s: Sample, scale: float, offset: float = 0.0, device: str = "cpu") -> np.ndarray:
    """(H, W, 3) unit normals predicted for every pixel of a sample."""
    x = network_input(s, scale, offset)[None].to(device)
    return net(x)[0].permute(1, 2, 0).cpu().numpy()


def part_pixels(s: Sample) -> np.ndarray:
    """Boolean (H, W): part pixels with a ground truth normal."""
    return s.part & (np.linalg.norm(s.normals, axis=0) > 0.5)


def evaluate(data, model=None, splits=("test", "val"), sensors=SENSORS, ior: float = physics.DEFAULT_IOR,
             seed: int = 0, progress: bool = True, limit: int | None = None) -> dict:
    """Metrics of the model (when given) and the physics oracles; see the module docstring."""
    from polar_render.progress import progress as progress_bar
    from polar_detect.models.sfp.train import load_model

    bad = [s for s in sensors if s not in SENSORS]
    if bad or not sensors:
        raise EvaluateError(f"--sensor: choose from {', '.join(SENSORS)}, got {','.join(sensors) or 'nothing'}")
    physics.diffuse_dolp(0.0, ior)      # validates ior before any work
    samples = SfPSamples(data, splits, ground_truth=True)
    samples.require_parts()
    net, meta = (None, None) if model is None else load_model(model)
    if net is not None and net.config.colour != samples.colour:
        raise EvaluateError(f"{meta['path']}: the model takes {net.config.colour} colour channel(s), "
                            f"{samples.manifest_file} has {samples.colour}")
    norm = None
    if meta is not None:
        from polar_detect.dataset.manifest import check_normalisation, mismatch_warning
        norm = check_normalisation(meta.get("normalisation"), None, samples.manifest_file, ["intensity"], "warn")
        warning = mismatch_warning(norm, samples.manifest_file)
        if warning:
            print(warning, file=sys.stderr)
    n = len(samples) if limit is None else min(len(samples), int(limit))
    methods = (["learned"] if net is not None else []) + list(PHYSICS)
    errs = {s: {m: [] for m in methods} for s in sensors}
    per_image = {s: {} for s in sensors}
    t0 = time.time()
    for i in progress_bar(range(n), desc="sfp evaluate", unit="image", enabled=progress):
        exact = samples[i]
        for sensor in sensors:
            s = exact if sensor == "exact" else dofp_observe(exact, np.random.default_rng([seed, i]))
            mask = part_pixels(s)
            truth = np.moveaxis(s.normals, 0, -1)[mask]
            if net is not None:
                pred = predict_normals(net, s, samples.scale, samples.offset)[mask]
                e = physics.angular_error_deg(pred, truth)
                errs[sensor]["learned"].append(e)
                per_image[sensor][s.id] = float(np.median(e)) if e.size else None
            rho, phi = combined_polarization(s)
            cands = physics.candidates(rho[mask], phi[mask], ior)
            for name, family in PHYSICS.items():
                errs[sensor][name].append(physics.oracle(cands, truth, family)[1])
    results = {sensor: {m: summarise(np.concatenate(v) if v else np.zeros(0), n) for m, v in by.items()}
               for sensor, by in errs.items()}
    out = {"data": str(samples.manifest_file), "splits": list(splits) if splits != "all" else "all",
           "pixels": "part pixels (object_mask) with a ground truth normal", "ior": float(ior),
           "sensors": list(sensors), "seed": seed, "n_images": n, "results": results,
           "per_image_median_deg": per_image if net is not None else None,
           "normalisation_check": norm, "seconds": round(time.time() - t0, 1)}
    if meta is not None:
        tr = meta.get("train") or {}
        out["model"] = {"path": meta["path"], "digest": tr.get("digest"), "train_seconds": tr.get("seconds"),
                        "parameters": tr.get("parameters"), "epochs": (tr.get("config") or {}).get("epochs"),
                        "machine": tr.get("machine"), "train_data": (tr.get("data") or {}).get("manifest")}
    return out


def table(result: dict) -> str:
    """Markdown table of an :func:`evaluate` result."""
    keys = ["median_deg", "mean_deg"] + [f"within_{t:g}" for t in THRESHOLDS] + ["n_pixels", "n_images"]
    lines = ["| input | method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for sensor, by in result["results"].items():
        for method, m in by.items():
            cells = []
            for k in keys:
                v = m[k]
                cells.append("-" if v is None else (f"{v:.2f}" if k.endswith("deg") else
                                                    f"{v:.3f}" if k.startswith("within") else str(v)))
            lines.append(f"| {sensor} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
