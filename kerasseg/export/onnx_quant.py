"""Int8 ONNX in QDQ form, for TensorRT-style consumers, calibrated on the same images as the int8 TFLite export.

The float ONNX model (`kerasseg.export.onnx.convert_to_onnx`) is quantised by onnxruntime's static quantiser
(``onnxruntime.quantization.quantize_static``) into QuantizeLinear / DequantizeLinear pairs around float operators
(QDQ format), with symmetric int8 activations and per-channel symmetric int8 weights, ranges from MinMax calibration
on the representative images. That is the form TensorRT takes: it fuses explicit Q/DQ pairs into int8 kernels and
accepts only zero points of 0 (symmetric scales). The alternative, tf2onnx from the int8 TFLite file, carries
TFLite's asymmetric int8 activations (non-zero zero points), which TensorRT rejects, so onnxruntime's quantiser is
used. onnxruntime's own ``quant_pre_process`` (shape inference and graph optimisation before quantisation) is not
run: the tf2onnx graph already has static shapes, and the float graph is what the parity harness checks against.

Example::

    data = quantize_qdq(float_onnx_bytes, calibration_images, input_name="image", shape=(360, 480, 3))
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

__all__ = ["QDQ_SETTINGS", "quantize_qdq"]

# What the sidecar records about the quantisation.
QDQ_SETTINGS = {"format": "QDQ", "quantizer": "onnxruntime.quantization.quantize_static", "activations": "int8",
                "weights": "int8", "symmetric": True, "per_channel": True, "calibration": "MinMax"}


def _reader(input_name: str, images):
    from onnxruntime.quantization import CalibrationDataReader

    class _Images(CalibrationDataReader):
        """Feeds the calibration images one at a time, as onnxruntime's calibrator expects."""

        def __init__(self):
            self._it = iter(images)

        def get_next(self):
            image = next(self._it, None)
            return None if image is None else {input_name: image}

    return _Images()


def quantize_qdq(model_bytes: bytes, representative_data, *, input_name: str, shape, num_calibration_samples: int = 100,
                 verbose: bool = False) -> tuple[bytes, int]:
    """Quantises a float ONNX model to QDQ int8 with onnxruntime's static quantiser.

    Args:
        model_bytes: the float ONNX model (static batch-1 input).
        representative_data: calibration images, as `kerasseg.export.to_tflite` takes them.
        input_name: the model's input name.
        shape: its ``(H, W, C)``.
        num_calibration_samples: images drawn.
        verbose: calibration progress to stderr.

    Returns:
        ``(quantised model bytes, number of calibration images)``.

    Raises:
        ValueError: no calibration images, or a quantiser error.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from kerasseg.export.calibration import calibration_samples

    if representative_data is None:
        raise ValueError("Expected representative_data (normalised float images) for the int8 ONNX export: static "
                         "quantisation calibrates activation ranges on them. Received: representative_data=None")
    if (not isinstance(num_calibration_samples, (int, np.integer)) or isinstance(num_calibration_samples, bool)
            or num_calibration_samples < 1):
        raise ValueError(f"Expected num_calibration_samples to be a positive integer. "
                         f"Received: num_calibration_samples={num_calibration_samples!r}")
    images = [s[0] for s in calibration_samples(representative_data, int(num_calibration_samples), tuple(shape),
                                                verbose)]
    if not images:
        raise ValueError("Expected representative_data to yield at least one image. Received: an empty iterable")
    with tempfile.TemporaryDirectory(prefix="kerasseg-qdq-") as folder:
        src, dst = os.path.join(folder, "float.onnx"), os.path.join(folder, "int8.onnx")
        with open(src, "wb") as f:
            f.write(model_bytes)
        try:
            quantize_static(src, dst, _reader(input_name, images), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        except Exception as e:  # the quantiser raises plain exceptions of many kinds
            raise ValueError(f"Expected onnxruntime to quantise the model to QDQ int8. Received: "
                             f"{type(e).__name__}: {e}") from e
        with open(dst, "rb") as f:
            return f.read(), len(images)
