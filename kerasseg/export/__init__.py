"""Export of trained models to edge formats, each written with a metadata sidecar."""

from kerasseg.export.tflite import (
    AccuracyDropError,
    TFLiteModel,
    custom_ops,
    export_metadata,
    export_verified,
    float_tensors,
    io_details,
    read_sidecar,
    tflite_ops,
    to_tflite,
)

__all__ = ["to_tflite", "tflite_ops", "custom_ops", "float_tensors", "io_details", "read_sidecar", "TFLiteModel",
           "export_verified", "export_metadata", "AccuracyDropError"]
