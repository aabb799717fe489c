"""``sfp predict``: a copy of a dataset with the network's normals as an extra modality.

The detectors read modalities from a dataset, so the learned normal prior enters them as
one more modality, ``normals_learned`` (default name), stored exactly like ``normals``
(float32 TIFF (H, W, 3), unit vectors in the OpenCV camera frame, scale 1, offset 0),
next to the ground truth ``normals`` (the oracle) when the source has it. The new dataset
(``--out``) holds every sample, split, label, mask and modality of the source (files
copied, or hard-linked with ``link=True`` / ``--link`` to save space: the copy then shares
the files' inodes with the source, which is safe because this toolkit never rewrites a
file in place; checksums re-verified against the source manifest) plus ``samples/<id>/normals_learned.tiff``; the manifest
records the model file, its sha256 and training digest under ``sfp_predictions``. It is
built in a staging directory and renamed into place, so a failed run leaves nothing, and
the source dataset is never written to.

Predictions cover every pixel (a camera has no part mask at inference); the network was
trained on part pixels (weight 1) and other surface pixels (``background_weight``).
Intensity normalisation: the dataset's own manifest scale, checked against the model's
training scale (``--norm-mismatch warn|error``, as the other detectors' ``predict``).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from polar_detect.dataset.encodings import DatasetError

MODALITY = "normals_learned"


def _transfer(src: Path, dst: Path, link: bool) -> None:
    """Copy ``src`` to ``dst`` (hard link when ``link`` and the file system allows)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def check_out(data_dir: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output that is, contains or lies inside the source dataset, or exists."""
    src, dst = data_dir.resolve(), out.resolve()
    if dst == src or src in dst.parents or dst in src.parents:
        raise DatasetError(f"--out {out}: must be a new directory outside --data {data_dir} "
                           f"(the source dataset is never written to)")
    if out.exists() and not overwrite:
        raise DatasetError(f"--out {out}: already exists; pass --overwrite to replace it")


def predict_dataset(model, data, out, modality: str = MODALITY, overwrite: bool = False,
                    norm_mismatch: str = "warn", progress: bool = True, link: bool = False
                    ) -> tuple[dict, list[str]]:
    """Write the augmented dataset; returns (manifest, warnings)."""
    import re

    from polar_render.progress import progress as progress_bar

    from polar_detect.dataset.manifest import (check_normalisation, manifest_path, mismatch_warning,
                                               read_manifest, sample_files, sha256_file)
    from polar_detect.dataset.writer import write_tiff
    from polar_render.io import atomic_dir
    from polar_render.paths import contained

    from polar_detect.models.sfp.evaluate import predict_normals
    from polar_detect.models.sfp.data import SfPSamples
    from polar_detect.models.sfp.train import load_model

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", modality):
        raise DatasetError(f"--modality {modality!r}: use letters, digits and '_' (it names files)")
    mpath = manifest_path(data)
    manifest = read_manifest(mpath)
    previous = (manifest.get("sfp_predictions") or {}).get("modality")
    if modality in manifest["modalities"] and modality != previous:
        raise DatasetError(f"{mpath}: already has a modality {modality!r} that no SfP prediction wrote; "
                           f"choose another --modality")
    check_out(mpath.parent, Path(out), overwrite)
    net, meta = load_model(model)
    samples = SfPSamples(data, "all", ground_truth=False)
    if net.config.colour != samples.colour:
        raise DatasetError(f"{meta['path']}: the model takes {net.config.colour} colour channel(s), "
                           f"{mpath} has {samples.colour}")
    rec = check_normalisation(meta.get("normalisation"), None, mpath, ["intensity"], norm_mismatch)
    warnings = [w for w in [mismatch_warning(rec, mpath)] if w]
    root = mpath.parent
    entries = {s["id"]: s for s in manifest["samples"]}
    new = json.loads(json.dumps(manifest))
    new_entries = {s["id"]: s for s in new["samples"]}
    ids = samples.ids
    with atomic_dir(Path(out)) as tmp:
        for i in progress_bar(range(len(samples)), desc=f"sfp predict {Path(out).name}", unit="sample",
                              enabled=progress):
            sid = ids[i]
            src_entry, entry = entries[sid], new_entries[sid]
            for k, rel in enumerate(sample_files(src_entry)):
                if rel == src_entry["files"].get(modality):
                    continue                     # replaced below (re-prediction of a predicted dataset)
                path = contained(root, rel, source=mpath, key=f"samples[{sid}].files[{k}]")
                want = src_entry.get("sha256", {}).get(rel)
                if want is not None and sha256_file(path) != want:
                    raise DatasetError(f"{path}: sha256 differs from {mpath}; the source dataset is damaged "
                                       f"(python -m polar_detect.dataset verify)")
                _transfer(path, tmp / rel, link)
            s = samples[i]
            normals = predict_normals(net, s, samples.scale, samples.offset)
            rel = f"samples/{sid}/{modality}.tiff"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            write_tiff(tmp / rel, normals.astype(np.float32))
            entry["files"][modality] = rel
            entry.setdefault("sha256", {})[rel] = sha256_file(tmp / rel)
        new["modalities"][modality] = {
            "channels": 3, "channel_names": ["x", "y", "z"],
            "encoding": ("float32 TIFF (H, W, 3): unit normals predicted by the SfP network "
                         "(polar_detect.models.sfp), OpenCV camera frame (x right, y down, z forward), every pixel"),
            "normalisation": "none (unit vectors)", "scale": 1.0, "offset": 0.0, "units": ""}
        tr = meta.get("train") or {}
        new["sfp_predictions"] = {"modality": modality, "model": meta["path"],
                                  "model_sha256": sha256_file(meta["path"]), "train_digest": tr.get("digest"),
                                  "source_dataset": str(mpath.resolve()), "normalisation_check": rec}
        (tmp / "manifest.json").write_text(json.dumps(new, indent=1) + "\n")
    return new, warnings
