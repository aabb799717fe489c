"""DRÆM (Zavrtanik et al., ICCV 2021) and polarimetric DRÆM (Polar-Ano eq. 4).

Modules: ``model`` (networks), ``simulate`` (anomaly simulator), ``losses``, ``train``,
``infer``, ``polar`` (one model per input, averaged), ``store`` (safetensors files, never
pickle), ``legacy`` (opt-in conversion of old pickles), ``export`` (ONNX), ``bench``.
CLI: ``python -m polar_detect.models.draem train|predict|convert-legacy``. Departures from the paper: README.md.
"""
from polar_detect.models.draem.model import DRAEM, WIDTHS, DiscriminativeNet, ReconstructiveNet
from polar_detect.models.draem.polar import PolarDRAEM, parse_inputs, train_polar
from polar_detect.models.draem.train import PRESETS, TrainConfig, load_model, preset, read_model, train

__all__ = ["DRAEM", "WIDTHS", "DiscriminativeNet", "ReconstructiveNet", "PolarDRAEM",
           "parse_inputs", "train_polar", "PRESETS", "TrainConfig", "load_model", "read_model", "preset",
           "train"]
