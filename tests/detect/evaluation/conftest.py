"""Fixtures shared by the evaluation tests: ``run`` (the hand-made dataset and predictions of
``handmade.make_run``, LOCO regions included) and ``data`` (a dataset with ignore regions,
``ignore_data``)."""
import pytest

from tests.detect.evaluation.handmade import make_run
from tests.detect.evaluation.ignore_data import data  # noqa: F401 - fixture


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path, loco=True)
