"""Conversion of a quantization-aware ``tf_keras`` model to a full-integer TFLite file with its metadata.

Example::

    qat_to_tflite(qat_model, "erfnet_qat_int8.tflite", metadata=model.kerasseg_metadata)
"""

from __future__ import annotations

import os
import warnings

from kerasseg.qat.twin import is_tf_keras_model

__all__ = ["qat_to_tflite_bytes", "qat_to_tflite", "check_target"]


def qat_to_tflite_bytes(qat_model, *, representative_data=None, num_calibration_samples: int = 20,
                        io_dtype: str = "int8") -> bytes:
    """Converts a quantization-aware ``tf_keras`` model to full-integer TFLite bytes (builtin operators only).

    The conversion starts from a static batch-1 concrete function, like every kerasseg export. The fake-quant
    ranges learnt during training set the int8 scales; ``representative_data`` (normalised float images, optional)
    only covers tensors without a trained range.

    The converter is set up here rather than by `kerasseg.export.tflite.tflite_converter`, which takes Keras 3
    models only: it re-heads and re-formulates the model with Keras 3 layers and folds the input normalisation in,
    none of which applies to a ``tf_keras`` fake-quant graph that starts at the normalised image. The settings are
    those of its ``mode="int8"`` branch, with the same calibration sampling (`calibration_samples`) and the same
    operator checks (`custom_ops`, `float_tensors`).

    Raises:
        ValueError: a model that is not quantization-aware, or a converted model with non-builtin operators or float
            tensors.
    """
    import tensorflow as tf

    from kerasseg.export.tflite import (IO_DTYPES, calibration_samples, check_choice, custom_ops, float_tensors,
                                        static_input_shape)
    from kerasseg.layers.unpooling import integer_unpooling

    if not is_tf_keras_model(qat_model) or not any("quant" in type(l).__name__.lower() for l in qat_model.layers):
        raise ValueError(f"Expected a quantization-aware tf_keras model from quantize_aware(). "
                         f"Received: qat_model={getattr(qat_model, 'name', qat_model)!r}")
    io_dtype = check_choice("io_dtype", io_dtype, IO_DTYPES)
    shape = static_input_shape(qat_model)

    @tf.function(input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="image")])
    def serve(image):
        return qat_model(image, training=False)

    # As in export.tflite: the unpooling layers trace their integer formulation (GPU delegates take SELECT_V2 between
    # float tensors only).
    with integer_unpooling(True):
        concrete = serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], qat_model)
    # As in export.tflite: freezing the concrete function folds the variables into constants.
    converter.experimental_lower_to_saved_model = False
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8 if io_dtype == "int8" else tf.uint8
    converter.inference_output_type = converter.inference_input_type
    if representative_data is not None:
        samples = list(calibration_samples(representative_data, int(num_calibration_samples), shape, False))
        converter.representative_dataset = lambda: iter(samples)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        data = converter.convert()
    non_builtin = custom_ops(data)
    if non_builtin:
        raise ValueError(f"Expected a model of TFLite builtin operators only. Received: QAT model "
                         f"{qat_model.name!r} converts with non-builtin operators {non_builtin}")
    floats = float_tensors(data)
    if floats:
        raise ValueError(f"Expected a fully integer QAT model. Received: {len(floats)} float tensors left in model "
                         f"{qat_model.name!r}, e.g. {floats[:5]}")
    return data


def qat_to_tflite(qat_model, path, *, metadata=None, representative_data=None, num_calibration_samples: int = 20,
                  io_dtype: str = "int8", target: str | None = None) -> str:
    """Writes a quantization-aware model as a full-integer ``.tflite`` file plus its metadata sidecar, atomically.

    The file takes normalised input (``input_format="normalized"``: the quantisation-aware graph starts at the
    normalised image) and carries the standard TFLite metadata (`kerasseg.export.metadata`) like every export.

    Args:
        qat_model: the model returned by `quantize_aware` (trained or not).
        path: destination ending in ``.tflite``; the sidecar is ``os.path.splitext(path)[0] + ".json"``.
        metadata: `kerasseg.preprocessing.ModelMetadata` to record; ``qat_model.kerasseg_metadata`` by default.
        representative_data: optional normalised float images for tensors without a trained range.
        num_calibration_samples: images drawn from ``representative_data``.
        io_dtype: ``"int8"`` or ``"uint8"`` input and output.
        target: ``None`` or a `kerasseg.export.check` target the file must pass (nothing is written otherwise).

    Returns:
        ``path``.
    """
    from kerasseg.export.metadata import embed_metadata
    from kerasseg.export.tflite import export_metadata, io_details, sidecar_path
    from kerasseg.saving import atomic_path

    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"Expected a path ending in '.tflite'. Received: path={path!r}")
    meta = export_metadata(qat_model, metadata if metadata is not None else
                           getattr(qat_model, "kerasseg_metadata", None))
    data = qat_to_tflite_bytes(qat_model, representative_data=representative_data,
                               num_calibration_samples=num_calibration_samples, io_dtype=io_dtype)
    if target is not None:
        check_target(data, target)
    details = io_details(data)
    meta.extra["export"] = {
        "format": "tflite", "mode": "int8", "quantization": "qat", "output": "logits",
        "input_format": "normalized", "input_dtype": details["input_dtype"], "output_dtype": details["output_dtype"],
        "input_shape": details["input_shape"], "output_shape": details["output_shape"],
        "input_quantization": details["input_quantization"], "output_quantization": details["output_quantization"],
        "host_upsample": None, "target": target,
    }
    data = embed_metadata(data, meta)
    with atomic_path(path) as tmp_model, atomic_path(sidecar_path(path), suffix=".json") as tmp_json:
        with open(tmp_model, "wb") as f:
            f.write(data)
        with open(tmp_json, "w", encoding="utf-8") as f:
            f.write(meta.to_json())
    return path


def check_target(model, target: str):
    """The `kerasseg.export.check` report of a converted QAT model (bytes or path) for ``target``.

    Raises:
        EdgeCompatibilityError: (a ``ValueError``) the model fails the target's rules.
    """
    # The submodule, not the package: the package re-exports quantize_aware from this one.
    from kerasseg.errors import EdgeCompatibilityError
    from kerasseg.export.compat import check

    report = check(model, target)
    if not report.ok:
        raise EdgeCompatibilityError(f"Expected the QAT model to pass the {target!r} target's rules. "
                                     f"Received: {report.summary()}", report)
    return report
