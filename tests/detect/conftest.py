"""Fixtures shared by the detector tests."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op torch thread: the CI box has 2 shared cores (oversubscribed OpenMP threads
    slow training by >10x), and float reductions run in a fixed order (bitwise-reproducible)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
