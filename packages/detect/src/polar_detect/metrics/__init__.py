"""Anomaly-detection metrics: functional forms and stateful (update/compute) forms.

Scores: higher = more anomalous; predicted positive iff ``score >= threshold``.  The
stateful pixel metrics take an optional ``ignore`` mask in ``update`` (pixels neither
normal nor anomalous, e.g. a dataset's ignore regions) and leave those pixels out.
"""
from .bootstrap import auroc_bootstrap_ci, bootstrap_ci, stratified_bootstrap_indices
from .defect_recall import COVERAGE_THRESHOLDS, DefectWiseRecall, defect_wise_recall, instance_coverage
from .pro import AUPRO, aupro
from .roc import (BinaryROC, binary_auroc, binary_average_precision, binary_pr_curve,
                  binary_roc_curve)
from .spro import AUsPRO, auspro, saturation_area
from .threshold import (DEGENERATE_FRACTION, THRESHOLD_DEPENDENT, F1OptimalThreshold, ThresholdedPRF,
                        binary_prf_at_threshold, f1_optimal_threshold, threshold_degeneracy)

__all__ = ["AUPRO", "AUsPRO", "BinaryROC", "COVERAGE_THRESHOLDS", "DEGENERATE_FRACTION", "DefectWiseRecall",
           "F1OptimalThreshold", "ThresholdedPRF", "aupro", "auroc_bootstrap_ci", "auspro",
           "binary_auroc", "bootstrap_ci", "stratified_bootstrap_indices",
           "binary_average_precision", "binary_pr_curve", "binary_prf_at_threshold",
           "binary_roc_curve", "defect_wise_recall", "f1_optimal_threshold", "instance_coverage",
           "saturation_area", "THRESHOLD_DEPENDENT", "threshold_degeneracy"]
