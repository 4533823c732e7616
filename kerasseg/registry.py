"""Model registry: ``register_model``, ``build_model`` and ``list_models``.

Every architecture module registers one builder under a stable name, so user code and the command-line tools can
build any model from a string::

    model = kerasseg.build_model("erfnet", num_classes=19, input_shape=(512, 1024, 3))
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import Callable

__all__ = ["register_model", "build_model", "list_models", "get_model_info", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a builder.

    Attributes:
        name: registry name.
        builder: the builder function.
        paper: short reference of the paper the model follows.
        normalization: name of the input normalisation the model expects (see `kerasseg.preprocessing`).
        default_input_shape: the builder's default ``input_shape``.
    """

    name: str
    builder: Callable
    paper: str
    normalization: str
    default_input_shape: tuple | None


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, *, paper: str = "", normalization: str = "imagenet"):
    """Decorator registering a model builder under ``name``.

    Args:
        name: registry name, e.g. ``"erfnet"``.
        paper: short paper reference shown by the tools and the README table.
        normalization: the input normalisation the model is trained with (``"imagenet"`` or ``"symmetric"``).

    Raises:
        ValueError: if ``name`` is already registered or is not a non-empty string.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Expected a non-empty string model name. Received: name={name!r}")

    def decorator(builder: Callable) -> Callable:
        if name in _REGISTRY:
            other = _REGISTRY[name].builder
            raise ValueError(
                f"A model named {name!r} is already registered (by {other.__module__}.{other.__qualname__}). "
                f"Expected a new name. Received: name={name!r} for {builder.__module__}.{builder.__qualname__}"
            )
        default_shape = inspect.signature(builder).parameters.get("input_shape")
        default_shape = None if default_shape is None or default_shape.default is inspect.Parameter.empty else (
            tuple(default_shape.default) if default_shape.default is not None else None)
        _REGISTRY[name] = ModelInfo(name, builder, paper, normalization, default_shape)
        return builder

    return decorator


def _ensure_builtin_models() -> None:
    # The architecture modules register themselves on import.
    from kerasseg import models  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registry names matching a shell-style ``pattern`` (e.g. ``"deeplab*"``)."""
    _ensure_builtin_models()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_model_info(name: str) -> ModelInfo:
    """The `ModelInfo` registered under ``name``; raises ``ValueError`` listing the known names if unknown."""
    _ensure_builtin_models()
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown model name. Expected one of {sorted(_REGISTRY)}. Received: name={name!r}")
    return _REGISTRY[name]


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
    from kerasseg.preprocessing import ModelMetadata

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
