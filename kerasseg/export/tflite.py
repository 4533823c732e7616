"""TFLite export: float32, float16, dynamic-range, full-integer int8 and int16x8 models for edge GPUs and NPUs.

When int8 loses too much, ``mode="int16x8"`` (int16 activations), ``per_channel=False`` (per-tensor weights, for NPUs
that need them) and ``float_layers`` (int8 with the worst layers of `kerasseg.export.quant_report` kept in float,
no longer fully integer) are the lighter remedies; docs/quantization.md has the figures.

Every conversion starts from a static batch-1 ``tf.function`` around the Keras model. With a dynamic batch the
converter rewrites dilated convolutions as SPACE_TO_BATCH_ND / CONV_2D / BATCH_TO_SPACE_ND and gives transposed
convolutions a SHAPE / STRIDED_SLICE prologue, and edge delegates reject both. Only TFLite builtin operators are
allowed; a converted model that still contains Flex (TensorFlow) or custom operators is refused, because the car's
runtime has neither.

Exported models take camera pixels (``input_format="pixels"``, the default): RGB 0..255 as uint8 for int8 models
(input quantisation scale 1, zero point 0, so the bytes of a frame are the input tensor) and as float32 for the
float modes. The normalisation recorded in the metadata (mean / std) is the first operator of the graph, a SUB and a
MUL that the converter quantises like any other layer, so the host does no per-frame float work. It is not folded
into the first convolution's weights: with zero padding that is exact only away from the borders, and ERFNet's
first block also max-pools the normalised input. ``input_format="normalized"`` keeps the older contract (the model
takes normalised float values; int8 models quantise them).

The exported head is the model's logits, their softmax (``"probabilities"``) or an in-graph argmax (``"labels"``,
the serializable `kerasseg.layers.ArgMax`); `with_head` builds the same head as a Keras model. With
``host_upsample=True`` a model whose last layer is a bilinear resize (DeepLab, PSPNet) is exported without it: the
device computes logits at the model's reduced resolution and the host up-samples them before the argmax, which is
cheaper on the device and, for int8, more accurate than resizing quantised logits in the graph.

Every ``model.tflite`` carries standard TFLite Model Metadata (`kerasseg.export.metadata`: labels, normalisation,
kerasseg's record), and next to it a sidecar ``model.json`` records the preprocessing and label semantics (see
`kerasseg.preprocessing.ModelMetadata`) plus, under ``extra["export"]``, the export mode, the output head, the
host-side up-sampling and the input / output quantisation read back from the converted model, so that the device
runtime (``tflite/runtime.py``) never guesses. With a ``target`` the converted model must also pass that target's
edge-compatibility rules (`kerasseg.export.compat`) before anything is written.

The code lives in focused modules, all re-exported here: `kerasseg.export.options` (modes, heads, validation,
export metadata), `kerasseg.export.heads` (`with_head`), `kerasseg.export.calibration`, `kerasseg.export.conversion`
(`to_tflite`), `kerasseg.export.verified` (`export_verified`), and, for running and reading converted models,
`kerasseg.runtimes` (`TFLiteModel`, the flatbuffer reader).

Example::

    to_tflite(model, "erfnet_int8.tflite", "int8", representative_data=calibration_images)
    TFLiteModel("erfnet_int8.tflite")(normalised_batch)   # float logits; pixels and quantisation handled
"""

from kerasseg.errors import AccuracyDropError
from kerasseg.export.calibration import calibration_samples
from kerasseg.export.conversion import convert_to_tflite, tflite_converter, to_tflite
from kerasseg.export.heads import output_layer, output_upsampling, with_head
from kerasseg.export.options import (INPUT_FORMATS, INTEGER_MODES, IO_DTYPES, LABEL_DTYPES, MODES, OUTPUT_HEADS,
                                     TFLITE_MODES, check_choice, export_metadata, static_input_shape)
from kerasseg.export.verified import export_verified
from kerasseg.runtimes.flatbuffer import custom_ops, float_tensors, model_bytes, tflite_ops
from kerasseg.runtimes.tflite import TFLiteModel, io_details, read_sidecar, sidecar_path

__all__ = [
    "TFLITE_MODES",
    "MODES",
    "INTEGER_MODES",
    "OUTPUT_HEADS",
    "IO_DTYPES",
    "INPUT_FORMATS",
    "LABEL_DTYPES",
    "check_choice",
    "static_input_shape",
    "model_bytes",
    "output_layer",
    "with_head",
    "output_upsampling",
    "to_tflite",
    "convert_to_tflite",
    "tflite_converter",
    "calibration_samples",
    "tflite_ops",
    "custom_ops",
    "float_tensors",
    "io_details",
    "export_metadata",
    "sidecar_path",
    "read_sidecar",
    "TFLiteModel",
    "AccuracyDropError",
    "export_verified",
]
