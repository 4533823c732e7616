"""ONNX export through tf2onnx, checked in onnxruntime before it is written.

Like the TFLite export, the conversion starts from a static batch-1 ``tf.function`` around the Keras model (with the
same optional heads, `kerasseg.export.tflite.with_head`), so the ONNX graph has static shapes. The converted model
is validated by ``onnx.checker``, run in onnxruntime on a random input and compared with Keras; only then are the
``.onnx`` file and its ``.json`` sidecar (the same `kerasseg.preprocessing.ModelMetadata` as for TFLite, with
``extra["export"]["format"] == "onnx"``) written, atomically.

Example::

    to_onnx(model, "erfnet.onnx")                 # opset 17
    to_onnx(model, "erfnet_int8.onnx", mode="int8", representative_data=calibration_images)   # QDQ int8
    ONNXModel("erfnet.onnx", num_threads=2)(normalised_batch)
"""

from __future__ import annotations

import logging
import os

import numpy as np

from kerasseg.errors import ONNXMismatchError
from kerasseg.export.calibration import calibration_samples
from kerasseg.export.heads import output_upsampling, with_head
from kerasseg.export.options import OUTPUT_HEADS, check_choice, export_metadata, static_input_shape
from kerasseg.preprocessing import ModelMetadata
from kerasseg.runtimes.onnx import ONNXModel, session
from kerasseg.saving import resolve_model, write_with_sidecar

__all__ = ["DEFAULT_OPSET", "ONNX_MODES", "MODES", "to_onnx", "convert_to_onnx", "ONNXModel", "ONNXMismatchError"]

DEFAULT_OPSET = 17
# The ONNX export modes (float, or QDQ int8).
ONNX_MODES = ("fp32", "int8")
MODES = ONNX_MODES  # the older name
# The least argmax agreement with Keras an int8 model must show on a calibration image to be written.
INT8_MIN_AGREEMENT = 0.9
# 18 is the newest opset tf2onnx 1.17 can emit; 13 is the oldest the tests convert with (onnxruntime runs all).
OPSETS = tuple(range(13, 19))
_CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"


def convert_to_onnx(model, opset: int = DEFAULT_OPSET, *, output: str = "logits", label_dtype: str = "int32",
                    host_upsample: bool = False, verify: bool = True, seed: int = 0, mode: str = "fp32",
                    representative_data=None, num_calibration_samples: int = 100, verbose: bool = False) -> bytes:
    """Converts a Keras model to an ONNX model in memory, as `kerasseg.export.convert_to_tflite` does for TFLite.

    The arguments are `to_onnx`'s; the record of the conversion (input / output, verification) goes into the metadata
    sidecar that `to_onnx` writes.

    Returns:
        The serialised ONNX model.

    Raises:
        ValueError: invalid arguments, or a conversion error from tf2onnx.
        ONNXMismatchError: (a ``ValueError``) onnxruntime's output differs from Keras beyond the tolerance.
    """
    return _conversion(model, opset, output=output, label_dtype=label_dtype, host_upsample=host_upsample,
                       verify=verify, seed=seed, mode=mode, representative_data=representative_data,
                       num_calibration_samples=num_calibration_samples, verbose=verbose)[0]


