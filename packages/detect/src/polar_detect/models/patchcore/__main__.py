"""python -m polar_detect.models.patchcore train|meld|finetune|predict|average|export ...

  train     --data DIR --out MODEL [--modality M] [--method sequential|original]
            [--backbone ...] [--coreset-size N | --ratio R] [--epochs E] [--early-stop]
            [--augment] [--encoding auto|none] [--percentile P]
  meld      --models A B [...] --coreset-size N --out MODEL [--data DIR (recalibrate)]
  finetune  --model MODEL --data DIR --out MODEL [--epochs E] [--augment]
  predict   --model MODEL --data DIR --out PRED_DIR [--split test[,val]]
  average   --pred DIR --pred DIR [...] --out PRED_DIR [--standardise normal|none]
            [--stats-split val] [--score max|mean] [--name NAME]
  export    --model MODEL --out model.onnx [--size N|WxH] [--channels C] [--no-check]

The model file holds the extractor config and the input encoding with its train-split
statistics (``--encoding auto``, the default: see ``polar_detect.models.patchcore.encoding``):
the model reads the dataset's stored values, so the dataset's own normalisation does not
matter; ``--encoding none`` feeds the manifest-normalised values as they are (the
behaviour before issue 13). finetune/meld/predict take the modality from the model.
predict writes README section 4's format; average combines per-input predictions
(Polar-Ano eq. 4, standardised: ``polar_detect.evaluation.average``).
Bad input -> exit 2 with a message naming the file.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

MODEL_NAMES = {"sequential": "seq_patchcore", "original": "patchcore"}


class InputError(Exception):
    pass


def _dataset(root: str, split: str, modality: str, size, encoding=None):
    """The split's loader. With an input ``encoding`` (the model's) the loader returns the
    stored physical values (``normalise=False``) and the model encodes them; without one
    it returns the manifest-normalised values, which go to the backbone as they are."""
    root_p = Path(root)
    manifest = root_p / "manifest.json"
    if not manifest.is_file():
        raise InputError(f"{manifest}: dataset manifest not found")
    from polar_detect.dataset.torch_dataset import PolarDataset   # lazy: owned by the dataset issue
    try:
        ds = PolarDataset(root_p, split, [modality], size, normalise=encoding is None)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise InputError(f"{manifest}: cannot load split {split!r} modality {modality!r}: {e}") from e
    try:
        ch = ds.channels(modality)
    except (AttributeError, KeyError, TypeError):
        ch = None
    if ch is not None and encoding is not None:
        try:
            ch = encoding.out_channels(ch)
        except ValueError as e:
            raise InputError(f"{manifest}: {e}") from e
    if ch not in (None, 1, 3):
        raise InputError(f"{manifest}: modality {modality!r} has {ch} channels; the ImageNet "
                         f"backbone takes 1 (replicated) or 3"
                         + ("" if encoding is not None else " (--encoding auto maps aolp to 3)"))
    return ds


def _model_modality(model, args) -> str:
    """The modality a trained model reads; an explicit --modality must agree with it."""
    have = model.encoding.modality if model.encoding is not None else model.info.get("modality")
    if args.modality is not None and have is not None and args.modality != have:
        raise InputError(f"{getattr(args, 'model', None) or args.models[0]}: model was trained on "
                         f"{have!r}, not --modality {args.modality!r}")
    return args.modality or have or "intensity"


def _size(v):
    if v in (None, "", "native"):
        return None
    if "x" in str(v):
        w, h = str(v).lower().split("x")
        return (int(h), int(w))
    return int(v)


def _common(p):
    p.add_argument("--data", help="dataset root (holds manifest.json)")
    p.add_argument("--modality", default=None,
                   help="train: the input (default intensity); others: default the model's")
    p.add_argument("--size", default=None, help="loader resize: N or WxH; 'native' = none "
                   "(train default: native; predict default: the model's training size)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-download", action="store_true", help="only use cached backbone weights")
    p.add_argument("--quiet", action="store_true")


def _val_split(args, modality, encoding):
    """The calibration split (``--val-split``), loaded and checked *before* any training, or
    None when the dataset has no image in it. A split that exists but cannot be read (a
    changed file, NaN, a path outside the dataset...) is an error, not a missing threshold."""
    val = _dataset(args.data, args.val_split, modality, _size(args.size), encoding)
    return val if len(val) else None


def _calibrate(model, val, args):
    return None if val is None else model.calibrate(val, progress=not args.quiet)


def _augment(args, modality):
    """The modality-aware augmentation of ``--augment`` (polar_detect.augment), or None; says
    which flips/rotations the modality cannot take alone (pol45/pol135)."""
    if not args.augment:
        return None
    from polar_detect.augment import Augment
    aug = Augment(seed=args.seed, modality=modality)
    if aug.disabled and not args.quiet:
        print(f"note: --augment {aug.describe()}", file=sys.stderr)
    return aug


def cmd_train(args):
    import torch
    from polar_detect.backbones import FeatureConfig
    from polar_detect.models.patchcore import PatchCore, SequentialPatchCore, save_model
    from polar_detect.models.patchcore.encoding import InputEncoding
    torch.manual_seed(args.seed)
    modality = args.modality or "intensity"
    encoding = None if args.encoding == "none" else InputEncoding(modality, percentile=args.percentile)
    train = _dataset(args.data, "train", modality, _size(args.size), encoding)
    val = _val_split(args, modality, encoding)
    pool = "seq" if args.method == "sequential" else "local"
    fcfg = FeatureConfig(backbone=args.backbone, pool=args.pool or pool,
                         projection_dim=args.projection_dim, weights=args.weights)
    common = dict(k=args.k, device=args.device, download=not args.no_download,
                  batch_size=args.batch_size or 8, encoding=encoding)
    augment = _augment(args, modality)
    if args.method == "sequential":
        model = SequentialPatchCore(fcfg, coreset_size=args.coreset_size, **common)
        model.fit(train, epochs=args.epochs, early_stop=args.early_stop, augment=augment,
                  progress=not args.quiet)
    else:
        model = PatchCore(fcfg, ratio=args.ratio, **common).fit(train, progress=not args.quiet)
    from polar_detect.dataset.manifest import normalisation_of, read_manifest
    model.info.update({"dataset": str(Path(args.data) / "manifest.json"), "modality": modality,
                       "size": args.size, "train_images": len(train),
                       "normalisation": normalisation_of(read_manifest(args.data), [modality])})
    thr = _calibrate(model, val, args)
    path = save_model(model, args.out)
    enc = "manifest normalisation (--encoding none)" if encoding is None else encoding.describe()
    print(f"trained {MODEL_NAMES[args.method]} ({args.backbone}) on {len(train)} images: "
          f"{len(model.memory)} memory points, threshold {thr}, input {enc}; saved {path}")


def cmd_finetune(args):
    from polar_detect.models.patchcore import load_model, save_model
    model = load_model(args.model, args.device, download=not args.no_download)
    if model.method != "sequential":
        raise InputError(f"{args.model}: finetune needs a Sequential PatchCore model")
    modality = _model_modality(model, args)
    train = _dataset(args.data, "train", modality, _size(args.size), model.encoding)
    val = _val_split(args, modality, model.encoding)
    model.finetune(train, epochs=args.epochs, early_stop=args.early_stop,
                   augment=_augment(args, modality), progress=not args.quiet)
    model.info.setdefault("finetuned_on", []).append(str(Path(args.data) / "manifest.json"))
    thr = _calibrate(model, val, args)
    path = save_model(model, args.out)
    print(f"fine-tuned {args.model} on {len(train)} images; threshold {thr}; saved {path}")


def cmd_meld(args):
    from polar_detect.models.patchcore import SequentialPatchCore, load_model, save_model
    models = [load_model(args.models[0], args.device, download=not args.no_download)]
    for m in args.models[1:]:
        models.append(load_model(m, args.device, extractor=models[0].extractor))
    val = _val_split(args, _model_modality(models[0], args), models[0].encoding) if args.data else None
    try:
        out = SequentialPatchCore.meld(models, args.coreset_size, epochs=args.epochs)
    except ValueError as e:
        raise InputError(f"{' '.join(args.models)}: {e}") from e
    out.info["melded_from"] = [str(m) for m in args.models]
    out.info.setdefault("modality", models[0].info.get("modality"))
    thr = _calibrate(out, val, args)
    path = save_model(out, args.out)
    print(f"melded {len(models)} coresets ({', '.join(str(len(m.memory)) for m in models)}) "
          f"into {len(out.memory)}; threshold {thr}; saved {path}")


def _norm_check(model, args, modality):
    """Models fed manifest-normalised values (--encoding none) compare the dataset's
    normalisation with the training set's (polar_detect.dataset.manifest.check_normalisation);
    encoded models read stored values, so the dataset's normalisation does not reach them."""
    if model.encoding is not None:
        return {"status": "not applicable", "note": "the model encodes stored values itself"}
    from polar_detect.dataset.manifest import check_normalisation, mismatch_warning
    rec = check_normalisation(model.info.get("normalisation"), model.info.get("dataset"), args.data,
                              [modality], args.norm_mismatch)
    msg = mismatch_warning(rec, args.data)
    if msg:
        print(msg, file=sys.stderr)
    return rec


