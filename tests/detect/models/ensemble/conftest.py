"""Fixtures shared by the feature-ensemble tests."""
import pytest

from tests.detect.models.ensemble.tiny import draem_and_patchcore


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny dataset (two test normals moved to val, for the output-level average), a DRÆM and
    a Sequential PatchCore trained on it."""
    root = tmp_path_factory.mktemp("ensemble")
    data = draem_and_patchcore(root, n_train=6, n_test=4, coreset_size=40)
    return data, root / "draem", root / "pc.safetensors"
