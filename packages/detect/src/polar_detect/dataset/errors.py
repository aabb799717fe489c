"""Errors of the detect package's data readers (datasets, predictions, evaluation inputs).

:class:`DatasetError` is bad input or a broken dataset; its message names the file.
:class:`InputError` is the same family raised by the evaluation readers (``evaluate``,
``average``, ``ensemble merge``); it also keeps the offending file as ``path`` so that the
CLIs can exit with status 2 and a one-line message naming it.
"""
from __future__ import annotations


class DatasetError(ValueError):
    """Bad input or a broken dataset; the message names the file concerned."""


class InputError(DatasetError):
    """Bad input; ``path`` names the offending file, the message reads ``<path>: <msg>``."""

    def __init__(self, path, msg):
        super().__init__(f"{path}: {msg}")
        self.path = path

    @classmethod
    def verbatim(cls, path, message: str) -> "InputError":
        """An InputError whose message is already complete (it names the file itself)."""
        err = cls(path, "")
        err.args = (message,)
        return err
