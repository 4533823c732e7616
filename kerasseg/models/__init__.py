"""Architectures, one module each; importing this package registers them all."""

from kerasseg.models import erfnet  # noqa: F401
