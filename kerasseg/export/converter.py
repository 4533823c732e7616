"""The configured `tf.lite.TFLiteConverter` of an export: the static batch-1 graph, the head, the modes."""

from __future__ import annotations

import itertools

import numpy as np

from kerasseg.export.calibration import calibration_samples
from kerasseg.export.heads import with_head
from kerasseg.export.options import (INPUT_FORMATS, INTEGER_MODES, IO_DTYPES, OUTPUT_HEADS, TFLITE_MODES,
                                     check_choice, export_metadata, static_input_shape)
from kerasseg.preprocessing import ModelMetadata
from kerasseg.saving import resolve_model

__all__ = ["tflite_converter", "resolve_io_dtype"]


def _check_quantization_options(mode: str, io_dtype, per_channel) -> None:
    if not isinstance(per_channel, bool):
        raise ValueError(f"Expected per_channel to be True or False. Received: per_channel={per_channel!r}")
    if not per_channel and mode != "int8":
        # int16x8 is specified with per-channel symmetric weights, and the float modes have no weight scale at all.
        raise ValueError(f"Expected per_channel=False only with mode='int8' (per-tensor int8 weights); mode "
                         f"{mode!r} needs per-channel weights. Received: mode={mode!r}, per_channel=False")
    if mode == "int16x8" and io_dtype not in (None, "int8"):
        raise ValueError(f"Expected io_dtype=None (the default) with mode='int16x8', whose input and output are "
                         f"int16. Received: io_dtype={io_dtype!r}")


def resolve_io_dtype(io_dtype, input_format: str) -> str:
    """The int8 file's input / output type: ``io_dtype``, or by default uint8 for pixel input and int8 otherwise.

    Raises:
        ValueError: an unknown ``io_dtype``, or one other than uint8 for pixel input.
    """
    if io_dtype is None:
        return "uint8" if input_format == "pixels" else "int8"
    io_dtype = check_choice("io_dtype", io_dtype, IO_DTYPES)
    if input_format == "pixels" and io_dtype != "uint8":
        raise ValueError(f"Expected io_dtype='uint8' (or None) with input_format='pixels': camera pixels are 0..255. "
                         f"Received: io_dtype={io_dtype!r}")
    return io_dtype


def tflite_converter(model, mode: str = "fp32", *, representative_data=None, num_calibration_samples: int = 100,
                     output: str = "logits", io_dtype: str | None = None, label_dtype: str = "int32",
                     host_upsample: bool = False, per_channel: bool = True, input_format: str = "pixels",
                     metadata: ModelMetadata | None = None, verbose: bool = True):
    """The `tf.lite.TFLiteConverter` of an export, configured but not run (see `to_tflite` for the arguments).

    `convert_to_tflite` runs it; tools that drive a converter themselves, such as TFLite's
    ``tf.lite.experimental.QuantizationDebugger`` (`kerasseg.export.quant_report`), take it from here so that they
    quantise exactly what an export would. Its representative dataset can be drawn once.

    Raises:
        ValueError: invalid arguments or missing calibration data.
    """
    import tensorflow as tf

    from kerasseg.layers.unpooling import integer_unpooling

    model = resolve_model(model)
    mode = check_choice("mode", mode, TFLITE_MODES)
    output = check_choice("output", output, OUTPUT_HEADS)
    input_format = check_choice("input_format", input_format, INPUT_FORMATS)
    _check_quantization_options(mode, io_dtype, per_channel)
    if mode != "int16x8":  # int16x8 input is int16 whatever the format
        io_dtype = resolve_io_dtype(io_dtype, input_format)
    meta = export_metadata(model, metadata)
    mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)
    shape = static_input_shape(model)
    if input_format == "pixels" and not shape[-1] == len(mean) == len(std) == 3:
        raise ValueError(f"Expected an RGB model input (3 channels, 3-value mean and std) for input_format='pixels'; "
                         f"other inputs take input_format='normalized'. Received: input shape {shape}, mean "
                         f"{list(meta.mean)}, std {list(meta.std)}")
    from kerasseg.export.formulations import edge_formulation

    # The same function, in operators that edge compilers accept (see kerasseg.export.formulations).
    exported = edge_formulation(with_head(model, output, label_dtype=label_dtype, host_upsample=host_upsample))
    if mode in INTEGER_MODES:
        if representative_data is None:
            raise ValueError(f"Expected representative_data (normalised float images) for mode={mode!r}: "
                             f"full-integer quantisation calibrates activation ranges on them. "
                             f"Received: representative_data=None")
        if (not isinstance(num_calibration_samples, (int, np.integer)) or isinstance(num_calibration_samples, bool)
                or num_calibration_samples < 1):
            raise ValueError(f"Expected num_calibration_samples to be a positive integer. "
                             f"Received: num_calibration_samples={num_calibration_samples!r}")

    @tf.function(input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="image")])
    def serve(image):
        if input_format == "pixels":
            # The converter keeps this as one SUB and one MUL in front of the network (quantised for int8).
            image = (image - mean) * (1.0 / std)
        out = exported(image, training=False)
        # Mixed-precision models compute in float16; float heads are exported in float32 regardless.
        return out if output == "labels" else tf.cast(out, tf.float32)

    # Never SELECT_TF_OPS (which Keras' own model.export(format="litert") enables): the car has no Flex runtime.
    # A full-integer model traces the unpooling layers' integer formulation: the float one selects with SELECT_V2,
    # which the GPU delegate accepts between float tensors only (see kerasseg.layers.unpooling).
    with integer_unpooling(mode in INTEGER_MODES):
        concrete = serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], exported)
    # The SavedModel round trip keeps Keras 3 variables as VAR_HANDLE / READ_VARIABLE resources instead of folding
    # them into constants; freezing the concrete function directly does fold them.
    converter.experimental_lower_to_saved_model = False
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in INTEGER_MODES:
        samples = calibration_samples(representative_data, int(num_calibration_samples), shape, verbose,
                                      pixels=(mean, std) if input_format == "pixels" else None)
        first = next(samples, None)
        if first is None:
            raise ValueError("Expected representative_data to yield at least one image. Received: an empty "
                             "iterable")
        converter.representative_dataset = lambda: itertools.chain([first], samples)
        if mode == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8 if io_dtype == "int8" else tf.uint8
        else:
            # Without TFLITE_BUILTINS beside it an operator lacking a 16x8 kernel fails the conversion instead of
            # silently staying float.
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            converter.inference_input_type = tf.int16
        if output != "labels":  # the label head is an integer ARG_MAX output, never quantised
            converter.inference_output_type = converter.inference_input_type
        # The converter has no public switch for per-tensor weights; QuantizationDebugger reads the same attribute.
        converter._experimental_disable_per_channel = not per_channel
    return converter
