"""Polarimetric anomaly detectors (DRÆM, PatchCore, SimpleNet, feature ensembles) and the
shape-from-polarization prior, on the datasets ``polar_render`` writes.

Public API (imported on first use, so ``import polar_detect`` stays light):
:func:`train`, :func:`predict`, :func:`evaluate` (see :mod:`polar_detect.api` and the
package README).
"""
__version__ = "0.1.0"
__all__ = ["train", "predict", "evaluate"]


def __getattr__(name: str):
    if name in __all__:
        from polar_detect import api
        return getattr(api, name)
    raise AttributeError(f"module 'polar_detect' has no attribute {name!r}")
