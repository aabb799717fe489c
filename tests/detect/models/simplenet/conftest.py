"""Fixtures shared by the SimpleNet tests."""
import pytest

from tests.detect.draem_tiny import dataset
from tests.detect.simplenet_tiny import one_thread, train_simplenet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("simplenet")
    data = dataset(root / "data", n_train=6, n_test=3)
    return data, one_thread(lambda: train_simplenet(data, root / "model"))
