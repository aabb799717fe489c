"""One tiny real render (Mitsuba, usb_brick, 6 samples 64x48, 2 spp) with hand-made anomalies,
shared by the dataset tests of a session (``render_dir``, cached under pytest's base temp
dir), and the helpers that edit a render's anomalies."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

ANOMALOUS = {1: [(1, "dent", "defect", (10, 8, 30, 20))],
             3: [(1, "water_stain", "impurity", (0, 0, 12, 10)), (2, "dent", "defect", (40, 30, 60, 46))],
             4: [(1, "scratch", "defect", (20, 20, 50, 24))]}


def add_anomalies(sample_dir: Path, table) -> None:
    """Simulate the issue-3 renderer output: anomaly_mask.png (uint16 ids) + meta['anomalies']."""
    from polar_render.io import write_json, write_png16

    meta = json.loads((sample_dir / "meta.json").read_text())
    h, w = meta["files"]["object_mask"]["shape"][:2]
    mask = np.zeros((h, w), np.uint16)
    rows = []
    for k, cls, kind, (x0, y0, x1, y1) in table:
        mask[y0:y1, x0:x1] = k
        rows.append({"id": k, "class": cls, "kind": kind, "area_px": int((mask == k).sum()), "bbox": [x0, y0, x1, y1]})
    write_png16(sample_dir / "anomaly_mask.png", mask)
    meta["files"]["anomaly_mask"] = {"path": "anomaly_mask.png", "dtype": "uint16", "shape": [h, w],
                                     "channels": ["anomaly"], "units": "anomaly instance id, 0 = none"}
    meta["anomalies"] = rows
    write_json(sample_dir / "meta.json", meta)


def clear_anomalies(sample_dir: Path) -> None:
    """Make a sample normal (drop any renderer-made anomaly, so the tests control the labels)."""
    from polar_render.io import write_json

    meta = json.loads((sample_dir / "meta.json").read_text())
    entry = meta.get("files", {}).pop("anomaly_mask", None)
    if entry:
        (sample_dir / entry["path"]).unlink(missing_ok=True)
    meta["anomalies"] = []
    write_json(sample_dir / "meta.json", meta)


def render_dir(tmp_path_factory) -> Path:
    """One tiny real render (6 samples, 64x48, 2 spp), shared by the dataset tests of a session;
    samples 1, 3, 4 get hand-made anomalies, the others are made normal whatever the renderer
    drew. Cached under pytest's session base temp dir."""
    from polar_render.run.request import RenderRequest
    from polar_render.run.runner import run

    root = tmp_path_factory.getbasetemp() / "detect_render_usb_brick"
    done = root / ".anomalies-added"
    if not done.exists():
        summary = run(RenderRequest(scene="usb_brick", out=root, n=6, res=(64, 48), spp=2, progress=False))
        assert not summary.failed, summary.failed
        for i in range(6):
            clear_anomalies(root / "samples" / f"{i:06d}")
        for i, table in ANOMALOUS.items():
            add_anomalies(root / "samples" / f"{i:06d}", table)
        done.write_text("ok")
    return root


def copy_render(render: Path, dest: Path) -> Path:
    shutil.copytree(render / "samples", dest / "samples")
    return dest
