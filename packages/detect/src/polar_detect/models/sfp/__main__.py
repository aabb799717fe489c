"""Command line: ``python -m polar_detect.models.sfp train|predict|evaluate|export``.

train:    python -m polar_detect.models.sfp train --data DATA --out DIR [--preset cpu|gpu|tiny]
              [--epochs N] [--batch-size B] [--lr LR] [--crop HxW|none] [--widths 16,32,64,128]
              [--sensor-fraction F] [--background-weight W] [--seed S] [--restart] [--stop-after N]
          -> DIR/model.safetensors, DIR/checkpoint.safetensors (after every epoch), DIR/train.json
predict:  python -m polar_detect.models.sfp predict --model DIR --data DATA --out NEW_DATA [--modality normals_learned]
          -> a copy of DATA with the predicted normals as one more modality (predict.py)
evaluate: python -m polar_detect.models.sfp evaluate --data DATA [--model DIR] [--split test,val]
              [--sensor exact,dofp] [--ior 1.5] [--out metrics.json]
          -> angular errors of the network and of the physics baseline (evaluate.py)
export:   python -m polar_detect.models.sfp export --model DIR --out model.onnx [--size HxW]

Bad input (missing/ill-formed dataset, stale checkpoint, bad option) -> one line on stderr,
exit code 2, nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _hw(text: str):
    """'128' -> (128, 128); '96x128' -> (96, 128) (height x width); 'none' -> None."""
    if text.lower() == "none":
        return "none"
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N, HxW or none, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected N, HxW or none with positive sizes, got {text!r}")
    return tuple(vals)


def _widths(text: str):
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _list(text: str):
    return tuple(v.strip() for v in text.split(",") if v.strip())


def cmd_train(a) -> int:
    from polar_detect.models.sfp.train import preset, train

    cfg = preset(a.preset, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed, widths=a.widths,
                 sensor_fraction=a.sensor_fraction, background_weight=a.background_weight, loss=a.loss,
                 device=a.device, flips=a.flips)
    if a.crop is not None:
        from dataclasses import replace
        cfg = replace(cfg, crop=None if a.crop == "none" else a.crop).validate()
    res = train(a.data, a.out, cfg, restart=a.restart, stop_after=a.stop_after, progress=not a.quiet,
                splits="all" if a.split == ("all",) else a.split)
    hist = res.get("history") or []
    last = f", last epoch mean angle {hist[-1]['mean_angle_deg']:.2f} deg" if hist and hist[-1].get("mean_angle_deg") \
        else ""
    if res["status"] == "up_to_date":
        print(f"sfp: {res['model']} is up to date (same configuration and data); nothing to do")
    elif res["status"] == "interrupted":
        print(f"sfp: stopped after epoch {res['epochs_done']}/{res['epochs']} ({res['seconds_this_call']} s{last}); "
              f"rerun the same command to resume from {res['checkpoint']}")
    else:
        print(f"sfp: {res['status']} {res['epochs']} epochs ({res['parameters']:,} parameters, "
              f"{res['seconds_this_call']} s this call{last}) -> {res['model']}")
    return 0


def cmd_predict(a) -> int:
    from polar_detect.models.sfp.predict import predict_dataset

    manifest, warnings = predict_dataset(a.model, a.data, a.out, a.modality, a.overwrite, a.norm_mismatch,
                                         progress=not a.quiet, link=a.link)
    for w in warnings:
        print(w, file=sys.stderr)
    print(f"sfp: {len(manifest['samples'])} samples with modality {a.modality} -> {a.out}")
    return 0


def cmd_evaluate(a) -> int:
    from polar_detect.models.sfp.evaluate import evaluate, table

    if a.out is not None and Path(a.out).is_dir():
        raise ValueError(f"--out {a.out}: is a directory; give a .json file name")
    res = evaluate(a.data, a.model, a.split if a.split != ("all",) else "all", a.sensor, a.ior, a.seed,
                   progress=not a.quiet, limit=a.limit)
    print(table(res))
    if a.out is not None:
        from polar_render.io import write_json
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(a.out, res)
        md = Path(a.out).with_suffix(".md")
        from polar_render.io import atomic_path
        with atomic_path(md) as tmp:
            Path(tmp).write_text(table(res) + "\n")
        print(f"sfp: metrics -> {a.out}")
    return 0


def cmd_export(a) -> int:
    from polar_detect.models.sfp.export import example_input, export_onnx, verify
    from polar_detect.models.sfp.train import load_model

    if Path(a.out).suffix.lower() != ".onnx":
        raise ValueError(f"--out {a.out}: expected a .onnx file name")
    if a.size == "none":
        raise ValueError("--size: give an example size HxW, not none")
    net, _ = load_model(a.model)
    path = export_onnx(net, a.out, a.size, a.opset)
    check = verify(path, net, example_input(net, a.size))
    print(f"sfp: exported -> {path} (onnx checker ok"
          + (f", max |onnxruntime - torch| {check['max_abs_diff']:.2e}" if "max_abs_diff" in check else "") + ")")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m polar_detect.models.sfp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train (or resume) the SfP network on a dataset's train split")
    t.add_argument("--data", required=True, help="dataset with intensity, dolp, aolp, normals and object masks")
    t.add_argument("--out", required=True, help="training directory")
    t.add_argument("--preset", default="cpu", help="cpu (default), gpu or tiny")
    t.add_argument("--split", type=_list, default=("train",), help="split(s) to train on (default train)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--widths", type=_widths, help="channels per U-Net level, e.g. 16,32,64,128")
    t.add_argument("--crop", type=_hw, help="training crop N or HxW around part pixels, or none")
    t.add_argument("--sensor-fraction", type=float, help="share of samples seen through the DoFP sensor model")
    t.add_argument("--background-weight", type=float, help="loss weight of non-part surface pixels")
    t.add_argument("--loss", help="angle (default) or cosine")
    t.add_argument("--flips", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--device", help="cpu or cuda[:k]")
    t.add_argument("--restart", action="store_true", help="discard a checkpoint/model of another config or data")
    t.add_argument("--stop-after", type=int, help="stop after this many epochs in this call (resume later)")
    p = sub.add_parser("predict", help="copy a dataset and add the predicted normals as a modality")
    p.add_argument("--model", required=True, help="training directory or model.safetensors")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="new dataset directory")
    p.add_argument("--modality", default="normals_learned")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--norm-mismatch", choices=["warn", "error"], default="warn")
    p.add_argument("--link", action="store_true",
                   help="hard-link the source files instead of copying them (saves space)")
    e = sub.add_parser("evaluate", help="angular errors of the network and of the physics baseline")
    e.add_argument("--data", required=True)
    e.add_argument("--model", help="training directory or model.safetensors (omit: physics baseline only)")
    e.add_argument("--split", type=_list, default=("test", "val"))
    e.add_argument("--sensor", type=_list, default=("exact", "dofp"), help="exact, dofp or exact,dofp")
    e.add_argument("--ior", type=float, default=1.5, help="refractive index of the physics baseline")
    e.add_argument("--seed", type=int, default=0, help="seed of the DoFP sensor noise")
    e.add_argument("--limit", type=int, help="evaluate the first N images only")
    e.add_argument("--out", help="metrics JSON file (a .md table is written next to it)")
    x = sub.add_parser("export", help="export the network to ONNX (checked against torch)")
    x.add_argument("--model", required=True)
    x.add_argument("--out", required=True, help=".onnx file")
    x.add_argument("--size", type=_hw, default=(240, 320), help="example input size HxW (axes stay dynamic)")
    x.add_argument("--opset", type=int, default=17)
    for s in (t, p, e):
        s.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


#: What each subcommand runs (``polar_detect.api`` calls these with parsed arguments).
COMMANDS = {"train": cmd_train, "predict": cmd_predict, "evaluate": cmd_evaluate, "export": cmd_export}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "evaluate" and args.limit is not None and args.limit < 1:
        print(f"error: --limit: must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.cmd](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sfp: interrupted; a training run resumes from its last checkpoint when rerun", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
