"""SfP evaluation (polar_detect.models.sfp.evaluate): error summaries."""
import numpy as np
import pytest

from polar_detect.models.sfp.evaluate import summarise


pytestmark = pytest.mark.usefixtures("one_thread")


def test_summary_counts_and_thresholds():
    s = summarise(np.array([1.0, 5.0, 12.0, 25.0, 40.0]), 2)
    assert s["median_deg"] == 12.0 and s["mean_deg"] == pytest.approx(16.6)
    assert (s["within_11.25"], s["within_22.5"], s["within_30"]) == (0.4, 0.6, 0.8)
    assert (s["n_pixels"], s["n_images"]) == (5, 2)
