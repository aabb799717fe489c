"""The one progress bar of both packages (render and detect): tqdm on stderr.

Every long loop (rendering samples, building datasets, training epochs, predicting, evaluating)
shows its progress through :func:`progress`, so bars look and behave the same everywhere:
written to stderr (stdout stays for results), disabled with ``enabled=False`` (``--no-progress``,
tests, benchmarks), and redrawn cleanly around messages printed with :func:`note`.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, initial: int = 0, leave: bool = True) -> tqdm:
    """A progress bar over ``iterable`` (or a manual one with ``total`` and ``.update(n)``).

    ``enabled=False`` returns a silent bar with the same interface, so callers never branch.
    """
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, initial=initial,
                leave=leave, file=sys.stderr, dynamic_ncols=True)


def note(message: str) -> None:
    """Print one line to stderr without breaking any bar that is being drawn."""
    tqdm.write(message, file=sys.stderr)
