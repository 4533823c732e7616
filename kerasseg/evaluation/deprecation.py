"""Keyword arguments under their older names, accepted with a ``DeprecationWarning``."""

from __future__ import annotations

import functools
import inspect
import warnings

__all__ = ["renamed_arguments"]


def renamed_arguments(**renames: str):
    """Decorator: ``@renamed_arguments(eval_data="data")`` makes ``f(eval_data=x)`` call ``f(data=x)`` and warn.

    Raises:
        TypeError: (at call time) both the old and the new name are given.
    """
    def decorate(fn):
        positional = list(inspect.signature(fn).parameters)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs or new in positional[:len(args)]:
                        raise TypeError(f"Expected {new}= or its older name {old}=, not both. Received: both in "
                                        f"{fn.__name__}()")
                    warnings.warn(f"{fn.__name__}({old}=...) is deprecated; use {new}= instead",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate
