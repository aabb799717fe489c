"""Fixtures shared by the DRÆM tests."""
import pytest

from tests.detect.draem_tiny import trained_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(dataset dir, trained intensity model dir) - train once per module, copy per test."""
    return trained_tiny(tmp_path_factory.mktemp("draem_trained"))
