"""No-learning baseline detectors (the floor every detector must beat).

``blurred_object_mask``: anomaly map = Gaussian-blurred part mask (``object_mask`` of the
dataset sample, sigma in pixels), image score = max of the map.  It knows where the part is
and nothing else, so inside the part it scores what "flag the part" scores; a detector whose
pixel AUROC inside the part does not beat it has learnt nothing about anomalies.
CLI: ``python -m polar_detect.models.baseline predict --data DIR --split test,val --out DIR [--sigma 8]``.
"""
from polar_detect.models.baseline.blur import blurred_object_mask, predict_dataset

__all__ = ["blurred_object_mask", "predict_dataset"]
