"""Import an MVTec LOCO AD category.

Published layout::

    <category>/train/good/*.png   <category>/validation/good/*.png
    <category>/test/{good,logical_anomalies,structural_anomalies}/<image_id>.png
    <category>/ground_truth/<anomaly type>/<image_id>/000.png, 001.png, ...
    <category>/defects_config.json

Each ground-truth image holds *one defect region*; its non-zero pixel value names the
defect type through ``defects_config.json``, a list of
``{"defect_name", "pixel_value", "saturation_threshold", "relative_saturation"}``.

What the import keeps:

* every region as an instance with its own region mask (``region_<id>.png``), class =
  ``defect_name``, ``group`` = anomaly type (logical/structural), the raw
  ``saturation_threshold`` / ``relative_saturation`` and the resolved
  ``saturation_px`` (relative: threshold x region area; absolute: the pixel count,
  capped at the area) -- what sPRO needs;
* the merged binary mask (union of the regions) for pixel metrics;
* an instance mask painting the regions in order (a later region wins where regions
  overlap; the region masks are exact).

Splits: train/good -> train, validation/good -> val, test/* -> test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from polar_render import io

from polar_detect.dataset.encodings import DatasetError
from polar_detect.dataset.images import inside, list_images, read_image
from polar_detect.dataset.mvtec import _write_import


def read_defects_config(path: Path) -> dict[int, dict]:
    """pixel_value -> config entry."""
    if not Path(path).exists():
        raise DatasetError(f"{path}: missing (MVTec LOCO categories ship a defects_config.json)")
    cfg = io.read_json(path, what="a list of defect types", error=DatasetError)
    if isinstance(cfg, dict):
        cfg = cfg.get("defects", list(cfg.values()))
    out = {}
    for e in cfg:
        try:
            out[int(e["pixel_value"])] = {"defect_name": str(e["defect_name"]),
                                          "saturation_threshold": float(e["saturation_threshold"]),
                                          "relative_saturation": bool(e["relative_saturation"])}
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{path}: entry {e!r} lacks defect_name/pixel_value/saturation_threshold/"
                               "relative_saturation") from None
    return out


def saturation_px(entry: dict, area: int) -> float:
    """Number of true-positive pixels at which a region counts as fully detected (sPRO)."""
    t = entry["saturation_threshold"]
    return float(min(t * area if entry["relative_saturation"] else t, area))


def loco_regions(config: dict[int, dict]):
    def read(src: Path, defect: str, image: Path):
        if defect == "good":
            return None, [], {}
        folder = inside(src, f"ground_truth/{defect}/{image.stem}")
        if not folder.is_dir():
            raise DatasetError(f"{folder}: missing ground truth for {image}")
        files = list_images(folder, inside(src, "."))
        if not files:
            raise DatasetError(f"{folder}: no region masks")
        inst_mask, inst, regions = None, [], {}
        for k, f in enumerate(files, start=1):
            mk = read_image(f)
            if mk.ndim == 3:
                mk = mk.max(axis=-1)
            values = sorted(set(np.unique(mk).tolist()) - {0})
            if not values:
                continue  # an empty region image carries nothing
            if len(values) > 1 or values[0] not in config:
                raise DatasetError(f"{f}: pixel values {values} are not one defect of defects_config.json "
                                   f"(known: {sorted(config)})")
            e = config[values[0]]
            region = mk > 0
            if inst_mask is None:
                inst_mask = np.zeros(mk.shape, np.uint16)
            elif mk.shape != inst_mask.shape:
                raise DatasetError(f"{f}: region mask is {mk.shape}, others {inst_mask.shape}")
            inst_mask[region] = k
            area = int(region.sum())
            inst.append({"id": k, "class": e["defect_name"], "kind": "defect", "group": defect,
                         "pixel_value": values[0], "area_px": area, "region_file": f.name,
                         "saturation_threshold": e["saturation_threshold"],
                         "relative_saturation": e["relative_saturation"], "saturation_px": saturation_px(e, area)})
            regions[k] = region
        if inst_mask is None:
            raise DatasetError(f"{folder}: every region mask is empty")
        # the binary mask handed to the writer is inst_mask > 0 == union of the regions
        return inst_mask, inst, regions
    return read


def import_loco(src: str | Path, out: str | Path, seed: int = 0, name: str | None = None,
                overwrite: bool = False, progress: bool = True) -> tuple[dict, str]:
    src = Path(src)
    for sub in ("train/good", "test"):
        if not (src / sub).is_dir():
            raise DatasetError(f"{src / sub}: missing; expected an MVTec LOCO AD category")
    config = read_defects_config(src / "defects_config.json")
    items = [("train", "good", p) for p in list_images(src / "train" / "good", src)]
    for d in sorted(p for p in (src / "test").iterdir() if p.is_dir()):
        items += [("test", d.name, p) for p in list_images(d, src)]
    val = [("val", "good", p) for p in list_images(src / "validation" / "good", src)] \
        if (src / "validation" / "good").is_dir() else []
    extra = {"defects_config": {str(k): v for k, v in sorted(config.items())},
             "sPRO": "instances carry region_mask + saturation_px per region; mask = union of regions"}
    return _write_import(src, out, items, seed, 0.0, name, overwrite, progress, loco_regions(config),
                         val_items=val, extra_manifest=extra)
