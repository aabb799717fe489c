"""The blurred-object-mask baseline (package docstring) and its predictions.json writer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from polar_render.io import atomic_dir

from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.images import read_png
from polar_detect.dataset.manifest import SPLITS, manifest_path, read_manifest, sha256_file
from polar_detect.predictions import PredictionsWriter

DEFAULT_SIGMA = 8.0


def blurred_object_mask(object_mask: np.ndarray, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """float32 (H, W): ``object_mask > 0`` blurred by a Gaussian of ``sigma`` px (scipy
    ``gaussian_filter``, mode ``constant``: outside the image counts as background)."""
    from scipy.ndimage import gaussian_filter

    m = (np.asarray(object_mask) > 0).astype(np.float64)
    if m.ndim != 2:
        raise ValueError(f"object mask must be (H, W), got shape {m.shape}")
    if sigma == 0:
        return m.astype(np.float32)
    return gaussian_filter(m, sigma=float(sigma), mode="constant", cval=0.0).astype(np.float32)


def _parse_splits(text: str) -> list[str]:
    splits = [s.strip() for s in str(text).split(",") if s.strip()]
    if not splits:
        raise DatasetError(f"--split: no split named in {text!r}")
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise DatasetError(f"--split: unknown split {bad[0]!r}; choose from {', '.join(SPLITS)}")
    return splits


def predict_dataset(data, out, splits="test,val", sigma: float = DEFAULT_SIGMA, name: str | None = None,
                    overwrite: bool = True) -> dict:
    """Write ``out/predictions.json`` + ``out/maps/<id>.tiff`` (contract section 4) for the
    samples of ``splits`` (the first is predictions.json's ``split``; the others, e.g. val,
    sit beside it for the threshold).  Every check runs before anything is written; the
    output is built in a temporary directory and renamed into place."""
    if not np.isfinite(sigma) or sigma < 0:
        raise DatasetError(f"--sigma must be a finite number >= 0, got {sigma}")
    mpath = manifest_path(data)
    m = read_manifest(mpath)
    wanted = _parse_splits(splits)
    samples = [s for s in m["samples"] if s["split"] in wanted]
    if not samples:
        raise DatasetError(f"{mpath}: no sample in split(s) {', '.join(wanted)}")
    missing = [s["id"] for s in samples if not s.get("object_mask")]
    if missing:
        raise DatasetError(f"{mpath}: {len(missing)} samples have no object_mask ({', '.join(missing[:5])}); "
                           f"rebuild the dataset from renders with `python -m polar_detect.dataset build`")
    out = Path(out)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists")
    with atomic_dir(out) as tmp:
        w = PredictionsWriter(tmp)
        for s in samples:
            om = read_png(mpath.parent / s["object_mask"])   # the dataset's bounded mask reader
            a = blurred_object_mask(om if om.ndim == 2 else om[..., 0], sigma)
            w.add(s["id"], float(a.max()), a)
        pred = w.finish(model=name or f"blurred_object_mask(sigma={sigma:g})", dataset=str(mpath),
                        manifest_sha256=sha256_file(mpath), split=wanted[0], threshold=None,
                        baseline={"kind": "blurred_object_mask", "sigma_px": float(sigma),
                                  "image_score": "max of the map"})
    return pred
