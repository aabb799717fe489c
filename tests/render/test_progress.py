"""The one progress bar (polar_render.progress): on stderr (stdout stays for results), silent
when disabled with the same interface, and note() writes a line to stderr."""
from __future__ import annotations

from polar_render.progress import note, progress


def test_disabled_bar_is_silent_and_still_iterates(capsys):
    assert list(progress(range(5), desc="render", enabled=False)) == [0, 1, 2, 3, 4]
    bar = progress(total=3, desc="manual", enabled=False)
    bar.update(2)
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_enabled_bar_draws_on_stderr_only(capsys):
    assert sum(progress(range(4), desc="samples", unit="sample")) == 6
    out, err = capsys.readouterr()
    assert out == ""
    assert "samples" in err and "4/4" in err


def test_note_goes_to_stderr(capsys):
    bar = progress(total=2, desc="train")
    note("epoch 1: loss 0.5")
    bar.update(2)
    bar.close()
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 1: loss 0.5\n" in err
