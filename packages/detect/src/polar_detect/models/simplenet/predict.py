"""Predictions of a trained SimpleNet / feature ensemble in the contract's format (section 4).

``<out>/predictions.json`` (``model``, ``dataset``, ``manifest_sha256``, ``split`` = the first
split named, ``threshold`` null, ``modality``, ``normalisation_check``, ``scores``, ``maps``;
plus ``timing``) and one float32 TIFF map per sample under ``<out>/maps/`` at the sample's
native resolution -- what ``patchcore predict`` writes, so ``polar_detect.evaluation.evaluate`` and
``polar_detect.evaluation.average`` read it. The directory is built under a temporary name and renamed
into place when complete (``polar_render.io.atomic_dir``), so a failed run leaves nothing
and an earlier output is replaced only by a complete one.

``timing``: seconds spent in the detector's forward pass alone (data loading and file
writing excluded) and the resulting images per second, with the torch thread count.
"""
from __future__ import annotations

import time

import numpy as np
import torch


class PredictError(ValueError):
    """Bad prediction input; the message names the file or option."""


def open_splits(data, splits: list[str], modality: str, channels: int | None):
    """The datasets of ``splits`` (stored values), checked before anything is written."""
    from polar_detect.dataset.torch_dataset import PolarDataset
    from polar_detect.dataset.manifest import manifest_path
    mpath = manifest_path(data)
    sets = {}
    for split in splits:
        ds = PolarDataset(data, split, [modality], normalise=False)
        if channels is not None and ds.channels(modality) != channels:
            raise PredictError(f"{mpath}: modality {modality!r} has {ds.channels(modality)} channels, the model "
                               f"was trained on {channels}")
        sets[split] = ds
    return mpath, sets


def predict_dir(model, meta: dict, data, out, splits: list[str], name: str | None = None,
                batch_images: int = 8, progress: bool = True) -> dict:
    """Predict ``splits`` of the dataset ``data`` into ``out`` (see module docstring)."""
    from polar_render.io import atomic_dir

    from polar_detect.dataset.manifest import sha256_file
    from polar_detect.models.simplenet.train import iter_images
    from polar_detect.predictions import PredictionsWriter
    info = meta.get("meta") or {}
    modality = info.get("modality", "intensity")
    mpath, sets = open_splits(data, splits, modality, info.get("channels"))
    seconds, n = 0.0, 0
    with atomic_dir(out) as tmp:
        w = PredictionsWriter(tmp)
        for split, ds in sets.items():
            for imgs, items in iter_images(ds, batch_images, progress, f"predict {split}"):
                t0 = time.perf_counter()
                with torch.no_grad():
                    m, s = model(imgs)
                seconds += time.perf_counter() - t0
                n += len(items)
                for it, mi, si in zip(items, m, s):
                    sid = str(it["id"])
                    a = mi.numpy().astype(np.float32)
                    if not (np.isfinite(a).all() and np.isfinite(float(si))):
                        raise PredictError(f"{mpath}: sample {sid}: non-finite anomaly map or score (NaN/inf in "
                                           f"the input or the model); no predictions written")
                    if sid in w.scores:
                        raise PredictError(f"{mpath}: sample id {sid!r} appears twice in splits {splits}")
                    w.add(sid, float(si), a)
        pred = w.finish(model=name or (meta.get("detector") or {}).get("kind", "simplenet"), dataset=str(mpath),
                        manifest_sha256=sha256_file(mpath), split=splits[0], threshold=None, modality=modality,
                        normalisation_check={"status": "not applicable",
                                             "note": "the model encodes stored values itself"},
                        timing={"images": n, "forward_seconds": round(seconds, 4),
                                "images_per_s": round(n / seconds, 3) if seconds > 0 else None,
                                "torch_threads": torch.get_num_threads()})
    return pred