def cmd_predict(args):
    import numpy as np
    from polar_detect.models.patchcore import load_model
    model = load_model(args.model, args.device, download=not args.no_download)
    if args.batch_size:
        model.batch_size = args.batch_size
    # default: the resolution the model was trained at (patch scale must match training)
    size = args.size if args.size is not None else model.info.get("size")
    # "test,val": one predictions.json, split "test"; the val entries beside it are what
    # polar_detect.evaluation.evaluate uses to choose the pixel threshold
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if not splits:
        raise InputError(f"--split: no split named in {args.split!r}")
    modality = _model_modality(model, args)
    norm = _norm_check(model, args, modality)  # before anything is written
    out = Path(args.out)
    for split in splits:  # dataset checks (paths, sizes, checksums, NaN) before anything is written
        _dataset(args.data, split, modality, None, model.encoding)
    from polar_detect.predictions import PredictionsWriter
    w = PredictionsWriter(out)
    manifest = Path(args.data) / "manifest.json"
    # maps are written at the dataset's native resolution (README section 4): scoring runs
    # at the training size, then each map is resized bilinearly to its sample's size
    import torch.nn.functional as F
    for split in splits:
        ds = _dataset(args.data, split, modality, _size(size), model.encoding)
        native = _dataset(args.data, split, modality, None, model.encoding) if size is not None else None
        native_hw = {str(native[k]["id"]): tuple(native[k]["mask"].shape[-2:]) for k in range(len(native))} \
            if native is not None else {}
        for it, s, m in model.predict_dataset(ds, progress=not args.quiet):
            sid = str(it["id"])
            hw = native_hw.get(sid)
            if hw is not None and tuple(m.shape[-2:]) != hw:
                m = F.interpolate(m.reshape(1, 1, *m.shape[-2:]).float(), size=hw, mode="bilinear",
                                  align_corners=False)[0, 0]
            w.add(sid, s, m.numpy().astype(np.float32))
    name = args.name or MODEL_NAMES.get(model.method, model.method)
    w.finish(model=name, dataset=str(manifest), manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest(),
             split=splits[0], threshold=model.threshold, modality=modality, normalisation_check=norm)
    print(f"predicted {len(w.scores)} {'+'.join(splits)} images with {name}; wrote {out / 'predictions.json'}")


