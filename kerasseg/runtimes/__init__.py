"""How to run a model file: Keras, TFLite and ONNX predictors behind one predict-function contract.

A *predict function* is any callable that maps a float32 batch ``(B, h, w, C)`` of normalised images at the model's
static input size to either float scores ``(B, h', w', K)`` (logits or probabilities; ``h', w'`` may be a reduced
resolution the host up-samples) or integer label maps ``(B, h', w')``. An ``input_shape`` attribute
``(h, w, C)`` names the input size. `KerasPredictor`, `TFLiteModel` and `ONNXModel` all follow it, so the scoring
code of `kerasseg.evaluation` treats every runtime alike. Nothing here scores anything.

`kerasseg.runtimes.flatbuffer` is the one reader of TFLite flatbuffers (operators, tensors, custom operators).
"""

from kerasseg.runtimes.flatbuffer import custom_ops, float_tensors, model_bytes, read_model, tflite_ops
from kerasseg.runtimes.keras import KerasPredictor, keras_predict_fn
from kerasseg.runtimes.onnx import ONNXModel
from kerasseg.runtimes.tflite import (HARDWARE, TFLiteModel, compile_model, external_delegate, io_details,
                                      parse_delegate_options, read_sidecar, sidecar_path)

# What a segmentation model outputs: raw logits, their softmax, or the argmax label map.
OUTPUT_HEADS = ("logits", "probabilities", "labels")

__all__ = ["OUTPUT_HEADS", "KerasPredictor", "keras_predict_fn", "TFLiteModel", "ONNXModel", "io_details", "HARDWARE",
           "external_delegate", "parse_delegate_options", "compile_model",
           "read_sidecar", "sidecar_path", "model_bytes", "read_model", "tflite_ops", "custom_ops", "float_tensors"]
