"""Builds models by registry name: ``build_model``, ``list_models`` and ``get_model_info``.

Importing this module imports every built-in architecture, which registers itself with
`kerasseg.registry.register_model`; so the names listed here are complete (plus any registered by user code).
"""

from __future__ import annotations

import fnmatch
import inspect

# Imported for their registration side effect.
from kerasseg.models import deeplab, erfnet, fcn, lraspp, pspnet, segnet, unet  # noqa: F401
from kerasseg.preprocessing import ModelMetadata
from kerasseg.registry import ModelInfo, registered_models

__all__ = ["build_model", "list_models", "get_model_info"]


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registry names matching a shell-style ``pattern`` (e.g. ``"deeplab*"``)."""
    return sorted(n for n in registered_models() if fnmatch.fnmatchcase(n, pattern))


def get_model_info(name: str) -> ModelInfo:
    """The `ModelInfo` registered under ``name``; raises ``ValueError`` listing the known names if unknown."""
    table = registered_models()
    if name not in table:
        raise ValueError(
            f"Unknown model name. Expected one of {sorted(table)}. Received: name={name!r}")
    return table[name]


def build_model(name: str, num_classes: int, input_shape=None, **kwargs):
    """Builds the registered model ``name``.

    Args:
        name: registry name (see `list_models`).
        num_classes: number of output classes.
        input_shape: ``(height, width, channels)``; the builder's default when omitted.
        **kwargs: builder-specific keyword arguments. Unknown ones are an error, never silently dropped.

    Returns:
        A functional ``keras.Model`` whose ``kerasseg_metadata`` attribute records the preprocessing it expects.

    Raises:
        ValueError: unknown model name, or an invalid argument value (raised by the builder).
        TypeError: a keyword argument the builder does not accept.
    """
    info = get_model_info(name)
    params = inspect.signature(info.builder).parameters
    unknown = sorted(k for k in kwargs if k not in params or k in ("num_classes", "input_shape"))
    if unknown:
        accepted = sorted(k for k in params if k not in ("num_classes", "input_shape"))
        raise TypeError(
            f"build_model({name!r}) got unexpected keyword argument(s) {unknown}. "
            f"Expected any of num_classes, input_shape, {accepted}.")
    if input_shape is not None:
        kwargs["input_shape"] = input_shape
    model = info.builder(num_classes, **kwargs)
    model.kerasseg_metadata = ModelMetadata.for_model(model, name, normalization=info.normalization)
    # The builder arguments travel with the model (and its .keras file) so that the same architecture can be
    # rebuilt with another Keras module, as quantization-aware training does with tf_keras.
    model.kerasseg_metadata.extra["builder_kwargs"] = _jsonable(
        {k: v for k, v in kwargs.items() if k not in ("input_shape", "keras_module")})
    return model


def _jsonable(value):
    # Tuples become lists (what a JSON round trip gives back); anything else not JSON-like is kept as its repr.
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
