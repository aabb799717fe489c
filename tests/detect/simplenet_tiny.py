"""Helpers shared by the SimpleNet / feature-ensemble tests: tiny training settings and
model builders on ``draem_tiny.dataset`` (3-channel intensity, 40x56 px)."""
from __future__ import annotations

from pathlib import Path

import torch

from polar_detect.models.simplenet.__main__ import main as simplenet_main

#: Tiny and fast: 2 epochs over <= 240 patches, 16 hidden units.
FAST = ["--epochs", "2", "--hidden", "16", "--batch-patches", "64", "--max-patches", "240", "--batch-size", "4",
        "--quiet"]


def train_simplenet(data: Path, out: Path, *extra: str) -> Path:
    rc = simplenet_main(["train", "--data", str(data), "--out", str(out), *FAST, *extra])
    assert rc == 0
    return out


def one_thread(fn):
    """Run ``fn()`` with one torch thread (bitwise-reproducible CPU reductions)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(n)


def pred_maps(pred: Path) -> tuple[dict, dict]:
    """``(scores, {id: map array})`` of a predictions directory."""
    import json

    import tifffile
    p = json.loads((pred / "predictions.json").read_text())
    return p["scores"], {k: tifffile.imread(pred / v) for k, v in p["maps"].items()}
