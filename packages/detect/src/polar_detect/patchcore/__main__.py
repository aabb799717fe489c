"""python -m polar_detect.patchcore train|meld|finetune|predict ...

  train     --data DIR --out MODEL [--method sequential|original] [--backbone ...]
            [--coreset-size N | --ratio R] [--epochs E] [--early-stop] [--augment]
  meld      --models A B [...] --coreset-size N --out MODEL [--data DIR (recalibrate)]
  finetune  --model MODEL --data DIR --out MODEL [--epochs E] [--augment]
  predict   --model MODEL --data DIR --out PRED_DIR [--split test[,val]]

The model file holds the extractor config; predict writes README section 4's format.
Bad input -> exit 2 with a message naming the file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

MODEL_NAMES = {"sequential": "seq_patchcore", "original": "patchcore"}


class InputError(Exception):
    pass


def _dataset(root: str, split: str, modality: str, size):
    root_p = Path(root)
    manifest = root_p / "manifest.json"
    if not manifest.is_file():
        raise InputError(f"{manifest}: dataset manifest not found")
    from polar_detect.data import PolarDataset   # lazy: owned by the dataset issue
    try:
        ds = PolarDataset(root_p, split, [modality], size)
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise InputError(f"{manifest}: cannot load split {split!r} modality {modality!r}: {e}") from e
    try:
        ch = ds.channels(modality)
    except (AttributeError, KeyError, TypeError):
        ch = None
    if ch not in (None, 1, 3):
        raise InputError(f"{manifest}: modality {modality!r} has {ch} channels; the ImageNet "
                         f"backbone takes 1 (replicated) or 3")
    return ds


def _size(v):
    if v in (None, "", "native"):
        return None
    if "x" in str(v):
        w, h = str(v).lower().split("x")
        return (int(h), int(w))
    return int(v)


def _common(p):
    p.add_argument("--data", help="dataset root (holds manifest.json)")
    p.add_argument("--modality", default="intensity")
    p.add_argument("--size", default=None, help="loader resize: N or WxH; 'native' = none "
                   "(train default: native; predict default: the model's training size)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--no-download", action="store_true", help="only use cached backbone weights")
    p.add_argument("--quiet", action="store_true")


def _calibrate(model, args):
    try:
        val = _dataset(args.data, args.val_split, args.modality, _size(args.size))
    except InputError:
        return None
    if len(val) == 0:
        return None
    return model.calibrate(val, progress=not args.quiet)


def cmd_train(args):
    import torch
    from polar_detect.augment import Augment
    from polar_detect.features import FeatureConfig
    from polar_detect.patchcore import PatchCore, SequentialPatchCore
    torch.manual_seed(args.seed)
    train = _dataset(args.data, "train", args.modality, _size(args.size))
    pool = "seq" if args.method == "sequential" else "local"
    fcfg = FeatureConfig(backbone=args.backbone, pool=args.pool or pool,
                         projection_dim=args.projection_dim, weights=args.weights)
    common = dict(k=args.k, device=args.device, download=not args.no_download,
                  batch_size=args.batch_size or 8)
    if args.method == "sequential":
        model = SequentialPatchCore(fcfg, coreset_size=args.coreset_size, **common)
        model.fit(train, epochs=args.epochs, early_stop=args.early_stop,
                  augment=Augment(seed=args.seed) if args.augment else None,
                  progress=not args.quiet)
    else:
        model = PatchCore(fcfg, ratio=args.ratio, **common).fit(train, progress=not args.quiet)
    model.info.update({"dataset": str(Path(args.data) / "manifest.json"), "modality": args.modality,
                       "size": args.size, "train_images": len(train)})
    thr = _calibrate(model, args)
    path = model.save(args.out)
    print(f"trained {MODEL_NAMES[args.method]} ({args.backbone}) on {len(train)} images: "
          f"{len(model.memory)} memory points, threshold {thr}, saved {path}")


def cmd_finetune(args):
    from polar_detect.augment import Augment
    from polar_detect.patchcore import load_model
    model = load_model(args.model, args.device, download=not args.no_download)
    if model.method != "sequential":
        raise InputError(f"{args.model}: finetune needs a Sequential PatchCore model")
    train = _dataset(args.data, "train", args.modality, _size(args.size))
    model.finetune(train, epochs=args.epochs, early_stop=args.early_stop,
                   augment=Augment(seed=args.seed) if args.augment else None,
                   progress=not args.quiet)
    model.info.setdefault("finetuned_on", []).append(str(Path(args.data) / "manifest.json"))
    thr = _calibrate(model, args)
    path = model.save(args.out)
    print(f"fine-tuned {args.model} on {len(train)} images; threshold {thr}; saved {path}")


def cmd_meld(args):
    from polar_detect.patchcore import SequentialPatchCore, load_model
    models = [load_model(args.models[0], args.device, download=not args.no_download)]
    for m in args.models[1:]:
        models.append(load_model(m, args.device, extractor=models[0].extractor))
    try:
        out = SequentialPatchCore.meld(models, args.coreset_size, epochs=args.epochs)
    except ValueError as e:
        raise InputError(f"{' '.join(args.models)}: {e}") from e
    out.info["melded_from"] = [str(m) for m in args.models]
    thr = _calibrate(out, args) if args.data else None
    path = out.save(args.out)
    print(f"melded {len(models)} coresets ({', '.join(str(len(m.memory)) for m in models)}) "
          f"into {len(out.memory)}; threshold {thr}; saved {path}")


def cmd_predict(args):
    import numpy as np
    import tifffile
    from polar_detect.patchcore import load_model
    model = load_model(args.model, args.device, download=not args.no_download)
    if args.batch_size:
        model.batch_size = args.batch_size
    # default: the resolution the model was trained at (patch scale must match training)
    size = args.size if args.size is not None else model.info.get("size")
    # "test,val": one predictions.json, split "test"; the val entries beside it are what
    # polar_detect.evaluate uses to choose the pixel threshold
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if not splits:
        raise InputError(f"--split: no split named in {args.split!r}")
    out = Path(args.out)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    manifest = Path(args.data) / "manifest.json"
    scores, maps = {}, {}
    # maps are written at the dataset's native resolution (README section 4): scoring runs
    # at the training size, then each map is resized bilinearly to its sample's size
    import torch.nn.functional as F
    for split in splits:
        ds = _dataset(args.data, split, args.modality, _size(size))
        native = _dataset(args.data, split, args.modality, None) if size is not None else None
        native_hw = {str(native[k]["id"]): tuple(native[k]["mask"].shape[-2:]) for k in range(len(native))} \
            if native is not None else {}
        for it, s, m in model.predict_dataset(ds, progress=not args.quiet):
            sid = str(it["id"])
            hw = native_hw.get(sid)
            if hw is not None and tuple(m.shape[-2:]) != hw:
                m = F.interpolate(m.reshape(1, 1, *m.shape[-2:]).float(), size=hw, mode="bilinear",
                                  align_corners=False)[0, 0]
            tifffile.imwrite(out / "maps" / f"{sid}.tiff", m.numpy().astype(np.float32))
            scores[sid] = s
            maps[sid] = f"maps/{sid}.tiff"
    name = args.name or MODEL_NAMES.get(model.method, model.method)
    pred = {"model": name, "dataset": str(manifest),
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
            "split": splits[0], "threshold": model.threshold, "scores": scores, "maps": maps}
    (out / "predictions.json").write_text(json.dumps(pred, indent=1))
    print(f"predicted {len(scores)} {'+'.join(splits)} images with {name}; wrote {out / 'predictions.json'}")


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m polar_detect.patchcore", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train")
    _common(t)
    t.add_argument("--out", required=True, help="model file (.safetensors)")
    t.add_argument("--method", choices=["sequential", "original"], default="sequential")
    t.add_argument("--backbone", default="efficientnet_lite0",
                   choices=["efficientnet_lite0", "mobilenet_v3_large", "wide_resnet50"])
    t.add_argument("--weights", default="imagenet", help="'imagenet' or a .pth path")
    t.add_argument("--pool", choices=["seq", "local"], default=None,
                   help="default: seq (kernel 2) for sequential, local (3x3) for original")
    t.add_argument("--projection-dim", type=int, default=0)
    t.add_argument("--coreset-size", type=int, default=1000)
    t.add_argument("--ratio", type=float, default=0.01, help="original PatchCore coreset ratio")
    t.add_argument("--k", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    for p in (t, sub.add_parser("finetune")):
        if p is not t:
            _common(p)
            p.add_argument("--model", required=True)
            p.add_argument("--out", required=True)
            p.add_argument("--seed", type=int, default=0)
        p.add_argument("--epochs", type=int, default=1)
        p.add_argument("--early-stop", action=argparse.BooleanOptionalAction, default=True)
        p.add_argument("--augment", action="store_true", help="augment epochs after the first")
        p.add_argument("--val-split", default="val")
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
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.cmd in ("train", "finetune", "predict") and not args.data:
        print(f"error: {args.cmd} needs --data DIR", file=sys.stderr)
        return 2
    from polar_detect.features import WeightsUnavailableError
    try:
        {"train": cmd_train, "meld": cmd_meld, "finetune": cmd_finetune,
         "predict": cmd_predict}[args.cmd](args)
    except (InputError, FileNotFoundError, WeightsUnavailableError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
