"""Model registry: the ``register_model`` decorator and the table it fills.

Every architecture module registers one builder under a stable name. Building a model from its name
(``build_model``, ``list_models``, ``get_model_info``) lives in `kerasseg.models.factory`, which imports the
architecture modules so that the table is complete; this module imports none of them::

    model = kerasseg.build_model("erfnet", num_classes=19, input_shape=(512, 1024, 3))
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

__all__ = ["register_model", "registered_models", "ModelInfo"]


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


def registered_models() -> dict[str, ModelInfo]:
    """A copy of the table: registry name -> `ModelInfo`, for the builders imported so far.

    `kerasseg.models.factory` imports every built-in architecture; use its `list_models` / `get_model_info` for the
    complete set.
    """
    return dict(_REGISTRY)
