"""DRÆM (Zavrtanik et al., ICCV 2021) and polarimetric DRÆM (Polar-Ano eq. 4).

Modules: ``model`` (networks), ``simulate`` (anomaly simulator), ``losses``, ``train``,
``infer``, ``polar`` (one model per input, averaged), ``export`` (ONNX), ``bench``.
CLI: ``python -m polar_detect.draem train|predict``. Departures from the paper: README.md.
"""
from .model import DRAEM, WIDTHS, DiscriminativeNet, ReconstructiveNet
from .polar import PolarDRAEM, parse_inputs, train_polar
from .train import PRESETS, TrainConfig, load_model, preset, train

__all__ = ["DRAEM", "WIDTHS", "DiscriminativeNet", "ReconstructiveNet", "PolarDRAEM",
           "parse_inputs", "train_polar", "PRESETS", "TrainConfig", "load_model", "preset",
           "train"]