def _conversion(model, opset: int, *, output: str, label_dtype: str, host_upsample: bool, verify: bool, seed: int,
                mode: str, representative_data, num_calibration_samples: int, verbose: bool) -> tuple[bytes, dict]:
    """`convert_to_onnx` with the record of the conversion: ``(model bytes, record)``.

    Raises:
        ValueError: invalid arguments, or a conversion error from tf2onnx.
        ONNXMismatchError: (a ``ValueError``) onnxruntime's output differs from Keras beyond the tolerance.
    """
    import tensorflow as tf

    if not isinstance(opset, (int, np.integer)) or isinstance(opset, bool) or int(opset) not in OPSETS:
        raise ValueError(f"Expected opset to be an integer in {OPSETS[0]}..{OPSETS[-1]}. Received: opset={opset!r}")
    output = check_choice("output", output, OUTPUT_HEADS)
    mode = check_choice("mode", mode, ONNX_MODES)
    if mode == "int8" and representative_data is None:
        raise ValueError("Expected representative_data (normalised float images) for mode='int8': static "
                         "quantisation calibrates activation ranges on them. Received: representative_data=None")
    shape = static_input_shape(model)
    exported = with_head(model, output, label_dtype=label_dtype, host_upsample=host_upsample)

    @tf.function(input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="image")])
    def serve(image):
        out = exported(image, training=False)
        # A dict names the graph output; float heads are float32 even for mixed-precision models.
        return {output: out if output == "labels" else tf.cast(out, tf.float32)}

    import tf2onnx

    # tf2onnx logs every optimisation pass at INFO; its warnings and errors still show.
    tf2onnx_logger = logging.getLogger("tf2onnx")
    level = tf2onnx_logger.level
    tf2onnx_logger.setLevel(logging.WARNING)
    saved_env = os.environ.get(_CATCH_ERRORS)
    try:
        try:
            # By default tf2onnx deep-copies the whole graph, weights included, before each optimiser pass so that
            # it can roll a failing pass back: 40 % of the conversion time of a VGG-sized model. Without the copies
            # a failing pass raises, and the conversion is run again the default way.
            os.environ[_CATCH_ERRORS] = "FALSE"
            proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=int(opset))
        except Exception:  # noqa: BLE001  (any optimiser failure: retry with tf2onnx's roll-back)
            os.environ[_CATCH_ERRORS] = "TRUE"
            proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=int(opset))
    except Exception as e:  # tf2onnx raises plain exceptions of many kinds for unsupported graphs
        raise ValueError(f"Expected model {model.name!r} to convert to ONNX opset {opset}. Received: the "
                         f"converter's error {type(e).__name__}: {e}") from e
    finally:
        tf2onnx_logger.setLevel(level)
        if saved_env is None:
            os.environ.pop(_CATCH_ERRORS, None)
        else:
            os.environ[_CATCH_ERRORS] = saved_env
    import onnx

    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    runner = session(data, num_threads=None)
    inp, out = runner.get_inputs()[0], runner.get_outputs()[0]
    record = {
        "format": "onnx",
        "opset": int(opset),
        "output": output,
        "input_name": inp.name,
        "output_name": out.name,
        "input_shape": [int(d) for d in inp.shape],
        "output_shape": [int(d) for d in out.shape],
        "input_dtype": "float32",
        "output_dtype": np.dtype(label_dtype).name if output == "labels" else "float32",
        "ops": sorted({node.op_type for node in proto.graph.node}),
        "verification": None,
    }
    if verify:
        x = np.random.default_rng(seed).normal(size=(1, *shape)).astype(np.float32)
        expected = np.asarray(serve(tf.constant(x))[output])
        got = runner.run(None, {inp.name: x})[0]
        if output == "labels":
            agreement = float(np.mean(got == expected))
            if agreement < 0.999:
                raise ONNXMismatchError(f"Expected the ONNX label map to equal Keras'. Received: {100 * agreement:.2f}"
                                        f" % of pixels agree", 1.0 - agreement)
            record["verification"] = {"pixel_agreement": agreement}
        else:
            diff = np.abs(got.astype(np.float64) - expected)
            err, err_p99 = float(diff.max()), float(np.quantile(diff, 0.99))
            scale = float(np.max(np.abs(expected)))
            agreement = float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1)))
            # Float32 reassociation (NCHW kernels, fused ops) moves logits by a relative 1e-6..1e-5. Max-unpooling
            # (SegNet) can also place a value one pixel away where two pooled inputs differ by such rounding, which
            # changes a small region downstream; that is why 1 % of the values may exceed the tolerance.
            tolerance = 1e-4 * max(1.0, scale)
            if not (err_p99 <= tolerance and agreement >= 0.99):
                raise ONNXMismatchError(f"Expected onnxruntime to reproduce the Keras output within {tolerance:.3g} "
                                        f"on 99 % of the values. Received: a 99th-percentile difference of "
                                        f"{err_p99:.3g} (max {err:.3g}, output scale {scale:.3g}), argmax agreement "
                                        f"{100 * agreement:.2f} %", err)
            record["verification"] = {"max_abs_error": err, "p99_abs_error": err_p99, "output_scale": scale,
                                      "pixel_agreement": agreement}
    if mode == "int8":
        data, record = _quantized(data, record, serve, representative_data, num_calibration_samples, shape, verify,
                                  verbose)
    return data, record


