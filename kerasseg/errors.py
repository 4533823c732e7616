"""Exception types of kerasseg.

Each subclasses the built-in exception callers already catch (``ValueError``, ``TypeError``), so code written
against the built-in types keeps working; `KerasSegError` catches every one of them.
"""

from __future__ import annotations

__all__ = ["KerasSegError", "InvalidFileError", "BackupMismatchError", "CalibrationDataError", "NotAModelError"]


class KerasSegError(Exception):
    """Base class of the errors kerasseg raises on bad input."""


class InvalidFileError(KerasSegError, ValueError):
    """A file is truncated, foreign, or contradicts the model or run it belongs to (the file is named)."""


class BackupMismatchError(InvalidFileError):
    """A training backup was written by another run configuration; resuming from it would mix two runs."""


class CalibrationDataError(KerasSegError, ValueError):
    """Calibration data that cannot belong to the model being exported (the offending sample is named)."""


class NotAModelError(KerasSegError, TypeError):
    """A function that takes a Keras model was given something else."""
