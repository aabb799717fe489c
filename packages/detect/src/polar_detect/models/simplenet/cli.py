"""Command-line pieces shared by ``python -m polar_detect.models.simplenet`` and
``python -m polar_detect.models.ensemble``: training options, train / predict / export commands,
and the error handling (bad input -> one line ``error: ...`` naming the file or option,
exit status 2, nothing written)."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from polar_detect.models.simplenet.train import TrainConfig


class InputError(ValueError):
    """Bad user input; the message names the file or option."""


# ------------------------------------------------------------------ parsing helpers
def pca_dim(v: str) -> int | None:
    """``--pca-dim``: ``all`` -> None, else an integer (range checked with the config)."""
    if str(v).lower() == "all":
        return None
    try:
        return int(v)
    except ValueError:
        raise InputError(f"--pca-dim {v}: expected an integer >= 1 or 'all'") from None


def size_hw(v: str) -> tuple[int, int]:
    """``--size WxH`` -> (H, W)."""
    try:
        w, h = (int(x) for x in str(v).lower().split("x"))
    except ValueError:
        raise InputError(f"--size {v}: expected WxH, e.g. 320x240") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise InputError(f"--size {v}: sides must be in 8..8192")
    return h, w


def detector_parser(prog: str, doc: str, train_help: str, export_help: str):
    """``(parser, subparsers, train parser)`` with the ``train``/``predict``/``export`` commands
    every feature detector has (SimpleNet and the feature ensemble add their own options)."""
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help=train_help)
    add_train_args(t)
    add_predict_args(sub.add_parser("predict", help="anomaly maps + scores (contract section 4)"))
    add_export_args(sub.add_parser("export", help=export_help))
    return ap, sub, t


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", required=True, help="dataset directory (manifest.json); its train split")
    p.add_argument("--out", required=True, help="model directory (model.safetensors, checkpoint.safetensors)")
    p.add_argument("--modality", default="intensity", help="input modality (default intensity)")
    p.add_argument("--percentile", type=float, default=99.5,
                   help="backbone input encoding: train-split percentile mapped to 1.0 (patchcore.encoding)")
    p.add_argument("--pca-dim", default="all", metavar="N|all",
                   help="channels kept by the PCA of the transformation block (default all: a rotation)")
    p.add_argument("--balance", default=d.balance, help="source (each source the same total variance) or channel")
    p.add_argument("--whiten", action="store_true", help="scale every PCA output channel to unit variance")
    p.add_argument("--hidden", type=int, default=d.hidden, help="discriminator hidden units (paper 1024)")
    p.add_argument("--noise-std", type=float, default=d.noise_std,
                   help="Gaussian noise std of the anomalous features, in units where the training patches' mean per-channel variance is 1")
    p.add_argument("--margin", type=float, default=d.margin, help="truncated-L1 thresholds th+ = -th- (paper 0.5)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the patch bank")
    p.add_argument("--batch-patches", type=int, default=d.batch_patches, help="patches per training step")
    p.add_argument("--max-patches", type=int, default=d.max_patches, help="training patches kept (memory bound)")
    p.add_argument("--lr-adaptor", type=float, default=d.lr_adaptor)
    p.add_argument("--lr-discriminator", type=float, default=d.lr_discriminator)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--blur-sigma", type=float, default=d.blur_sigma, help="Gaussian smoothing of the map (px)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_images, help="images per feature batch")
    p.add_argument("--restart", action="store_true",
                   help="train from scratch, replacing a model/checkpoint of another run in --out")
    p.add_argument("--no-download", action="store_true", help="(backbones whose weights need a download)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(a) -> TrainConfig:
    return TrainConfig(pca_dim=pca_dim(a.pca_dim), balance=a.balance, whiten=a.whiten, hidden=a.hidden, noise_std=a.noise_std,
                       margin=a.margin, epochs=a.epochs, batch_patches=a.batch_patches, max_patches=a.max_patches,
                       lr_adaptor=a.lr_adaptor, lr_discriminator=a.lr_discriminator, weight_decay=a.weight_decay,
                       blur_sigma=a.blur_sigma, seed=a.seed, batch_images=a.batch_size)


def _clash(out: Path, other: Path) -> bool:
    """``out`` is ``other`` or one of its ancestors (writing there could clobber it)."""
    o, x = out.resolve(), other.resolve()
    return o == x or o in x.parents


def _manifest(data) -> Path:
    p = Path(data) / "manifest.json"
    if not p.is_file():
        raise InputError(f"{p}: dataset manifest not found (--data {data})")
    return p


def check_out_dir(out: Path, flag: str, *others: tuple[str, Path]) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {out}: exists and is not a directory")
    for name, other in others:
        if other.exists() and _clash(out, other if other.is_dir() else other.parent):
            raise InputError(f"{flag} {out}: is (or contains) the {name} {other}; choose a directory of its own")


def check_train_args(a, cfg: TrainConfig) -> None:
    """Options and paths, before any model or data file is opened."""
    from polar_detect.models.simplenet.train import check_config
    if not (isinstance(a.percentile, float) and math.isfinite(a.percentile) and 0 < a.percentile <= 100):
        raise InputError(f"--percentile {a.percentile}: must be in (0, 100]")
    check_config(cfg)
    _manifest(a.data)
    check_out_dir(Path(a.out), "--out", ("dataset directory", Path(a.data)))


def open_train(a):
    """The normal images of the train split (stored values) -> (dataset, channels)."""
    import torch

    from polar_detect.dataset.torch_dataset import PolarDataset
    mpath = _manifest(a.data)
    ds = PolarDataset(a.data, "train", [a.modality], normalise=False)
    normal = [i for i, y in enumerate(ds.labels) if y == 0]
    if not normal:
        raise InputError(f"{mpath}: no anomaly-free images in the train split")
    sub = ds if len(normal) == len(ds) else torch.utils.data.Subset(ds, normal)
    return sub, ds.channels(a.modality)


def check_encoding(a, channels: int) -> None:
    from polar_detect.models.patchcore.encoding import InputEncoding
    enc = InputEncoding(a.modality, percentile=a.percentile)
    c = enc.out_channels(channels)
    if c not in (1, 3):
        raise InputError(f"{Path(a.data) / 'manifest.json'}: modality {a.modality!r} has {channels} channels "
                         f"({c} after its backbone encoding); the ImageNet backbone takes 1 or 3")


def run_train(a, make_sources, kind: str) -> int:
    """``make_sources(a, channels)`` -> unfitted sources (after the data checks)."""
    from polar_detect.models.simplenet.train import train
    cfg = config_from_args(a)
    check_train_args(a, cfg)
    data, channels = open_train(a)
    sources = make_sources(a, channels)
    model, meta = train(sources, data, a.out, cfg, kind=kind, modality=a.modality, restart=a.restart,
                        progress=not a.quiet, log=lambda m: print(f"{kind}: {m}"),
                        meta={"dataset": str(Path(a.data).resolve() / "manifest.json")})
    info = meta.get("meta", {})
    last = (info.get("history") or [{}])[-1]
    print(f"{kind}: trained on {info.get('train_images')} images ({len(model.sources)} source(s), "
          f"{model.transform.in_dim} -> {model.transform.out_dim} channels, {info.get('bank_patches')} patches) "
          f"in {info.get('train_seconds')} s; last epoch loss {last.get('loss', float('nan')):.4f}, "
          f"real/fake accuracy {last.get('real_acc', float('nan')):.3f}/{last.get('fake_acc', float('nan')):.3f}; "
          f"saved {Path(a.out) / 'model.safetensors'}")
    return 0


def add_predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (or its model.safetensors)")
    p.add_argument("--data", required=True, help="dataset directory (manifest.json)")
    p.add_argument("--out", required=True, help="predictions directory (replaced when complete)")
    p.add_argument("--split", default="test",
                   help="split(s) to predict, e.g. 'test,val' (predictions.json 'split' = the first)")
    p.add_argument("--name", default=None, help="model name in predictions.json")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--quiet", action="store_true")


def run_predict(a) -> int:
    from polar_detect.models.simplenet.predict import predict_dir
    from polar_detect.models.simplenet.store import load_model
    splits = [s.strip() for s in a.split.split(",") if s.strip()]
    if not splits or any(s not in ("train", "val", "test") for s in splits):
        raise InputError(f"--split {a.split}: name one or more of train, val, test (comma-separated)")
    if a.batch_size < 1:
        raise InputError(f"--batch-size {a.batch_size}: must be >= 1")
    out = Path(a.out)
    _manifest(a.data)
    check_out_dir(out, "--out", ("--model directory", Path(a.model)), ("--data directory", Path(a.data)))
    if out.is_dir() and any(out.iterdir()) and not (out / "predictions.json").is_file():
        raise InputError(f"--out {out}: exists, is not empty and holds no predictions.json; it would be "
                         f"replaced - choose a new or empty directory")
    model, meta = load_model(a.model)
    pred = predict_dir(model, meta, a.data, out, splits, a.name, a.batch_size, not a.quiet)
    t = pred["timing"]
    print(f"predicted {len(pred['scores'])} {'+'.join(splits)} images ({t['images_per_s']} images/s in the "
          f"forward pass, {t['torch_threads']} threads); wrote {out / 'predictions.json'}")
    return 0


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (or its model.safetensors)")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--size", required=True, metavar="WxH", help="input size of the graph")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")


def run_export(a) -> int:
    import torch

    from polar_detect.models.simplenet.export import export_onnx, verify
    from polar_detect.models.simplenet.store import load_model
    out = Path(a.out)
    size = size_hw(a.size)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"--out {out}: expected a .onnx file name")
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory")
    model, meta = load_model(a.model)
    ch = int((meta.get("meta") or {}).get("channels", 1))
    export_onnx(model, out, ch, size, a.opset)
    msg = ""
    if not a.no_check:
        r = verify(out, model, torch.rand(1, ch, *size, generator=torch.Generator().manual_seed(0)))
        msg = f"; onnxruntime vs torch: max |diff| map {r['max_abs_diff_map']:.2e}, score {r['max_abs_diff_score']:.2e}"
    print(f"exported {out} (input 1x{ch}x{size[0]}x{size[1]}){msg}")
    return 0


def guarded(fn, a) -> int:
    """Run a command; user errors -> ``error: ...`` on stderr and exit status 2."""
    from polar_detect.backbones import WeightsUnavailableError
    try:
        return fn(a)
    except (InputError, ValueError, KeyError, OSError, WeightsUnavailableError) as e:
        # ValueError covers DatasetError, ModelFileError, StaleStateError, TrainingError,
        # SourceError, EncodingError, UnsafePathError, InputTooLargeError
        msg = str(e) if not isinstance(e, KeyError) else f"missing key {e}"
        print(f"error: {msg}", file=sys.stderr)
        return 2
