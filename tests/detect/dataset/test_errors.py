"""The data readers' errors (polar_detect.dataset.errors): one family, messages naming the file."""
from pathlib import Path

import pytest

from polar_detect.dataset.errors import DatasetError, InputError


def test_input_error_names_the_file_and_keeps_it():
    e = InputError(Path("d/manifest.json"), "samples[2].mask: missing")
    assert str(e) == "d/manifest.json: samples[2].mask: missing" and e.path == Path("d/manifest.json")
    assert isinstance(e, DatasetError) and isinstance(e, ValueError)
    with pytest.raises(DatasetError):          # the CLIs catch the family
        raise e


def test_verbatim_keeps_a_complete_message():
    e = InputError.verbatim("p/predictions.json", "p/predictions.json: maps.x: outside")
    assert str(e) == "p/predictions.json: maps.x: outside" and e.path == "p/predictions.json"
    assert isinstance(e, InputError)
