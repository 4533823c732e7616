"""Exception types of kerasseg.

Each subclasses the built-in exception callers already catch (``ValueError``, ``TypeError``, ``RuntimeError``), so
code written against the built-in types keeps working; `KerasSegError` catches every one of them.
"""

from __future__ import annotations

__all__ = ["KerasSegError", "InvalidFileError", "BackupMismatchError", "CalibrationDataError", "NotAModelError",
           "AccuracyDropError", "EdgeCompatibilityError", "ONNXMismatchError", "GpuUnavailableError"]


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


class AccuracyDropError(KerasSegError, ValueError, RuntimeError):
    """An exported model loses more accuracy than allowed; ``report`` holds the figures.

    Both a ``ValueError`` (like the other export errors) and a ``RuntimeError`` (what it used to be), so that
    either catch keeps working.
    """

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


class EdgeCompatibilityError(KerasSegError, ValueError):
    """An exported model fails the rules of its target; ``report`` is the `kerasseg.export.CompatibilityReport`."""

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report


class ONNXMismatchError(KerasSegError, ValueError):
    """The converted ONNX model disagrees with Keras beyond the tolerance; ``max_abs_error`` holds the figure."""

    def __init__(self, message: str, max_abs_error: float):
        super().__init__(message)
        self.max_abs_error = max_abs_error


class GpuUnavailableError(KerasSegError, RuntimeError):
    """No Vulkan adapter could be created for LiteRT's GPU accelerator (no driver, or a driver too old)."""
