"""Command line: ``python -m polar_detect.models.draem train|predict|convert-legacy ...``.

train:   python -m polar_detect.models.draem train --data DIR --inputs R+phi --out runs/draem
             [--preset polar_ano|paper|small] [--epochs N] [--batch-size B] [--size 256]
             [--restart]
predict: python -m polar_detect.models.draem predict --model runs/draem --data DIR --split test
             --out runs/draem/pred [--inputs R+phi] [--no-overlay]
convert-legacy: python -m polar_detect.models.draem convert-legacy OLD_DIR NEW_DIR --trust-pickle

``train`` continues a checkpoint in ``--out`` only when it was made with the same config
(epochs, preset, size, inputs, seed, ...) and the same training data (content digest);
a finished model of the same run is reported as up to date. Anything else is refused
(exit 2, saying what differs) unless ``--restart`` is given.

``--data`` for predict is a dataset directory (``manifest.json``) or a plain folder of
images (intensity-only models). Writes ``predictions.json`` (contract section 4), float32
TIFF maps under ``maps/`` and colour overlays under ``overlays/``; the output directory is
built under a temporary name and renamed when complete. Models are safetensors files,
never pickles; bad input -> one-line error, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class InputError(Exception):
    """Bad user input; the message names the offending file."""


def _dirs_clash(out: Path, other: Path) -> bool:
    """``out`` is ``other`` or one of its ancestors (writing there could clobber it)."""
    o, x = out.resolve(), other.resolve()
    return o == x or o in x.parents


def _check_out(out: Path, flag: str = "--out") -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {out}: exists and is not a directory")


def _check_device(name: str) -> None:
    """``--device``: auto, cpu, or an accelerator that exists here (e.g. cuda, cuda:1)."""
    if name == "auto":
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name}: not a torch device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise InputError(f"--device {name}: no such CUDA device here "
                         f"({torch.cuda.device_count()} available)")


def _check_train_args(a: argparse.Namespace) -> None:
    """Every option checked before anything is read or written (one-line errors)."""
    checks = [("--epochs", a.epochs, lambda v: v >= 1, "must be >= 1"),
              ("--batch-size", a.batch_size, lambda v: v >= 2,
               "must be >= 2 (DRÆM's BatchNorm layers need 2 images per batch)"),
              ("--lr", a.lr, lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0"),
              ("--size", a.size, lambda v: 32 <= v <= 8192 and v % 32 == 0,
               "must be a multiple of 32 in 32..8192"),
              ("--seed", a.seed, lambda v: v >= 0, "must be >= 0"),
              ("--workers", a.workers, lambda v: v >= 0, "must be >= 0")]
    for flag, value, ok, problem in checks:
        if value is not None and not ok(value):
            raise InputError(f"{flag} {value}: {problem}")
    _check_device(a.device)
    if a.textures is not None and not Path(a.textures).is_dir():
        raise InputError(f"--textures {a.textures}: not a directory")
    data, out = Path(a.data), Path(a.out)
    _check_out(out)
    if data.exists() and _dirs_clash(out, data if data.is_dir() else data.parent):
        raise InputError(f"--out {out}: is (or contains) the dataset directory {a.data}; "
                         f"choose a separate model directory")


def _train(a: argparse.Namespace) -> None:
    from polar_detect.models.draem.polar import parse_inputs, train_polar
    from polar_detect.models.draem.train import preset
    from polar_detect.dataset.torch_dataset import PolarDataset   # lazy: other issue's module

    _check_train_args(a)
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
                                                "preset": a.preset, "normalisation": norm},
                restart=a.restart, identity={"preset": a.preset},
                log=lambda msg: print(f"draem: {msg}"))
    print(f"draem: {'+'.join(inputs)} ({a.preset}, {cfg.epochs} epochs) -> {a.out}")


class _FolderDataset(torch.utils.data.Dataset):
    """Plain images as intensity in [0, 1] (uint8 / 255, uint16 / 65535)."""

    def __init__(self, folder: Path, channels: int):
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InputError(f"{folder}: no manifest.json and no images")
        self.channels = channels

    def __len__(self):
        return len(self.files)

    def source(self, i: int) -> Path:
        """The file of item ``i`` (named in error messages)."""
        return self.files[i]

    def __getitem__(self, i):
        p = self.files[i]
        from polar_render.io import read_image
        try:
            a = read_image(p)
        except OSError as exc:
            raise InputError(str(exc)) from None
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

    from polar_detect.models.draem.polar import read_config
    cfg = read_config(a.model)
    rec = check_normalisation(cfg.get("normalisation"), cfg.get("dataset"), a.data, inputs, a.norm_mismatch)
    msg = mismatch_warning(rec, a.data)
    if msg:
        print(msg, file=sys.stderr)
    return rec


def _check_predict_args(a: argparse.Namespace) -> Path:
    """``--out`` may not be (an ancestor of) the model or data directory, nor an existing
    directory that is not an earlier prediction output (it is replaced on success)."""
    out = Path(a.out)
    _check_out(out)
    _check_device(a.device)
    for flag, other in (("--model", Path(a.model)), ("--data", Path(a.data))):
        if other.exists() and _dirs_clash(out, other if other.is_dir() else other.parent):
            raise InputError(f"--out {out}: is (or contains) the {flag} directory {other}; "
                             f"predictions need a directory of their own")
    if a.split not in ("train", "val", "test", "all"):
        raise InputError(f"--split {a.split}: choose from train, val, test or all")
    if out.is_dir() and any(out.iterdir()) and not (out / "predictions.json").is_file():
        raise InputError(f"--out {out}: exists, is not empty and holds no predictions.json; "
                         f"it would be replaced - choose a new or empty directory")
    return out


def _predict(a: argparse.Namespace) -> None:
    from polar_render.io import atomic_dir

    from polar_detect.models.draem.polar import PolarDRAEM

    out = _check_predict_args(a)
    model = PolarDRAEM.load(a.model, a.device, a.inputs)
    data = Path(a.data)
    if (data / "manifest.json").exists() or data.suffix == ".json":
        from polar_detect.dataset.torch_dataset import PolarDataset
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
    with atomic_dir(out) as tmp:
        w = _predict_all(a, model, sets, tmp)
        w.finish(model="draem:" + "+".join(model.inputs), dataset=dataset_ref, manifest_sha256=sha,
                 split=a.split, threshold=None, normalisation_check=norm)
    scores = w.scores
    s = np.array(list(scores.values()) or [np.nan])
    print(f"draem: {len(scores)} predictions ({a.split}) -> {out}/predictions.json; "
          f"score min/median/max {s.min():.4f}/{np.median(s):.4f}/{s.max():.4f}")


def _predict_all(a, model, sets: dict, out: Path):
    """Maps (and overlays) of every sample into ``out``; a non-finite map or score stops
    with an error naming the sample's files (nothing of this run is kept).  Returns the
    ``PredictionsWriter`` holding the scores and maps."""
    from polar_detect.models.draem.train import sample_names
    from polar_render.io import write_png8
    from polar_render.progress import progress
    from polar_detect.predictions import PredictionsWriter
    w = PredictionsWriter(out)
    if not a.no_overlay:
        (out / "overlays").mkdir(parents=True, exist_ok=True)
    first = sets[model.inputs[0]]
    for i in progress(range(len(first)), desc="draem predict", unit="img"):
        items = {k: ds[i] for k, ds in sets.items()}
        sid = str(items[model.inputs[0]]["id"])
        amap, score = model.predict({k: it["image"][None] for k, it in items.items()})
        m = amap[0].numpy().astype(np.float32)
        if not (np.isfinite(m).all() and math.isfinite(float(score[0]))):
            files = "; ".join(sample_names(ds, [i])[0] for ds in sets.values())
            raise InputError(f"sample {sid} ({files}): non-finite anomaly map or score "
                             f"(NaN/inf in the input or the model); no predictions written")
        w.add(sid, float(score[0]), m)
        if not a.no_overlay:
            base = _base_image(items[model.inputs[0]]["image"], model.inputs[0])
            blend = (0.5 * base + 0.5 * _colormap(m)).astype(np.uint8)
            write_png8(out / "overlays" / f"{sid}.png", blend)
    return w


def _convert(a: argparse.Namespace) -> None:
    from polar_detect.models.draem.legacy import convert_legacy
    convert_legacy(a.old_dir, a.new_dir, trust_pickle=a.trust_pickle)
    print(f"draem: converted {a.old_dir} -> {a.new_dir}")


CONVERT_HELP = """Convert a model directory written by an older version (pickled
<input>/model.pt files) into the current safetensors format. RISK: the old files are
pickles; reading one can execute code hidden in it. torch's restricted loader
(weights_only=True) is used, but it has had bypasses - convert only files you made
yourself or fully trust, otherwise retrain. Needs --trust-pickle; NEW_DIR must not exist."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m polar_detect.models.draem", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one DRÆM per input")
    t.add_argument("--data", required=True)
    t.add_argument("--inputs", default="intensity", help="e.g. R+phi or intensity,aolp")
    t.add_argument("--out", required=True)
    t.add_argument("--preset", default="polar_ano", choices=["paper", "polar_ano", "small"])
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, help=">= 2 (BatchNorm)")
    t.add_argument("--lr", type=float)
    t.add_argument("--size", type=int, default=256, help="square training size (multiple of 32)")
    t.add_argument("--seed", type=int)
    t.add_argument("--textures", help="folder of anomaly-source images (e.g. DTD)")
    t.add_argument("--workers", type=int)
    t.add_argument("--device", default="auto")
    t.add_argument("--restart", action="store_true",
                   help="train from scratch, ignoring (and at the end replacing) any model or "
                        "checkpoint in --out; without it only the same run is resumed")
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
    c = sub.add_parser("convert-legacy", help="convert pickled model.pt files (see its --help)",
                       description=CONVERT_HELP)
    c.add_argument("old_dir")
    c.add_argument("new_dir")
    c.add_argument("--trust-pickle", action="store_true",
                   help="required: you trust the old files (they are pickles and can run code)")
    return p


#: What each subcommand runs (``polar_detect.api`` calls these with parsed arguments).
COMMANDS = {"train": _train, "predict": _predict, "convert-legacy": _convert}


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        COMMANDS[a.cmd](a)
    except (InputError, ValueError, KeyError, OSError) as exc:
        # ValueError covers DatasetError, store.ModelFileError, StaleStateError,
        # TrainingError, UnsafePathError and InputTooLargeError; OSError missing/unwritable files
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
