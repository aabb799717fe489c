"""Tiny synthetic render directories (contract section 1) for dataset/evaluation tests: no
Mitsuba, a few milliseconds each.  Every sample has intensity (RGB), dolp, aolp, normals,
an object_mask (a rectangle: the part) and, when it has anomalies, anomaly_mask.png with the
issue-13 visibility fields (visible_px, contrast, contrast_measure, below_min_visible) unless
``visibility=False`` (an old render)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

H, W = 24, 32
PART = (4, 4, 28, 20)  # x0, y0, x1, y1 of the part in object_mask
MEASURE = {"dent": "normal_deviation_deg", "scratch": "normal_deviation_deg",
           "water_stain": "reflectance_change", "missing": "presence"}
KIND = {"dent": "defect", "scratch": "defect", "water_stain": "impurity", "missing": "defect"}


def anomaly(i, cls, box, contrast=None, below=None):
    """One anomaly spec: id, class, bbox (x0, y0, x1, y1), optional contrast / below_min_visible."""
    return {"id": i, "class": cls, "box": box, "contrast": contrast, "below": below}


def make_render(root: Path, samples, seed: int = 0, visibility: bool = True, h: int = H, w: int = W,
                intensity_gain: float = 1.0) -> Path:
    """``samples``: one list of ``anomaly(...)`` specs per sample (``[]`` = normal)."""
    from polar_render.io import write_float_tiff, write_json, write_png16

    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = PART
    for i, table in enumerate(samples):
        d = Path(root) / "samples" / f"{i:06d}"
        d.mkdir(parents=True, exist_ok=True)
        files = {}

        def put(name, arr, channels, fname=None):
            fname = fname or f"{name}.tiff"
            if fname.endswith(".png"):
                write_png16(d / fname, arr)
            else:
                write_float_tiff(d / fname, arr)
            files[name] = {"path": fname, "dtype": str(arr.dtype), "shape": list(arr.shape), "channels": channels}

        put("intensity", (rng.random((h, w, 3)) * intensity_gain).astype(np.float32), ["R", "G", "B"])
        put("dolp", rng.random((h, w, 3)).astype(np.float32), ["R", "G", "B"])
        put("aolp", ((rng.random((h, w, 3)) - 0.5) * np.pi).astype(np.float32), ["R", "G", "B"])
        n = rng.normal(size=(h, w, 3)).astype(np.float32)
        put("normals", n / np.linalg.norm(n, axis=-1, keepdims=True), ["x", "y", "z"])
        obj = np.zeros((h, w), np.uint16)
        obj[y0:y1, x0:x1] = 1
        put("object_mask", obj, ["instance"], "object_mask.png")
        rows = []
        if table:
            mask = np.zeros((h, w), np.uint16)
            for a in table:
                bx0, by0, bx1, by1 = a["box"]
                mask[by0:by1, bx0:bx1] = a["id"]
            for a in table:
                area = int((mask == a["id"]).sum())
                row = {"id": a["id"], "class": a["class"], "kind": KIND[a["class"]], "area_px": area,
                       "bbox": list(a["box"])}
                if visibility:
                    row.update(visible_px=area, contrast=float(a["contrast"] if a["contrast"] is not None else 5.0),
                               contrast_measure=MEASURE[a["class"]], below_min_visible=bool(a["below"]))
                rows.append(row)
            put("anomaly_mask", mask, ["anomaly"], "anomaly_mask.png")
        write_json(d / "meta.json", {"index": i, "files": files, "anomalies": rows})
    return Path(root)


# sample specs shared by the dataset tests (``make_render(root, NORMAL8)``: 8 normal samples)
NORMAL8 = [[] for _ in range(8)]
MIXED = [[], [], [], [], [anomaly(1, "dent", (5, 5, 12, 12))], [], [anomaly(1, "scratch", (14, 6, 24, 8))],
         [anomaly(1, "dent", (6, 10, 14, 16))], []]
