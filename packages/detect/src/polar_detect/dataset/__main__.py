"""Command line: ``python -m polar_detect.dataset <command> ...``.

    build         --render DIR[:train|:eval] [--render ...] --out DATA [--modalities intensity,aolp,dolp,normals]
                  [--seed 0] [--train-ratio 0.8] [--val-fraction 0.2] [--name NAME] [--overwrite]
                  [--impurities anomalous|normal] [--from-mosaic] [--min-visible-px N]
                  [--min-contrast V|CLASS=V,...] [--norm-from TRAIN_DATA]
    verify        DATA                      recompute every sha256 (exit 1 on a mismatch)
    export-mvtec  --data DATA --out DIR [--modalities ...] [--category NAME] [--overwrite]
    import-mvtec  --src CATEGORY_DIR --out DATA [--seed 0] [--val-fraction 0] [--overwrite]
    import-loco   --src CATEGORY_DIR --out DATA [--overwrite]
    import-polar  --src DIR --out DATA [--modalities ...] [--mode auto|angles|mosaic]
                  [--layout 90,45,135,0] [--split test] [--masks DIR] [--scale S] [--overwrite]

Each prints a progress bar on stderr and a one-line summary on stdout; bad input exits
with status 2 and a message naming the file.
"""
from __future__ import annotations

import argparse
import sys

from polar_render.limits import InputTooLargeError
from polar_render.paths import UnsafePathError
from polar_render.physics.dofp import DEFAULT_LAYOUT_TEXT

from polar_detect.dataset.encodings import DatasetError

DEFAULT_MODALITIES = "intensity,aolp,dolp,normals"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m polar_detect.dataset", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    common.add_argument("--no-progress", action="store_true")

    b = sub.add_parser("build", parents=[common], help="dataset from render runs")
    b.add_argument("--render", action="append", required=True,
                   help="render output dir (repeatable); DIR:train pins all its samples to train (normal "
                        "samples only), DIR:eval sends them to val/test (--val-fraction); plain DIR is pooled")
    b.add_argument("--out", required=True)
    b.add_argument("--modalities", default=DEFAULT_MODALITIES)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--train-ratio", type=float, default=0.8, help="fraction of normal samples for train")
    b.add_argument("--val-fraction", type=float, default=0.2, help="fraction of held-out/anomalous samples for val")
    b.add_argument("--name")
    b.add_argument("--impurities", choices=("anomalous", "normal"), default="anomalous",
                   help="impurity instances (water stains): anomalous (label 1, in the mask), or normal "
                        "variation (Sequential PatchCore: label 1 iff a defect; mask = defect pixels only)")
    b.add_argument("--from-mosaic", action="store_true",
                   help="compute the polarization modalities from the simulated DoFP raw_mosaic.png "
                        "(scene sensor.dofp.enabled) as import-polar does for a real capture")
    b.add_argument("--min-visible-px", type=int, default=0,
                   help="anomaly instances with fewer visible pixels become ignore regions (default 0: off)")
    b.add_argument("--min-contrast", default=None,
                   help="anomaly instances below this contrast become ignore regions: V (every class), "
                        "CLASS=V,... or V,CLASS=V (units per class: meta.json contrast_measure)")
    b.add_argument("--norm-from", default=None,
                   help="dataset whose per-modality normalisation (scale/offset) to copy, e.g. the "
                        "training set for a separately built test set")

    v = sub.add_parser("verify", help="check every file against the manifest's sha256")
    v.add_argument("data")

    e = sub.add_parser("export-mvtec", parents=[common], help="MVTec AD layout per modality")
    e.add_argument("--data", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--modalities", help="default: every exportable modality of the dataset")
    e.add_argument("--category")

    im = sub.add_parser("import-mvtec", parents=[common], help="import an MVTec AD category")
    im.add_argument("--src", required=True)
    im.add_argument("--out", required=True)
    im.add_argument("--seed", type=int, default=0)
    im.add_argument("--val-fraction", type=float, default=0.0)
    im.add_argument("--name")

    il = sub.add_parser("import-loco", parents=[common], help="import an MVTec LOCO AD category")
    il.add_argument("--src", required=True)
    il.add_argument("--out", required=True)
    il.add_argument("--name")

    ip = sub.add_parser("import-polar", parents=[common], help="import real polarization captures")
    ip.add_argument("--src", required=True)
    ip.add_argument("--out", required=True)
    ip.add_argument("--modalities", default="intensity,aolp,dolp")
    ip.add_argument("--mode", default="auto", choices=("auto", "angles", "mosaic"))
    ip.add_argument("--layout", default=DEFAULT_LAYOUT_TEXT, help="DoFP 2x2 angles, row-major (default Sony IMX250MZR)")
    ip.add_argument("--split", default="test", choices=("train", "val", "test"))
    ip.add_argument("--masks", help="dir of <frame>.png / <frame>_mask.png ground truth")
    ip.add_argument("--scale", type=float, help="intensity normalisation (default: 99.5th percentile of S0)")
    ip.add_argument("--name")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    progress = not getattr(args, "no_progress", False)
    try:
        if args.cmd == "build":
            from polar_detect.dataset.build import build_from_renders

            _, line = build_from_renders(args.render, args.out, args.modalities, args.seed, args.train_ratio,
                                         args.val_fraction, args.name, args.overwrite, progress,
                                         impurities=args.impurities, from_mosaic=args.from_mosaic,
                                         min_visible_px=args.min_visible_px, min_contrast=args.min_contrast,
                                         norm_from=args.norm_from)
        elif args.cmd == "verify":
            from polar_detect.dataset.manifest import read_manifest, verify

            problems = verify(args.data, progress=True)
            for p in problems:
                print(p, file=sys.stderr)
            n = len(read_manifest(args.data)["samples"])
            print(f"{args.data}: {n} samples, " + (f"{len(problems)} problems" if problems else "all checksums match"))
            return 1 if problems else 0
        elif args.cmd == "export-mvtec":
            from polar_detect.dataset.mvtec import export_mvtec

            line = export_mvtec(args.data, args.out, args.modalities, args.category, args.overwrite, progress)
        elif args.cmd == "import-mvtec":
            from polar_detect.dataset.mvtec import import_mvtec

            _, line = import_mvtec(args.src, args.out, args.seed, args.val_fraction, args.name, args.overwrite, progress)
        elif args.cmd == "import-loco":
            from polar_detect.dataset.loco import import_loco

            _, line = import_loco(args.src, args.out, name=args.name, overwrite=args.overwrite, progress=progress)
        else:
            from polar_detect.dataset.polar_capture import import_polar

            _, line = import_polar(args.src, args.out, args.modalities, args.mode, args.layout, args.split,
                                   args.masks, args.scale, args.name, args.overwrite, progress)
    except (DatasetError, UnsafePathError, InputTooLargeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