def _add_train(sub):
    t = sub.add_parser("train")
    _common(t)
    t.add_argument("--out", required=True, help="model file (.safetensors)")
    t.add_argument("--method", choices=["sequential", "original"], default="sequential")
    t.add_argument("--backbone", default="efficientnet_lite0",
                   choices=["efficientnet_lite0", "mobilenet_v3_large", "wide_resnet50"])
    t.add_argument("--weights", default="imagenet", help="'imagenet' or a .safetensors path")
    t.add_argument("--pool", choices=["seq", "local"], default=None,
                   help="default: seq (kernel 2) for sequential, local (3x3) for original")
    t.add_argument("--projection-dim", type=int, default=0)
    t.add_argument("--coreset-size", type=int, default=1000)
    t.add_argument("--ratio", type=float, default=0.01, help="original PatchCore coreset ratio")
    t.add_argument("--k", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--encoding", choices=["auto", "none"], default="auto",
                   help="auto: the modality's backbone encoding with train-split statistics stored "
                        "in the model (polar_detect.models.patchcore.encoding); none: manifest-normalised "
                        "values straight to the backbone (before issue 13)")
    t.add_argument("--percentile", type=float, default=99.5,
                   help="train-split percentile that maps to 1.0 (intensity, pol*, dolp)")
    return t


def _add_epochs(p, own_args: bool):
    """finetune's own arguments (``own_args``) and the epoch options it shares with train."""
    if own_args:
        _common(p)
        p.add_argument("--model", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--early-stop", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--augment", action="store_true", help="augment epochs after the first")
    p.add_argument("--val-split", default="val")