def _quantized(data: bytes, record: dict, serve, representative_data, num_calibration_samples: int, shape,
               verify: bool, verbose: bool) -> tuple[bytes, dict]:
    """The QDQ int8 model of a verified float one, checked against Keras on a calibration image."""
    import onnx
    import tensorflow as tf

    from kerasseg.export.onnx_quant import QDQ_SETTINGS, quantize_qdq

    data, count = quantize_qdq(data, representative_data, input_name=record["input_name"], shape=shape,
                               num_calibration_samples=num_calibration_samples, verbose=verbose)
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    runner = session(data, num_threads=None)
    record = dict(record, mode="int8", quantization=dict(QDQ_SETTINGS, calibration_images=count),
                  ops=sorted({node.op_type for node in proto.graph.node}), verification=None)
    if verify:
        # Random noise says little of an int8 model's accuracy; a calibration image is in its range. The bound on
        # accuracy is the parity harness' (`kerasseg.export.harness.MIOU_BOUNDS["onnx-int8"]`).
        x = next(calibration_samples(representative_data, 1, shape, False))[0]
        expected = np.asarray(serve(tf.constant(x))[record["output"]])
        got = runner.run(None, {record["input_name"]: x})[0]
        if record["output"] == "labels":
            agreement = float(np.mean(got == expected))
        else:
            agreement = float(np.mean(np.argmax(got, -1) == np.argmax(expected, -1)))
        if agreement < INT8_MIN_AGREEMENT:
            raise ONNXMismatchError(f"Expected the int8 ONNX model's argmax to agree with Keras on at least "
                                    f"{100 * INT8_MIN_AGREEMENT:.0f} % of a calibration image's pixels. Received: "
                                    f"{100 * agreement:.2f} %", 1.0 - agreement)
        record["verification"] = {"pixel_agreement": agreement, "image": "first calibration image"}
    return data, record


def to_onnx(model, path, opset: int = DEFAULT_OPSET, *, output: str = "logits", label_dtype: str = "int32",
            host_upsample: bool = False, metadata: ModelMetadata | None = None, verify: bool = True,
            mode: str = "fp32", representative_data=None, num_calibration_samples: int = 100,
            verbose: bool = False) -> str:
    """Converts a Keras model to a ``.onnx`` file with tf2onnx and writes its metadata sidecar, both atomically.

    Args:
        model: a Keras model with one static-shaped input ``(B, H, W, C)`` and one logits output, or the path of
            a ``.keras`` file.
        path: destination ``.onnx`` file; the sidecar goes to ``os.path.splitext(path)[0] + ".json"``.
        opset: ONNX opset (17 by default; 13 to 18).
        output, label_dtype, host_upsample: the exported head (see `kerasseg.export.tflite.with_head`).
        metadata: overrides ``model.kerasseg_metadata``.
        verify: run the converted model in onnxruntime on a random input and refuse it unless it matches Keras:
            99 % of the values within 1e-4 of the output's scale and 99 % of the argmax pixels equal (labels head:
            99.9 % of the pixels equal). For ``mode="int8"`` the float model is checked so first, then the int8
            model's argmax must agree with Keras on 90 % of the pixels of a calibration image.
        mode: ``"fp32"`` or ``"int8"``: QDQ int8 (symmetric int8 activations, per-channel int8 weights) from
            onnxruntime's static quantiser, for TensorRT-style consumers (see `kerasseg.export.onnx_quant`).
        representative_data: for ``"int8"``, calibration images as `kerasseg.export.to_tflite` takes them.
        num_calibration_samples: calibration images drawn.
        verbose: calibration progress to stderr.

    Returns:
        ``path``.

    Raises:
        ValueError: bad arguments, a path not ending in ``.onnx``, or a conversion error; nothing is written.
        ONNXMismatchError: the verification failed; nothing is written.
    """
    model = resolve_model(model)
    path = os.fspath(path)
    if not path.endswith(".onnx"):
        raise ValueError(f"Expected a path ending in '.onnx'. Received: path={path!r}")
    meta = export_metadata(model, metadata)
    data, record = _conversion(model, opset, output=output, label_dtype=label_dtype, host_upsample=host_upsample,
                               verify=verify, seed=0, mode=mode, representative_data=representative_data,
                               num_calibration_samples=num_calibration_samples, verbose=verbose)
    record["host_upsample"] = ({"method": "bilinear", "half_pixel_centers": True,
                                "size": list(output_upsampling(model)[1])} if host_upsample else None)
    meta.extra["export"] = record
    return write_with_sidecar(path, data, meta)
