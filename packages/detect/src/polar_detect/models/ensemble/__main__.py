"""python -m polar_detect.models.ensemble train|predict|export|average|merge|loco-layout|timed ...

Feature-level ensemble (the "ensemble thesis"): feature maps of heterogeneous detectors ->
bilinear resize to one size -> concatenate -> standardise + PCA to N channels (the global
transformation block, fitted on the training features in one streaming pass) -> SimpleNet
discriminator (linear adaptor, Gaussian-noise anomalous features, 2-layer MLP, truncated L1).

  train    --data DIR --out MODEL_DIR --source SPEC [--source SPEC ...] [--pca-dim N]
           [--modality M] [--epochs 12] [--noise-std 0.5] [--restart] ...
           SPEC: lite0|lite1|lite2[:STAGES]    EfficientNet-Lite backbone (STAGES e.g. s8+s16,
                                                default s8+s16), or backbone:NAME[:STAGES]
                 draem:MODEL_DIR[@LEVEL]        a trained DRÆM's reconstructive encoder
                                                (LEVEL s1|s2|s4|s8|s16, default s8)
                 patchcore:MODEL_FILE           a trained PatchCore's nearest-neighbour
                                                distance map (1 channel)
           The first source sets the common map size.
  predict  --model MODEL_DIR --data DIR --out PRED_DIR [--split test,val]
  export   --model MODEL_DIR --out model.onnx --size WxH
  average  --pred DIR --pred DIR ... --out DIR [--score mean]     output-level baseline:
           each model's maps and scores z-scored on its val normals, then averaged
           (polar_detect.evaluation.average)
  merge    --pred DIR --pred DIR --out DIR     e.g. draem's test and val predictions in one
  loco-layout --data DATA [--data DATA ...] --out DIR [--modality dolp]   renders as an
           MVTec LOCO category (then: python -m polar_detect.dataset import-loco)
  timed    --log FILE --name KEY [--pred DIR] -- COMMAND ... [-- COMMAND ...]   wall-clock
           time of a step (commands run in order, timed together)

Bad input -> exit 2 with a one-line message naming the file or option; nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polar_detect.models.simplenet.cli import (InputError, check_encoding, detector_parser, guarded, run_export,
                                               run_predict, run_train)

LITE = {"lite0": "efficientnet_lite0", "lite1": "efficientnet_lite1", "lite2": "efficientnet_lite2"}


def parse_source(spec: str) -> dict:
    """``--source`` text -> ``{"kind", ...}`` (see the module docstring)."""
    from polar_detect.models.ensemble.sources import DRAEM_LEVELS
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind in LITE or kind == "backbone":
        if kind == "backbone":
            name, _, stages = rest.partition(":")
        else:
            name, stages = LITE[kind], rest
        stages = [s for s in stages.replace("+", ",").split(",") if s] or ["s8", "s16"]
        if not name:
            raise InputError(f"--source {spec}: backbone:NAME[:STAGES] needs a backbone name")
        return {"kind": "backbone", "backbone": name, "stages": stages}
    if kind == "draem":
        path, level = rest, "s8"
        if "@" in rest and rest.rsplit("@", 1)[1] in DRAEM_LEVELS:
            path, level = rest.rsplit("@", 1)
        if not path:
            raise InputError(f"--source {spec}: draem:MODEL_DIR[@LEVEL] needs a model directory")
        return {"kind": "draem", "path": path, "level": level}
    if kind == "patchcore":
        if not rest:
            raise InputError(f"--source {spec}: patchcore:MODEL_FILE needs a model file")
        return {"kind": "patchcore", "path": rest}
    raise InputError(f"--source {spec}: unknown kind {kind!r}; use lite0|lite1|lite2[:STAGES], "
                     f"backbone:NAME[:STAGES], draem:MODEL_DIR[@LEVEL] or patchcore:MODEL_FILE")


def _check_sources(a) -> list[dict]:
    """Parse every --source and check the files they name (before any data is read)."""
    if not a.source:
        raise InputError("--source: give at least one feature source (e.g. --source lite0)")
    specs = [parse_source(s) for s in a.source]
    for s, text in zip(specs, a.source):
        if s["kind"] == "draem" and not (Path(s["path"]) / "draem.json").is_file():
            raise InputError(f"--source {text}: {Path(s['path']) / 'draem.json'} not found (a draem train output "
                             f"directory)")
        if s["kind"] == "patchcore" and not Path(s["path"]).is_file():
            raise InputError(f"--source {text}: {s['path']}: PatchCore model file not found")
    return specs


def _sources(a, channels):
    from polar_detect.models.patchcore.encoding import InputEncoding
    from polar_detect.models.ensemble.sources import BackboneSource, DraemSource, PatchCoreSource
    out = []
    for s, text in zip(a.specs, a.source):
        if s["kind"] == "backbone":
            check_encoding(a, channels)
            out.append(BackboneSource(s["backbone"], tuple(s["stages"]), a.pool, "imagenet",
                                      InputEncoding(a.modality, percentile=a.percentile),
                                      download=not a.no_download))
        elif s["kind"] == "draem":
            src = DraemSource.from_model_dir(s["path"], a.modality, s["level"])
            if src.channels != channels:
                raise InputError(f"--source {text}: the DRÆM takes {src.channels} channels, {a.modality!r} has "
                                 f"{channels}")
            out.append(src)
        else:
            src = PatchCoreSource.from_model_file(s["path"], download=not a.no_download)
            have = None if src.encoding is None else src.encoding.modality
            if have is not None and have != a.modality:
                raise InputError(f"--source {text}: the PatchCore model reads {have!r}, not --modality "
                                 f"{a.modality!r}")
            out.append(src)
    return out


def _train(a) -> int:
    a.specs = _check_sources(a)
    return run_train(a, _sources, "ensemble")


def _average(a) -> int:
    from polar_detect.evaluation.average import AverageError, run
    try:
        run(a)
    except AverageError as e:
        raise InputError(str(e)) from None
    return 0


def _merge(a) -> int:
    from polar_detect.models.ensemble.outputs import merge_predictions
    res = merge_predictions(a.pred, a.out, a.name)
    print(f"merged {len(a.pred)} predictions directories ({len(res['scores'])} samples) -> {Path(a.out) / 'predictions.json'}")
    return 0


def _loco(a) -> int:
    from polar_detect.models.ensemble.loco_layout import write_loco
    rec = write_loco(a.data, a.out, a.modality, a.percentile, a.logical_saturation, a.gamma, a.overwrite,
                     not a.quiet)
    print(f"LOCO layout of {a.modality}: {', '.join(f'{k} {v}' for k, v in sorted(rec['counts'].items()))} "
          f"(skipped {rec['skipped']}) -> {a.out}; import with: python -m polar_detect.dataset import-loco "
          f"--src {a.out} --out DATA")
    return 0


def _timed(a) -> int:
    from polar_detect.models.ensemble.outputs import split_commands, timed
    return timed(split_commands(list(a.command)), a.log, a.name, a.pred)


def build_parser() -> argparse.ArgumentParser:
    ap, sub, t = detector_parser("python -m polar_detect.models.ensemble", __doc__,
                                 "feature-level ensemble on the train split's normal images",
                                 "ONNX graph of the whole ensemble")
    t.add_argument("--source", action="append", default=[], metavar="SPEC",
                   help="feature source (repeat): lite0|lite1|lite2[:STAGES], backbone:NAME[:STAGES], "
                        "draem:MODEL_DIR[@LEVEL], patchcore:MODEL_FILE")
    t.add_argument("--pool", default="local", help="backbone pooling: local (3x3, stride 1) or seq")
    from polar_detect.evaluation.average import add_arguments
    add_arguments(sub.add_parser("average", help="output-level ensemble: z-score each model on its val normals, "
                                                 "average (polar_detect.evaluation.average)"))
    m = sub.add_parser("merge", help="merge predictions directories of one model (e.g. test + val)")
    m.add_argument("--pred", action="append", required=True, metavar="DIR")
    m.add_argument("--out", required=True)
    m.add_argument("--name", default=None)
    lo = sub.add_parser("loco-layout", help="datasets -> an MVTec LOCO category (regions + defects_config.json)")
    lo.add_argument("--data", action="append", required=True, help="dataset directory (repeat: train and test sets)")
    lo.add_argument("--out", required=True, help="category directory to write")
    lo.add_argument("--modality", default="intensity")
    lo.add_argument("--percentile", type=float, default=99.5, help="encoding statistic (train split)")
    lo.add_argument("--logical-saturation", type=float, default=0.5,
                    help="relative sPRO saturation of logical classes (structural: 1.0)")
    lo.add_argument("--gamma", type=float, default=2.2, help="x / q encodings: 8-bit value = 255 * v ** (1 / gamma)")
    lo.add_argument("--overwrite", action="store_true")
    lo.add_argument("--quiet", action="store_true")
    ti = sub.add_parser("timed", help="run a command and log its wall-clock time")
    ti.add_argument("--log", required=True, help="JSON timing log (created or updated)")
    ti.add_argument("--name", required=True, help="key of this step in the log")
    ti.add_argument("--pred", default=None, help="predictions directory the command writes (images/s)")
    ti.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ... [-- COMMAND ...]")
    return ap


#: What each subcommand runs (``polar_detect.api`` calls these with parsed arguments).
COMMANDS = {"train": _train, "predict": run_predict, "export": run_export, "average": _average,
            "merge": _merge, "loco-layout": _loco, "timed": _timed}


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    return guarded(COMMANDS[a.cmd], a)


if __name__ == "__main__":
    sys.exit(main())
