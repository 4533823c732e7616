"""A progress bar on stderr: tqdm when it is installed, a plain text counter otherwise (tqdm is optional)."""

from __future__ import annotations

import sys
import time

__all__ = ["progress_bar"]


class _TextCounter:
    """``desc: 12/60 images`` rewritten in place on stderr, at most a few times per second."""

    def __init__(self, total: int | None, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.count = 0
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._last >= 0.25 or self.count == self.total:
            self._last = now
            self._write()

    def _write(self) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        sys.stderr.write(f"\r{self.desc}: {self.count}{of} {self.unit}s")
        sys.stderr.flush()

    def close(self) -> None:
        self._write()
        sys.stderr.write("\n")
        sys.stderr.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def progress_bar(total: int | None = None, desc: str = "", unit: str = "image", enabled: bool = True):
    """A context manager with ``update(n=1)``: tqdm on stderr if installed, a text counter otherwise."""
    if not enabled:
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextCounter(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
