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
                        io_dtype: str | None = None, input_format: str = "normalized", metadata=None) -> bytes:
    """Converts a quantization-aware ``tf_keras`` model to full-integer TFLite bytes (builtin operators only).

    The conversion starts from a static batch-1 concrete function, like every kerasseg export. The fake-quant
    ranges learnt during training set the int8 scales; ``representative_data`` (normalised float images, optional)
    only covers tensors without a trained range.

    With ``input_format="pixels"`` the file takes camera pixels as the post-training int8 export does (see
    `kerasseg.export.tflite`): uint8 RGB 0..255 with input scale 1 and zero point 0
    (`kerasseg.export.conversion.pixel_input_quantization`), the metadata's normalisation ``(x - mean) / std`` in
    front of the quantisation-aware graph. It is one 1x1 DEPTHWISE_CONV_2D with a bias rather than PTQ's SUB and MUL:
    its input range is that of pixels (a fake-quant node over 0..255, scale 1, so exact) and its int32 accumulator is
    requantised once, straight to the range the annotated model learnt for its input, so the int8 normalised image
    equals the host's quantisation of the normalised frame but for rounding ties (a SUB would first round pixels
    minus the mean, a range wider than 255, to a step above one pixel). The bytes carry no metadata, and
    `kerasseg.runtimes.TFLiteModel` reads bytes without metadata as normalised input, so the default here stays
    ``"normalized"``; `qat_to_tflite` writes pixel files by default.

    The converter is set up here rather than by `kerasseg.export.tflite.tflite_converter`, which takes Keras 3
    models only: it re-heads and re-formulates the model with Keras 3 layers, none of which applies to a
    ``tf_keras`` fake-quant graph. The settings are those of its ``mode="int8"`` branch, with the same calibration
    sampling (`calibration_samples`) and the same operator checks (`custom_ops`, `float_tensors`).

    Args:
        qat_model: the model returned by `quantize_aware`.
        representative_data: normalised float images for tensors without a trained range (optional).
        num_calibration_samples: images drawn from ``representative_data``.
        io_dtype: ``"int8"`` or ``"uint8"`` input and output; ``None`` (default): uint8 for pixel input (the only
            type pixels fit), int8 for normalised input.
        input_format: ``"normalized"`` (default here) or ``"pixels"``.
        metadata: the `kerasseg.preprocessing.ModelMetadata` whose mean / std pixel input uses;
            ``qat_model.kerasseg_metadata`` by default.

    Raises:
        ValueError: a model that is not quantization-aware, invalid options, or a converted model with non-builtin
            operators or float tensors.
    """
    import numpy as np
    import tensorflow as tf

    from kerasseg.export.conversion import pixel_input_quantization
    from kerasseg.export.converter import resolve_io_dtype
    from kerasseg.export.options import INPUT_FORMATS, export_metadata
    from kerasseg.export.tflite import calibration_samples, check_choice, custom_ops, float_tensors, static_input_shape
    from kerasseg.layers.unpooling import integer_unpooling

    if not is_tf_keras_model(qat_model) or not any("quant" in type(l).__name__.lower() for l in qat_model.layers):
        raise ValueError(f"Expected a quantization-aware tf_keras model from quantize_aware(). "
                         f"Received: qat_model={getattr(qat_model, 'name', qat_model)!r}")
    input_format = check_choice("input_format", input_format, INPUT_FORMATS)
    io_dtype = resolve_io_dtype(io_dtype, input_format)
    shape = static_input_shape(qat_model)
    pixels = None
    if input_format == "pixels":
        meta = export_metadata(qat_model, metadata if metadata is not None else
                               getattr(qat_model, "kerasseg_metadata", None))
        mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)
        if not shape[-1] == len(mean) == len(std) == 3:
            raise ValueError(f"Expected an RGB model input (3 channels, 3-value mean and std) for "
                             f"input_format='pixels'; other inputs take input_format='normalized'. Received: input "
                             f"shape {shape}, mean {list(meta.mean)}, std {list(meta.std)}")
        pixels = mean, std

    @tf.function(input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="image")])
    def serve(image):
        if pixels is not None:
            # The pixels' own range (scale 1: exact), then (x - mean) / std as one 1x1 depthwise convolution with a
            # bias, whose int32 accumulator is requantised once, straight to the annotated model's input range.
            image = tf.quantization.fake_quant_with_min_max_args(image, 0.0, 255.0)
            kernel = (1.0 / pixels[1]).reshape(1, 1, -1, 1)
            image = tf.nn.depthwise_conv2d(image, kernel, [1, 1, 1, 1], "VALID") - pixels[0] / pixels[1]
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
        samples = list(calibration_samples(representative_data, int(num_calibration_samples), shape, False,
                                           pixels=pixels))
        converter.representative_dataset = lambda: iter(samples)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        data = converter.convert()
    if pixels is not None:
        data = pixel_input_quantization(data)
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
                  io_dtype: str | None = None, target: str | None = None, input_format: str = "pixels") -> str:
    """Writes a quantization-aware model as a full-integer ``.tflite`` file plus its metadata sidecar, atomically.

    By default the file takes camera pixels like the post-training int8 export (``input_format="pixels"``: uint8
    RGB, scale 1, zero point 0, the normalisation in the graph; see `qat_to_tflite_bytes`), so MediaPipe and
    ``tflite/runtime.py`` feed it frames as they are. ``input_format="normalized"`` keeps the older contract (the
    file takes the normalised image, int8 by default). It carries the standard TFLite metadata
    (`kerasseg.export.metadata`) like every export.

    Args:
        qat_model: the model returned by `quantize_aware` (trained or not).
        path: destination ending in ``.tflite``; the sidecar is ``os.path.splitext(path)[0] + ".json"``.
        metadata: `kerasseg.preprocessing.ModelMetadata` to record; ``qat_model.kerasseg_metadata`` by default.
        representative_data: optional normalised float images for tensors without a trained range.
        num_calibration_samples: images drawn from ``representative_data``.
        io_dtype: ``"int8"`` or ``"uint8"`` input and output; ``None``: uint8 for pixels, int8 for normalised input.
        target: ``None`` or a `kerasseg.export.check` target the file must pass (nothing is written otherwise).
        input_format: ``"pixels"`` (default) or ``"normalized"``.

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
                               num_calibration_samples=num_calibration_samples, io_dtype=io_dtype,
                               input_format=input_format, metadata=meta)
    if target is not None:
        check_target(data, target)
    details = io_details(data)
    meta.extra["export"] = {
        "format": "tflite", "mode": "int8", "quantization": "qat", "output": "logits",
        "input_format": input_format, "input_dtype": details["input_dtype"], "output_dtype": details["output_dtype"],
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
