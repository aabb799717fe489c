"""python -m polar_detect.models.baseline predict --data DIR --out DIR [--split test,val] [--sigma 8] [--name NAME]

Writes predictions.json + maps/ (packages/detect/README.md section 4) of the no-learning
"blurred object mask" detector (package docstring); evaluate it with
``python -m polar_detect.evaluation.evaluate --pred DIR --data DIR --out DIR`` like any model.
Bad input -> exit 2 with a message naming the file or option, before anything is written.
"""
from __future__ import annotations

import argparse
import sys

from polar_detect.models.baseline.blur import DEFAULT_SIGMA


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m polar_detect.models.baseline", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("predict", help="blurred-object-mask anomaly maps and scores")
    p.add_argument("--data", required=True, help="dataset dir (manifest.json with object_mask entries)")
    p.add_argument("--out", required=True, help="predictions directory (replaced if it exists)")
    p.add_argument("--split", default="test,val", help="splits to predict; the first names predictions.json")
    p.add_argument("--sigma", type=float, default=DEFAULT_SIGMA, help="Gaussian sigma in pixels (default 8)")
    p.add_argument("--name", default=None, help="model name in predictions.json")
    a = ap.parse_args(argv)
    from polar_detect.dataset.encodings import DatasetError
    from polar_detect.models.baseline.blur import predict_dataset
    try:
        pred = predict_dataset(a.data, a.out, a.split, a.sigma, a.name)
    except (DatasetError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"predicted {len(pred['scores'])} {a.split.replace(',', '+')} images with {pred['model']}; "
          f"wrote {a.out}/predictions.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
