"""Write rendered datasets as one MVTec LOCO AD category (for ``dataset import-loco`` and sPRO).

No real MVTec LOCO data is on this machine, so the station renders are laid out like a LOCO
category; ``python -m polar_detect.dataset import-loco`` then imports them like the real
thing, with one region mask per anomaly instance and LOCO's saturation semantics (what
AU-sPRO needs)::

    <out>/train/good/<id>.png                   train split (normal) of the datasets
    <out>/validation/good/<id>.png              val split, normal samples only
    <out>/test/good/<id>.png                    test split, normal
    <out>/test/logical_anomalies/<id>.png       test split, anomalous with a logical instance
    <out>/test/structural_anomalies/<id>.png    test split, other anomalous samples
    <out>/ground_truth/<type>/<id>/000.png ...  one region per kept instance, pixel value =
                                                its class's ``pixel_value``
    <out>/defects_config.json                   [{defect_name, pixel_value, saturation_threshold,
                                                  relative_saturation}]
    <out>/layout.json                           sources, mapping and counts

Choices (LOCO has no counterpart for them):

* Groups: the classes of ``evaluation.image_level.CLASS_GROUPS["logical"]`` (missing, extra, swapped) are
  logical, every other class (dents, bumps, scratches, chips, water stains) structural; an
  image holding both goes to ``logical_anomalies`` (LOCO images have one type; the regions
  keep their own classes).
* Saturation: relative, 1.0 for structural classes (a region counts as fully detected only
  when all of it is flagged: sPRO = PRO), ``logical_saturation`` (default 0.5) for logical
  ones (flagging half of a missing or swapped part's area is full credit).
* Val anomalies are not written (LOCO's validation split has normal images only); neither
  are ignore-only samples; ignored instances (``--min-visible-px`` ...) and pixels outside
  the anomaly mask become normal pixels (LOCO has no "ignore").
* Image: one modality, through the backbone encoding of ``patchcore.encoding`` fitted on the
  train split's normal images (intensity / pol* / DoLP: x / q, q = the ``percentile`` of the
  train values; AoLP: the doubled-angle colour wheel; normals: (n + 1) / 2), clipped to
  [0, 1], then for the x / q kinds a gamma (default 2.2, as ``export-mvtec`` does for
  intensity) so that 8 bits resolve the dark range (a diffuse part's DoLP is a few percent
  of q: linear 8 bits would leave it 2-6 grey levels), and rounded:
  ``round(255 * clip(encode(x), 0, 1) ** (1 / gamma))``; 1 channel -> grey PNG, 3 -> RGB.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from polar_detect.dataset.encodings import DatasetError

TYPES = ("structural_anomalies", "logical_anomalies")


def _logical_classes() -> set[str]:
    from polar_detect.evaluation.image_level import CLASS_GROUPS
    return set(CLASS_GROUPS["logical"])


def defects_config(classes, logical_saturation: float) -> list[dict]:
    """LOCO ``defects_config.json`` entries for ``classes`` (pixel values 1.. in sorted order)."""
    logical = _logical_classes()
    return [{"defect_name": c, "pixel_value": k,
             "saturation_threshold": float(logical_saturation) if c in logical else 1.0,
             "relative_saturation": True} for k, c in enumerate(sorted(classes), start=1)]


def _open(datasets, modality):
    from polar_detect.dataset.torch_dataset import PolarDataset
    out = []
    for d in datasets:
        ds = PolarDataset(d, "all", [modality], normalise=False)
        out.append(ds)
    return out


def _fit_encoding(sets, modality, percentile):
    from polar_detect.models.patchcore.encoding import InputEncoding
    enc = InputEncoding(modality, percentile=percentile)
    for ds in sets:
        for i, s in enumerate(ds.samples):
            if s["split"] == "train" and int(s["label"]) == 0:
                enc.update(ds[i]["image"][None])
    if enc.needs_fit:
        if enc.n_values == 0:
            raise DatasetError(f"{', '.join(str(ds.manifest_file) for ds in sets)}: no normal train-split "
                               f"images to fit the {modality} encoding on")
        enc.finish(source="train split of the datasets")
    return enc


def _to_png(enc, image, gamma: float) -> np.ndarray:
    y = enc(image[None])[0].clamp(0, 1).numpy()
    if enc.kind == "scale":
        y = y ** (1.0 / gamma)
    if y.shape[0] not in (1, 3):
        raise DatasetError(f"modality {enc.modality!r}: {y.shape[0]} channels after encoding; PNG needs 1 or 3")
    a = np.rint(y.transpose(1, 2, 0) * 255).astype(np.uint8)
    return a[..., 0] if a.shape[-1] == 1 else a


def _plan(sets) -> list[tuple]:
    """(dataset index, sample index, folder) of every exported sample; ids checked unique."""
    logical = _logical_classes()
    plan, seen, skipped = [], {}, {"val anomalous": 0, "ignore-only": 0}
    for k, ds in enumerate(sets):
        for i, s in enumerate(ds.samples):
            if s.get("ignore_image"):
                skipped["ignore-only"] += 1
                continue
            split, label = s["split"], int(s["label"])
            if split == "val" and label:
                skipped["val anomalous"] += 1
                continue
            if split == "train":
                folder = "train/good"
            elif split == "val":
                folder = "validation/good"
            elif not label:
                folder = "test/good"
            else:
                classes = {a.get("class") for a in s.get("instances") or []}
                folder = "test/logical_anomalies" if classes & logical else "test/structural_anomalies"
            key = (folder, str(s["id"]))
            if key in seen:
                raise DatasetError(f"{ds.manifest_file}: sample {s['id']} would overwrite {folder}/{s['id']}.png "
                                   f"from {sets[seen[key]].manifest_file}; give each dataset once")
            seen[key] = k
            plan.append((k, i, folder))
    return plan, skipped


def _regions(ds, i, item, pixel_value) -> list[tuple[int, np.ndarray]]:
    """(pixel value, region) per kept instance: instance pixels inside the anomaly mask."""
    s = ds.samples[i]
    inst = item["instance_mask"].numpy()
    mask = item["mask"][0].numpy() > 0.5
    out = []
    for a in s.get("instances") or []:
        region = (inst == int(a["id"])) & mask
        if region.any():
            out.append((pixel_value[a["class"]], region))
    if s["label"] and not out:
        raise DatasetError(f"{ds.manifest_file}: sample {s['id']}: anomalous but no instance region inside its "
                           f"mask (LOCO needs one region per defect)")
    return out


def write_loco(datasets, out, modality: str = "intensity", percentile: float = 99.5,
               logical_saturation: float = 0.5, gamma: float = 2.2, overwrite: bool = False,
               progress: bool = True) -> dict:
    """Write the LOCO layout (module docstring); returns the layout record."""
    from polar_render.io import atomic_dir, write_json
    from polar_render.progress import progress as progress_bar

    from polar_render.io import write_png8
    out = Path(out)
    if not 0 < logical_saturation <= 1:
        raise DatasetError(f"--logical-saturation {logical_saturation}: must be in (0, 1]")
    if not 0.1 <= gamma <= 10:
        raise DatasetError(f"--gamma {gamma}: must be in 0.1..10")
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists; pass --overwrite to replace it")
    sets = _open(datasets, modality)
    plan, skipped = _plan(sets)
    classes = sorted({a["class"] for k, i, f in plan if f.startswith("test/")
                      for a in sets[k].samples[i].get("instances") or []})
    config = defects_config(classes, logical_saturation)
    value = {e["defect_name"]: e["pixel_value"] for e in config}
    enc = _fit_encoding(sets, modality, percentile)
    counts: dict[str, int] = {}
    with atomic_dir(out) as tmp:
        for k, i, folder in progress_bar(plan, desc="loco layout", unit="img", enabled=progress):
            ds, s = sets[k], sets[k].samples[i]
            item = ds[i]
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            write_png8(tmp / folder / f"{s['id']}.png", _to_png(enc, item["image"], gamma))
            counts[folder] = counts.get(folder, 0) + 1
            if folder.startswith("test/") and folder != "test/good":
                gt = tmp / "ground_truth" / folder.split("/")[1] / str(s["id"])
                gt.mkdir(parents=True)
                for r, (pv, region) in enumerate(_regions(ds, i, item, value)):
                    write_png8(gt / f"{r:03d}.png", np.where(region, pv, 0).astype(np.uint8))
        (tmp / "defects_config.json").write_text(json.dumps(config, indent=1) + "\n")
        record = {"format": "polar_detect.loco_layout/1", "datasets": [str(ds.manifest_file) for ds in sets],
                  "modality": modality, "encoding": enc.to_dict(),
                  "mapping": f"round(255 * clip(encode(x), 0, 1){' ** (1 / %g)' % gamma if enc.kind == 'scale' else ''}), "
                             f"encode = patchcore.encoding.InputEncoding",
                  "counts": counts, "skipped": skipped, "logical_classes": sorted(_logical_classes()),
                  "defects_config": config}
        write_json(tmp / "layout.json", record)
    return record
