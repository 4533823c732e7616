"""The choices an export takes (modes, heads, I/O types), their validation, and the metadata an export records."""

from __future__ import annotations

import dataclasses
import json

from kerasseg.preprocessing import NORMALIZATIONS, ModelMetadata
from kerasseg.runtimes import OUTPUT_HEADS

__all__ = ["TFLITE_MODES", "MODES", "INTEGER_MODES", "OUTPUT_HEADS", "IO_DTYPES", "INPUT_FORMATS", "LABEL_DTYPES",
           "check_choice", "static_input_shape", "export_metadata"]

# The TFLite export modes (`kerasseg.export.to_tflite`); not the inference modes of `kerasseg.evaluation`.
TFLITE_MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
MODES = TFLITE_MODES  # the older name
# Full-integer modes: calibrated activations, integer input and output.
INTEGER_MODES = ("int8", "int16x8")
IO_DTYPES = ("int8", "uint8")
INPUT_FORMATS = ("pixels", "normalized")
LABEL_DTYPES = ("int32", "uint8")


def check_choice(arg: str, value, choices) -> str:
    """``value`` if it is one of ``choices``, else a ``ValueError`` naming ``arg``."""
    # Exact membership only: "int" must not silently mean "int8".
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Expected {arg} to be one of {list(choices)}. Received: {arg}={value!r}")
    return value


def static_input_shape(model) -> tuple[int, int, int]:
    """The static ``(height, width, channels)`` input of a single-input, single-output model."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"Expected a model with one input and one output. Received: model {model.name!r} with "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"Expected a model with a static (height, width, channels) input; edge runtimes need "
                         f"static shapes. Received: model {model.name!r} with input shape "
                         f"{tuple(model.inputs[0].shape)}")
    return tuple(int(d) for d in shape)


def export_metadata(model, metadata: ModelMetadata | None = None) -> ModelMetadata:
    """A copy of the metadata an export records: ``metadata``, else ``model.kerasseg_metadata``, else defaults.

    The defaults name the model, its class count and input shape, and ImageNet normalisation.
    """
    metadata = metadata if metadata is not None else getattr(model, "kerasseg_metadata", None)
    if metadata is None:
        mean, std = NORMALIZATIONS["imagenet"]
        shape = [int(d) if d is not None else None for d in model.inputs[0].shape[1:]]
        return ModelMetadata(model_name=model.name, num_classes=int(model.outputs[0].shape[-1]), input_shape=shape,
                             normalization="imagenet", mean=list(mean), std=list(std))
    if not isinstance(metadata, ModelMetadata):
        raise ValueError(f"Expected metadata to be a kerasseg ModelMetadata. Received: metadata={metadata!r}")
    # A copy: the export record must not leak into the model's own metadata.
    return dataclasses.replace(metadata, extra=json.loads(json.dumps(metadata.extra)))
