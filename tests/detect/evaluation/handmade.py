"""A hand-made dataset + predictions following packages/detect/README.md (sections 2 and 4),
for the evaluation tests (report, evaluate, thresholds) and the pipelines / threshold tests:
``make_run(root) -> (data, pred, valpred, samples, maps)``."""
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import tifffile

H, W = 32, 40
CLASSES = {"dent": "defect", "scratch": "defect", "water_stain": "impurity"}
LOCO_CONFIG = {"dent": {"saturation_threshold": 20.0, "relative_saturation": False},
               "scratch": {"saturation_threshold": 0.5, "relative_saturation": True},
               "water_stain": {"saturation_threshold": 1.0, "relative_saturation": True}}


def make_run(root: Path, seed=0, loco=False):
    """Write <root>/data (manifest + images + masks) and <root>/pred, <root>/valpred."""
    rng = np.random.default_rng(seed)
    data, pred, vpred = root / "data", root / "pred", root / "valpred"
    for d in (data / "img", data / "mask", data / "inst", pred / "maps", vpred / "maps"):
        d.mkdir(parents=True, exist_ok=True)
    samples, maps = [], {}
    plan = [("train", 0, [])] * 2 + [("val", 0, []), ("val", 1, ["dent"]), ("val", 1, ["water_stain"])] + \
           [("test", 0, [])] * 3 + [("test", 1, ["dent"]), ("test", 1, ["scratch"]),
                                    ("test", 1, ["dent", "water_stain"]), ("test", 1, ["scratch"])]
    for i, (split, label, classes) in enumerate(plan):
        sid = f"{i:06d}"
        rgb = (rng.random((H, W, 3)) * 255).astype(np.uint8)
        dolp = (rng.random((H, W)) * 65535).astype(np.uint16)
        cv2.imwrite(str(data / "img" / f"{sid}_intensity.png"), rgb)
        cv2.imwrite(str(data / "img" / f"{sid}_dolp.png"), dolp)
        files = {"intensity": f"img/{sid}_intensity.png", "dolp": f"img/{sid}_dolp.png"}
        inst = np.zeros((H, W), np.uint16)
        instances = []
        for k, c in enumerate(classes, 1):
            y, x = 4 + 12 * (k - 1), 5 + 3 * i % 20
            inst[y:y + 6, x:x + 8] = k
            instances.append({"id": k, "class": c, "kind": CLASSES[c]})
        m = np.where(inst > 0, 255, 0).astype(np.uint8)
        e = {"id": sid, "split": split, "label": label, "classes": classes, "source": "hand-made",
             "files": files, "mask": None, "instance_mask": None, "instances": instances, "sha256": {}}
        if label:
            cv2.imwrite(str(data / "mask" / f"{sid}.png"), m)
            cv2.imwrite(str(data / "inst" / f"{sid}.png"), inst)
            e["mask"], e["instance_mask"] = f"mask/{sid}.png", f"inst/{sid}.png"
            if loco:  # as `polar_detect.dataset import-loco` writes them: one region PNG per instance
                for k, it in enumerate(instances, 1):
                    p = f"mask/{sid}_region_{k}.png"
                    cv2.imwrite(str(data / p), np.where(inst == k, 255, 0).astype(np.uint8))
                    it.update(region_mask=p, **LOCO_CONFIG[it["class"]])
        samples.append(e)
        if split in ("val", "test"):
            maps[sid] = (rng.random((H, W)) * 0.6 + 0.5 * (inst > 0) * rng.random()).astype(np.float32)
    manifest = {"format": "polar_detect.dataset/1", "name": "handmade", "seed": seed,
                "modalities": {"intensity": {"channels": 3, "encoding": "png8", "normalisation": "/255"},
                               "dolp": {"channels": 1, "encoding": "png16", "normalisation": "/65535"}},
                "classes": CLASSES, "samples": samples}
    if loco:
        manifest["defects_config"] = {str(v): dict(LOCO_CONFIG[c], defect_name=c)
                                      for v, c in enumerate(sorted(LOCO_CONFIG), 1)}
    (data / "manifest.json").write_text(json.dumps(manifest, indent=1))
    sha = hashlib.sha256((data / "manifest.json").read_bytes()).hexdigest()
    for d, split in ((pred, "test"), (vpred, "val")):
        ids = [s["id"] for s in samples if s["split"] == split]
        for sid in ids:
            tifffile.imwrite(d / "maps" / f"{sid}.tiff", maps[sid])
        (d / "predictions.json").write_text(json.dumps({
            "model": "toy", "dataset": str(data / "manifest.json"), "manifest_sha256": sha, "split": split,
            "threshold": None, "scores": {sid: float(maps[sid].max()) for sid in ids},
            "maps": {sid: f"maps/{sid}.tiff" for sid in ids}}))
    return data, pred, vpred, samples, maps
