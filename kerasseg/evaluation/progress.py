"""A `keras.utils.Progbar` as a context manager that can be switched off.

Progbar itself has neither: this adds ``with progress_bar(total, enabled=...) as bar: bar.update(1)`` (counting
increments rather than Progbar's absolute ``current``), so callers need no ``if`` around each update.
"""

from __future__ import annotations

import contextlib

__all__ = ["progress_bar"]


class _Counter:
    def __init__(self, bar):
        self.bar = bar
        self.count = 0

    def update(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(self.count)


@contextlib.contextmanager
def progress_bar(total: int | None = None, desc: str = "", unit: str = "image", enabled: bool = True):
    """Yields an object with ``update(n=1)`` that advances a `keras.utils.Progbar` of ``total`` (or does nothing).

    Args:
        total: the expected count, ``None`` when unknown.
        desc: unused by Progbar, kept for callers that name the task.
        unit: the unit name Progbar shows (``"image"`` -> ``images/s``).
        enabled: ``False`` yields a silent counter.
    """
    bar = None
    if enabled:
        import keras

        bar = keras.utils.Progbar(total, unit_name=unit)
    counter = _Counter(bar)
    yield counter
    if bar is not None and total is None:
        bar.update(counter.count, finalize=True)
