"""Command line: ``python -m polar_detect.draem train|predict ...`` (contract section 5).

train:   python -m polar_detect.draem train --data DIR --inputs R+phi --out runs/draem
             [--preset polar_ano|paper|small] [--epochs N] [--batch-size B] [--size 256]
predict: python -m polar_detect.draem predict --model runs/draem --data DIR --split test
             --out runs/draem/pred [--inputs R+phi] [--no-overlay]

``--data`` for predict is a dataset directory (``manifest.json``) or a plain folder of
images (intensity-only models). Writes ``predictions.json`` (contract section 4), float32
TIFF maps under ``maps/`` and colour overlays under ``overlays/``. Bad input -> exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class InputError(Exception):
    """Bad user input; the message names the offending file."""


def _train(a: argparse.Namespace) -> None:
    from .polar import parse_inputs, train_polar
    from .simulate import SimulatorConfig
    from .train import preset
    from polar_detect.data import PolarDataset   # lazy: other issue's module

    inputs = parse_inputs(a.inputs)
    cfg = preset(a.preset, epochs=a.epochs, batch_size=a.batch_size, seed=a.seed, lr=a.lr,
                 num_workers=a.workers, device=a.device)
    if a.textures:
        from dataclasses import replace
        cfg = replace(cfg, simulator=replace(cfg.simulator, texture_dir=a.textures))
    size = a.size

    def make(modality: str):
        ds = PolarDataset(a.data, "train", [modality], size=size)
        normal = [i for i, y in enumerate(ds.labels) if y == 0]
        if not normal:
            raise InputError(f"{ds.manifest_file}: no anomaly-free training samples")
        return ds if len(normal) == len(ds) else torch.utils.data.Subset(ds, normal)

    from polar_detect.dataset.manifest import normalisation_of, read_manifest
    norm = normalisation_of(read_manifest(a.data), inputs)
    train_polar(make, inputs, a.out, cfg, meta={"dataset": str(Path(a.data).resolve()),
                                                "preset": a.preset, "normalisation": norm})
    print(f"draem: trained {'+'.join(inputs)} ({a.preset}, {cfg.epochs} epochs) -> {a.out}")


class _FolderDataset(torch.utils.data.Dataset):
    """Plain images as intensity in [0, 1] (uint8 / 255, uint16 / 65535)."""

    def __init__(self, folder: Path, channels: int):
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InputError(f"{folder}: no manifest.json and no images")
        self.channels = channels

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        p = self.files[i]
        try:
            if p.suffix.lower() in {".tif", ".tiff"}:
                import tifffile
                a = tifffile.imread(p)
            else:
                from PIL import Image
                a = np.asarray(Image.open(p))
        except Exception as exc:
            raise InputError(f"{p}: unreadable image ({exc})") from None
        if a.dtype.kind in "ui":
            a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
        a = a.astype(np.float32)
        a = a[..., None] if a.ndim == 2 else a[..., :3]
        if a.shape[-1] != self.channels:
            a = np.repeat(a.mean(-1, keepdims=True), self.channels, -1)
        return {"image": torch.from_numpy(a.transpose(2, 0, 1).copy()), "id": p.stem}


def _colormap(v: np.ndarray) -> np.ndarray:
    """'jet'-like colours for values in [0, 1] -> uint8 (H, W, 3)."""
    v = np.clip(v, 0, 1)[..., None]
    rgb = np.clip(1.5 - np.abs(4 * v - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).astype(np.uint8)


def _base_image(image: torch.Tensor, modality: str) -> np.ndarray:
    x = image.numpy().astype(np.float32)
    if modality in ("aolp", "normals"):
        x = (x + 1) / 2
    x = x[:3] if x.shape[0] >= 3 else np.repeat(x[:1], 3, 0)
    return (np.clip(x.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def _norm_check(a: argparse.Namespace, inputs) -> dict:
    """The dataset's normalisation against the one the model was trained with (draem.json
    ``normalisation``; models saved before it: the training manifest it names)."""
    from polar_detect.dataset.manifest import check_normalisation, mismatch_warning

    from .polar import CONFIG
    cfg = json.loads((Path(a.model) / CONFIG).read_text())
    rec = check_normalisation(cfg.get("normalisation"), cfg.get("dataset"), a.data, inputs, a.norm_mismatch)
    msg = mismatch_warning(rec, a.data)
    if msg:
        print(msg, file=sys.stderr)
    return rec


def _predict(a: argparse.Namespace) -> None:
    import tifffile
    from PIL import Image
    from tqdm import tqdm

    from .polar import PolarDRAEM

    model = PolarDRAEM.load(a.model, a.device, a.inputs)
    data = Path(a.data)
    out = Path(a.out)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    if not a.no_overlay:
        (out / "overlays").mkdir(parents=True, exist_ok=True)
    if (data / "manifest.json").exists() or data.suffix == ".json":
        from polar_detect.data import PolarDataset
        from polar_detect.dataset.manifest import sha256_file
        norm = _norm_check(a, model.inputs)
        sets = {k: PolarDataset(data, a.split, [k], size=None) for k in model.inputs}
        first = sets[model.inputs[0]]
        dataset_ref, sha = str(first.manifest_file), sha256_file(first.manifest_file)
    else:
        if not data.is_dir():
            raise InputError(f"{data}: not a dataset directory or image folder")
        if model.inputs != ["intensity"]:
            raise InputError(f"{data}: a plain image folder only works for intensity models, "
                             f"this one uses {model.inputs}")
        ch = model.models["intensity"].channels
        sets = {"intensity": _FolderDataset(data, ch)}
        first, dataset_ref, sha = sets["intensity"], str(data.resolve()), None
        norm = None
    scores, maps = {}, {}
    for i in tqdm(range(len(first)), desc="draem predict", unit="img"):
        items = {k: ds[i] for k, ds in sets.items()}
        sid = str(items[model.inputs[0]]["id"])
        amap, score = model.predict({k: it["image"][None] for k, it in items.items()})
        m = amap[0].numpy().astype(np.float32)
        tifffile.imwrite(out / "maps" / f"{sid}.tiff", m)
        scores[sid], maps[sid] = float(score[0]), f"maps/{sid}.tiff"
        if not a.no_overlay:
            base = _base_image(items[model.inputs[0]]["image"], model.inputs[0])
            blend = (0.5 * base + 0.5 * _colormap(m)).astype(np.uint8)
            Image.fromarray(blend).save(out / "overlays" / f"{sid}.png")
    pred = {"model": "draem:" + "+".join(model.inputs), "dataset": dataset_ref,
            "manifest_sha256": sha, "split": a.split, "threshold": None,
            "normalisation_check": norm, "scores": scores, "maps": maps}
    (out / "predictions.json").write_text(json.dumps(pred, indent=1))
    s = np.array(list(scores.values()) or [np.nan])
    print(f"draem: {len(scores)} predictions ({a.split}) -> {out}/predictions.json; "
          f"score min/median/max {s.min():.4f}/{np.median(s):.4f}/{s.max():.4f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m polar_detect.draem", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one DRÆM per input")
    t.add_argument("--data", required=True)
    t.add_argument("--inputs", default="intensity", help="e.g. R+phi or intensity,aolp")
    t.add_argument("--out", required=True)
    t.add_argument("--preset", default="polar_ano", choices=["paper", "polar_ano", "small"])
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--size", type=int, default=256, help="square training size (multiple of 32)")
    t.add_argument("--seed", type=int)
    t.add_argument("--textures", help="folder of anomaly-source images (e.g. DTD)")
    t.add_argument("--workers", type=int)
    t.add_argument("--device", default="auto")
    q = sub.add_parser("predict", help="anomaly maps + scores for a split or image folder")
    q.add_argument("--model", required=True)
    q.add_argument("--data", required=True)
    q.add_argument("--split", default="test")
    q.add_argument("--inputs", help="subset of the trained inputs to average (default: all)")
    q.add_argument("--out", required=True)
    q.add_argument("--device", default="cpu")
    q.add_argument("--no-overlay", action="store_true")
    q.add_argument("--norm-mismatch", choices=["warn", "error"], default="warn",
                   help="dataset normalisation differs from the training set's: warn (default) or refuse (exit 2)")
    a = p.parse_args(argv)
    if a.cmd == "train" and a.size % 32:
        p.error("--size must be a multiple of 32")
    try:
        (_train if a.cmd == "train" else _predict)(a)
    except (InputError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ == "DatasetError":
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
