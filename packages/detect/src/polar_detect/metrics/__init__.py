"""Anomaly-detection metrics: functional forms and stateful (update/compute) forms.

Scores: higher = more anomalous; predicted positive iff ``score >= threshold``.  The
stateful pixel metrics take an optional ``ignore`` mask in ``update`` (pixels neither
normal nor anomalous, e.g. a dataset's ignore regions) and leave those pixels out.
"""
from polar_detect.metrics.bootstrap import auroc_bootstrap_ci, bootstrap_ci, stratified_bootstrap_indices
from polar_detect.metrics.defect_recall import COVERAGE_THRESHOLDS, DefectWiseRecall, defect_wise_recall, instance_coverage
from polar_detect.metrics.pro import AUPRO, aupro
from polar_detect.metrics.roc import (BinaryROC, binary_auroc, binary_average_precision, binary_pr_curve,
                  binary_roc_curve)
from polar_detect.metrics.spro import AUsPRO, auspro, saturation_area
from polar_detect.metrics.threshold import (DEGENERATE_FRACTION, THRESHOLD_DEPENDENT, F1OptimalThreshold, ThresholdedPRF,
                        binary_prf_at_threshold, f1_optimal_threshold, threshold_degeneracy)

__all__ = ["AUPRO", "AUsPRO", "BinaryROC", "COVERAGE_THRESHOLDS", "DEGENERATE_FRACTION", "DefectWiseRecall",
           "F1OptimalThreshold", "ThresholdedPRF", "aupro", "auroc_bootstrap_ci", "auspro",
           "binary_auroc", "bootstrap_ci", "stratified_bootstrap_indices",
           "binary_average_precision", "binary_pr_curve", "binary_prf_at_threshold",
           "binary_roc_curve", "defect_wise_recall", "f1_optimal_threshold", "instance_coverage",
           "saturation_area", "THRESHOLD_DEPENDENT", "threshold_degeneracy"]
