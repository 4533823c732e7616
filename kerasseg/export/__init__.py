"""Export of trained models to edge formats, each written with a metadata sidecar.

- `to_tflite`: TFLite fp32 / fp16 / dynamic / int8, logits / probabilities / labels heads, optional host-side
  up-sampling and a target check (`kerasseg.export.tflite`).
- `to_onnx`: ONNX through tf2onnx, verified in onnxruntime (`kerasseg.export.onnx`).
- `check`: the edge-compatibility report of a ``.tflite`` file for a CPU, GPU or NPU target, asking the real tools:
  LiteRT's GPU accelerator (`kerasseg.export.gpu`) and Arm Vela for Ethos-U NPUs (`kerasseg.export.vela`)
  (`kerasseg.export.compat`).
- `edge_formulation`: the model as TFLite exports convert it, in operators edge compilers accept
  (`kerasseg.export.formulations`).
- `parity`: Keras, every TFLite mode and ONNX scored on the same data with the same metric code
  (`kerasseg.export.harness`).

The runners of exported files (`TFLiteModel`, `ONNXModel`) live in `kerasseg.runtimes` and are re-exported here.
"""


from kerasseg.errors import AccuracyDropError, EdgeCompatibilityError, GpuUnavailableError, ONNXMismatchError
from kerasseg.export.compat import TARGETS, CompatibilityReport, Finding, check
from kerasseg.export.formulations import edge_formulation, formulation_plan
from kerasseg.export.gpu import GpuReport, gpu_compile
from kerasseg.export.harness import INT8_GOAL, MIOU_BOUNDS, ParityResult, ParityRow, parity
from kerasseg.export.onnx import ONNX_MODES, to_onnx
from kerasseg.export.tflite import (
    LABEL_DTYPES,
    MODES,
    OUTPUT_HEADS,
    TFLITE_MODES,
    custom_ops,
    export_metadata,
    export_verified,
    float_tensors,
    io_details,
    output_upsampling,
    read_sidecar,
    tflite_ops,
    to_tflite,
    with_head,
)
from kerasseg.export.vela import ETHOS_U_TARGETS, VelaReport, vela_compile
from kerasseg.export import compat, harness
from kerasseg.runtimes import ONNXModel, TFLiteModel



def quantize_aware(model, **kwargs):
    """Quantization-aware ``tf_keras`` copy of a trained kerasseg model (see `kerasseg.export.qat.quantize_aware`).

    Defined here rather than imported so that ``import kerasseg.export`` never imports tfmot or tf_keras.
    """
    from kerasseg.export.qat import quantize_aware as _quantize_aware

    return _quantize_aware(model, **kwargs)


__all__ = ["to_tflite", "to_onnx", "check", "parity", "with_head", "output_upsampling", "tflite_ops", "custom_ops",
           "float_tensors", "io_details", "read_sidecar", "TFLiteModel", "ONNXModel", "export_verified",
           "export_metadata", "AccuracyDropError", "EdgeCompatibilityError", "ONNXMismatchError",
           "CompatibilityReport", "Finding", "ParityResult", "ParityRow", "MODES", "TFLITE_MODES", "ONNX_MODES",
           "OUTPUT_HEADS", "LABEL_DTYPES", "TARGETS", "MIOU_BOUNDS", "INT8_GOAL", "quantize_aware", "gpu_compile",
           "GpuReport", "GpuUnavailableError", "vela_compile", "VelaReport", "ETHOS_U_TARGETS"]
