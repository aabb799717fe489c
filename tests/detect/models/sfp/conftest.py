"""Fixtures shared by the SfP tests."""
import pytest

from polar_detect.models.sfp.toy import build_toy


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """A smaller toy set (6 train, 2 test, 16x24) for the resume/staleness tests."""
    root = tmp_path_factory.mktemp("sfp_small") / "toy"
    build_toy(root, n_train=6, n_test=2, seed=1, height=16, width=24)
    return root
