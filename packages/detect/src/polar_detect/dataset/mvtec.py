"""MVTec AD folder layout: export a dataset per modality, import an MVTec AD category.

Published layout (one category)::

    <category>/train/good/*.png
    <category>/test/good/*.png
    <category>/test/<defect>/*.png
    <category>/ground_truth/<defect>/<name>_mask.png     (0 = normal, 255 = anomalous)

Export (``export_mvtec``): ``<out>/<modality>/<category>/...`` as above, one tree per
modality, 8-bit PNG (grey for 1 channel, RGB for 3) because MVTec tools (anomalib's
MVTec/Folder datamodules, PIL ``convert("RGB")``) read 8-bit PNG. Mappings, recorded with
their constants in ``<out>/export.json``:

* intensity, pol*: ``round(255 * clip(x / scale, 0, 1) ** (1 / 2.2))``, ``scale`` = the
  manifest's intensity scale (gamma 2.2 so that the 8 bits cover the dark range);
* dolp: ``round(255 * dolp)``;  normals: ``round(255 * (n + 1) / 2)``;
* aolp: ``round(255 * (phi + pi/2) / pi)`` with phi decoded from (cos 2phi, sin 2phi)
  (the PNG cannot keep the wrap-around: phi = +-pi/2 maps to 0 and 255);
* stokes (3C channels) has no PNG form and is refused.

Train -> ``train/good``; test normal -> ``test/good``; test anomalous -> ``test/<class>``
(``combined`` when a sample has several classes, as MVTec AD does); val is not exported
(MVTec AD has no validation split). Masks: binary 8-bit 0/255. MVTec has no "ignore" label:
ignore-only samples (``ignore_image``: every anomaly instance ignored) are not exported, and
the ignore regions of anomalous samples become normal (0) pixels of their masks.

Import (``import_mvtec``): modality ``intensity`` = the image's DN as float32 (lossless for
8/16-bit), normalisation x / 255 (or / 65535); train/good -> train, test -> test
(``val_fraction`` of each test label moved to val, deterministic from ``seed``);
instances = 8-connected components of each ground-truth mask, class = defect folder.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from polar_render.io import atomic_dir, write_json, write_png8

from polar_detect.dataset import encodings as enc
from polar_detect.dataset.build import _take
from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.images import bit_scale, components, image_size, inside, list_images, read_image, read_png, read_tiff
from polar_detect.dataset.integrity import check_sample
from polar_detect.dataset.manifest import manifest_path, read_manifest
from polar_detect.dataset.writer import DatasetWriter, split_counts
from polar_render.progress import progress as progress_bar

GAMMA = 2.2
MAPPING_TEXT = {
    "intensity": "round(255 * clip(x / scale, 0, 1) ** (1 / 2.2))",
    "dolp": "round(255 * clip(dolp, 0, 1))",
    "aolp": "round(255 * (phi + pi/2) / pi), phi = 0.5 * atan2(sin2phi, cos2phi)",
    "normals": "round(255 * (clip(n, -1, 1) + 1) / 2)",
}


def to_png8(modality: str, x: np.ndarray, scale: float) -> np.ndarray:
    """Dataset-encoded float array (H, W, C) -> uint8 (H, W) or (H, W, 3) per the mappings above."""
    if modality in ("intensity", "pol0", "pol45", "pol90", "pol135"):
        v = np.clip(x / scale, 0, 1) ** (1.0 / GAMMA)
    elif modality == "dolp":
        v = np.clip(x, 0, 1)
    elif modality == "aolp":
        v = (enc.decode_aolp(x) + np.pi / 2) / np.pi
    elif modality == "normals":
        v = (np.clip(x, -1, 1) + 1) / 2
    else:
        raise DatasetError(f"modality {modality!r} cannot be exported to MVTec PNG; export intensity, pol*, "
                           "dolp, aolp or normals")
    if v.shape[-1] not in (1, 3):
        raise DatasetError(f"modality {modality!r} has {v.shape[-1]} channels after mapping; PNG needs 1 or 3")
    out = np.rint(np.clip(v, 0, 1) * 255).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def defect_folder(sample: dict) -> str:
    cls = sorted(set(sample.get("classes") or []))
    if not sample["label"]:
        return "good"
    return cls[0] if len(cls) == 1 else "combined"


def export_mvtec(data: str | Path, out: str | Path, modalities=None, category: str | None = None,
                 overwrite: bool = False, progress: bool = True) -> str:
    """Write ``<out>/<modality>/<category>/...``; returns a one-line summary. The files read
    are checked first (paths, sizes, checksums, NaN: ``integrity.check_sample``)."""
    data, out = Path(data), Path(out)
    mpath = manifest_path(data)
    m = read_manifest(mpath)
    mods = enc.check_modalities(modalities or list(m["modalities"]), tuple(m["modalities"]))
    for mod in mods:  # refuse early, before writing anything
        if mod == "stokes":
            to_png8(mod, np.zeros((1, 1, 1), np.float32), 1.0)
    category = category or m.get("name") or data.name
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists; pass --overwrite to replace it")
    exported = [(i, s) for i, s in enumerate(m["samples"]) if s["split"] != "val" and not s.get("ignore_image")]
    paths = {s["id"]: check_sample(mpath, m, i, s, mods, ("mask",)) for i, s in exported}
    counts = {"train/good": 0, "test/good": 0, "test/anomalous": 0, "val (not exported)": 0,
              "ignore-only (not exported)": 0}
    with atomic_dir(out) as tmp:  # built under a temporary name, renamed into place when complete
        for s in progress_bar(m["samples"], desc=f"export {category}", unit="sample", enabled=progress):
            if s["split"] == "val":
                counts["val (not exported)"] += 1
                continue
            if s.get("ignore_image"):  # MVTec has no "ignore": neither good nor anomalous, left out
                counts["ignore-only (not exported)"] += 1
                continue
            folder = defect_folder(s)
            sub = "train/good" if s["split"] == "train" else f"test/{folder}"
            counts[sub if folder == "good" else "test/anomalous"] += 1
            files = paths[s["id"]]
            mask = None
            if folder != "good":
                mask = np.zeros(s.get("size") or image_size(files[mods[0]]), np.uint8)
                if files["mask"] is not None:
                    mask = np.where(read_png(files["mask"]) > 0, 255, 0).astype(np.uint8)
            for mod in mods:
                base = tmp / mod / category
                (base / sub).mkdir(parents=True, exist_ok=True)
                x = read_tiff(files[mod])
                scale = float(m["modalities"][mod].get("scale", 1.0))
                write_png8(base / sub / f"{s['id']}.png", to_png8(mod, x, scale))
                if mask is not None:
                    gt = base / "ground_truth" / folder
                    gt.mkdir(parents=True, exist_ok=True)
                    write_png8(gt / f"{s['id']}_mask.png", mask)
        info = {"source": str(data.resolve()), "category": category, "png": "8-bit, grey (1 channel) or RGB (3)",
                "masks": "8-bit 0/255", "val": "not exported",
                "ignore": "ignore-only images not exported; ignore regions of anomalous images are "
                          "normal (0) pixels of their ground-truth masks",
                "modalities": {mod: {"mapping": MAPPING_TEXT["intensity" if mod.startswith("pol") else mod],
                                     "scale": float(m["modalities"][mod]["scale"]) if mod in enc.INTENSITY_LIKE else None,
                                     "channels": m["modalities"][mod]["channel_names"]} for mod in mods}}
        write_json(tmp / "export.json", info)
    return (f"exported {', '.join(f'{k} {v}' for k, v in counts.items())} x {len(mods)} modalities "
            f"({','.join(mods)}) -> {out}/<modality>/{category}")


def import_mvtec(src: str | Path, out: str | Path, seed: int = 0, val_fraction: float = 0.0,
                 name: str | None = None, overwrite: bool = False, progress: bool = True) -> tuple[dict, str]:
    """Import one MVTec AD category directory; returns (manifest, summary line)."""
    src = Path(src)
    for sub in ("train/good", "test"):
        if not (src / sub).is_dir():
            raise DatasetError(f"{src / sub}: missing; expected an MVTec AD category (train/good, test/<defect>)")
    items = [("train", "good", p) for p in list_images(src / "train" / "good", src)]
    for d in sorted(p for p in (src / "test").iterdir() if p.is_dir()):
        items += [("test", d.name, p) for p in list_images(d, src)]
    return _write_import(src, out, items, seed, val_fraction, name, overwrite, progress, mvtec_mask)


def mvtec_mask(src: Path, defect: str, image: Path) -> tuple[np.ndarray | None, list[dict], dict]:
    """Instances of ``ground_truth/<defect>/<stem>_mask.png`` (resolved inside ``src``)."""
    if defect == "good":
        return None, [], {}
    rel = f"ground_truth/{defect}/{image.stem}_mask.png"
    path = inside(src, rel)
    if not path.is_file():
        raise DatasetError(f"{src / rel}: missing")
    mk = read_image(path)
    if mk.ndim == 3:
        mk = mk.max(axis=-1)
    lab, n = components(mk > 0)
    inst = [{"id": k, "class": defect, "kind": "defect", "area_px": int((lab == k).sum())} for k in range(1, n + 1)]
    return lab, inst, {}


def _write_import(src, out, items, seed, val_fraction, name, overwrite, progress, gt_reader,
                  val_items=(), extra_manifest=None) -> tuple[dict, str]:
    """Shared by the MVTec AD and LOCO importers; ``items`` = [(split, defect folder, image path)]."""
    rng = np.random.default_rng(seed)
    split_of = {}
    for label in (0, 1):
        test = [it for it in items if it[0] == "test" and (it[1] != "good") == bool(label)]
        order = rng.permutation(len(test)) if test else []
        k = _take(len(test), val_fraction)
        for j, idx in enumerate(order):
            split_of[test[idx][2]] = "val" if j < k else "test"
    out = Path(out)
    classes, scale, colour = {}, None, None
    with DatasetWriter(out, name or src.name, seed, overwrite) as w:
        for split, defect, path in progress_bar(list(items) + list(val_items), desc=f"import {src.name}",
                                                unit="image", enabled=progress):
            img = read_image(path)
            s = bit_scale(img)
            if scale is None:
                scale, colour = s, (["R", "G", "B"] if img.ndim == 3 else ["Y"])
            elif (img.ndim == 3) != (colour != ["Y"]):
                raise DatasetError(f"{path}: channel count differs from the first image ({len(colour)} channels)")
            inst_mask, inst, regions = gt_reader(src, defect, path)
            for a in inst:
                classes[a["class"]] = a["kind"]
            sid = f"{split}_{defect}_{path.stem}"
            w.add(sid, split_of.get(path, split), int(defect != "good"), str(path.resolve()),
                  {"intensity": img.astype(np.float32)}, mask=None if inst_mask is None else inst_mask > 0,
                  instance_mask=inst_mask, instances=inst, regions=regions,
                  classes=[a["class"] for a in inst], group=defect)
        modal = {"intensity": enc.modality_entry("intensity", colour or ["Y"], scale or 1.0,
                                                 "full scale of the source images' bit depth", "DN")}
        manifest = w.finish(modal, classes, source_kind="import", source=str(src.resolve()),
                            split_params={"val_fraction": val_fraction}, colour_channels=colour,
                            **(extra_manifest or {}))
    return manifest, f"{len(manifest['samples'])} images ({split_counts(manifest['samples'])}) -> {out}"