def _add_meld_predict(sub):
    m = sub.add_parser("meld")
    _common(m)
    m.add_argument("--models", nargs="+", required=True)
    m.add_argument("--coreset-size", type=int, default=None)
    m.add_argument("--epochs", type=int, default=1)
    m.add_argument("--out", required=True)
    m.add_argument("--val-split", default="val")
    p = sub.add_parser("predict")
    _common(p)
    p.add_argument("--model", required=True)
    p.add_argument("--split", default="test",
                   help="split to predict, or a list: 'test,val' also scores val in the same file "
                        "(predictions.json 'split' = the first; evaluate takes its threshold from val)")
    p.add_argument("--out", required=True, help="predictions directory")
    p.add_argument("--name", default=None, help="model name in predictions.json")
    p.add_argument("--norm-mismatch", choices=["warn", "error"], default="warn",
                   help="--encoding none models: the dataset's normalisation differs from the training "
                        "set's -> warn (default) or refuse (exit 2)")


def _add_export(sub):
    e = sub.add_parser("export", help="ONNX graph of a trained model (stored values -> map, score)",
                       description="Export a trained model to ONNX (polar_detect.models.patchcore.export): "
                                   "input 'image' (B, C, H, W) of stored dataset values, outputs 'map' "
                                   "(B, H, W) and 'score' (B,).")
    e.add_argument("--model", required=True)
    e.add_argument("--out", required=True, help="ONNX file to write (.onnx)")
    e.add_argument("--size", default=None, help="graph input size, N or WxH (default: the model's "
                                                 "training size)")
    e.add_argument("--channels", type=int, default=None,
                   help="input channels C (default 3; 6 for aolp: cos/sin of RGB)")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    e.add_argument("--no-download", action="store_true", help="only use cached backbone weights")


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m polar_detect.models.patchcore", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_epochs(_add_train(sub), own_args=False)
    _add_epochs(sub.add_parser("finetune"), own_args=True)
    _add_meld_predict(sub)
    from polar_detect.evaluation.average import add_arguments
    add_arguments(sub.add_parser(
        "average", help="Polar-Ano eq. 4: average per-input predictions (standardised per input)",
        description="Combine predictions directories of one model per input (same dataset and "
                    "split) into one: each input's maps z-scored with its normal val samples, "
                    "then averaged. See polar_detect.evaluation.average."))
    _add_export(sub)
    return ap


def cmd_export(args):
    import torch
    from polar_detect.models.patchcore import load_model
    from polar_detect.models.patchcore.export import default_channels, export_onnx, verify
    out = Path(args.out)
    if out.suffix.lower() != ".onnx" or out.is_dir():
        raise InputError(f"--out {out}: expected a .onnx file name")
    model = load_model(args.model, "cpu", download=not args.no_download)
    size = _size(args.size if args.size is not None else model.info.get("size"))
    if size is None:
        raise InputError(f"{args.model}: trained at native resolution; give the graph's input size "
                         f"with --size N or WxH")
    size = (size, size) if isinstance(size, int) else size
    ch = args.channels or default_channels(model.model)
    export_onnx(model.model, out, size, ch, args.opset)
    msg = ""
    if not args.no_check:
        x = torch.rand(2, ch, *size, generator=torch.Generator().manual_seed(0))
        r = verify(out, model.model, x)
        msg = (f"; onnxruntime vs torch: max |diff| map {r['max_abs_diff_map']:.2e}, "
               f"score {r['max_abs_diff_score']:.2e}")
    print(f"exported {out} (input Bx{ch}x{size[0]}x{size[1]}, outputs map, score){msg}")


def cmd_average(args):
    from polar_detect.evaluation.average import run
    run(args)


#: What each subcommand runs (``polar_detect.api`` calls these with parsed arguments).
COMMANDS = {"train": cmd_train, "meld": cmd_meld, "finetune": cmd_finetune, "predict": cmd_predict,
            "average": cmd_average, "export": cmd_export}
#: Subcommands that read a dataset (``--data``).
NEEDS_DATA = ("train", "finetune", "predict")


def main(argv=None) -> int:
    """Run one subcommand; a user error (bad input, missing file or weights) is printed as
    ``error: ...`` on stderr and gives exit status 2."""
    args = build_parser().parse_args(argv)
    problem = f"{args.cmd} needs --data DIR" if args.cmd in NEEDS_DATA and not args.data else None
    if problem is None:
        from polar_detect.backbones import WeightsUnavailableError
        try:
            COMMANDS[args.cmd](args)
        except (InputError, FileNotFoundError, WeightsUnavailableError, ValueError) as e:
            problem = str(e)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
    return 0 if problem is None else 2


if __name__ == "__main__":
    sys.exit(main())
