"""Keras -> TFLite conversion (see `kerasseg.export.tflite` for the export contract)."""

from __future__ import annotations

import os
import warnings

import numpy as np

from kerasseg.errors import EdgeCompatibilityError
from kerasseg.export.converter import tflite_converter
from kerasseg.export.heads import output_upsampling
from kerasseg.export.options import INTEGER_MODES, check_choice, export_metadata
from kerasseg.export.quant_report import exported_layer, quantize_with_float_layers
from kerasseg.preprocessing import ModelMetadata
from kerasseg.runtimes.flatbuffer import custom_ops, float_tensors, schema
from kerasseg.runtimes.tflite import io_details
from kerasseg.saving import resolve_model, write_with_sidecar

__all__ = ["convert_to_tflite", "to_tflite", "pixel_input_quantization"]


def _converter_error():
    # The converter's exception class has no public name; without it, conversion errors propagate unchanged.
    try:
        from tensorflow.lite.python.convert_phase import ConverterError
    except ImportError:
        return ()
    return ConverterError


def pixel_input_quantization(data: bytes) -> bytes:
    """``data`` with its uint8 input quantised as the pixels themselves (scale 1, zero point 0).

    The converter derives the input scale from the calibration images' range, so a frame whose darkest / brightest
    pixels are not exactly 0 / 255 would need a host-side requantisation. Its uint8 input feeds a QUANTIZE operator
    (uint8 -> int8), which requantises from whatever scale its input declares, so declaring (1, 0) moves the
    rescaling into that operator and makes the raw frame bytes the input.
    """
    fb = schema()
    buffer = bytearray(data)
    root = fb.Model.GetRootAs(buffer, 0)
    subgraph = root.Subgraphs(0)
    index = subgraph.Inputs(0)
    consumers = [subgraph.Operators(o) for o in range(subgraph.OperatorsLength())
                 if index in [subgraph.Operators(o).Inputs(i) for i in range(subgraph.Operators(o).InputsLength())]]
    codes = {max(root.OperatorCodes(op.OpcodeIndex()).BuiltinCode(),
                 root.OperatorCodes(op.OpcodeIndex()).DeprecatedBuiltinCode()) for op in consumers}
    tensor = subgraph.Tensors(index)
    params = tensor.Quantization()
    if (tensor.Type() != fb.TensorType.UINT8 or codes != {fb.BuiltinOperator.QUANTIZE} or params is None
            or params.ScaleLength() != 1 or params.ZeroPointLength() != 1):
        raise ValueError("Expected the converted int8 model's uint8 input to feed QUANTIZE operators only, with one "
                         "scale and zero point. Received: another structure, which pixel input cannot rescale")
    # Scalars in a bytearray-backed flatbuffer are views into it: rewriting them edits the model in place.
    params.ScaleAsNumpy()[0] = 1.0
    params.ZeroPointAsNumpy()[0] = 0
    return bytes(buffer)


def convert_to_tflite(model, mode: str = "fp32", *, representative_data=None, num_calibration_samples: int = 100,
                      output: str = "logits", io_dtype: str | None = None, label_dtype: str = "int32",
                      host_upsample: bool = False, per_channel: bool = True, float_layers=None, float_ops=None,
                      target: str | None = None, allow_cpu_fallback: bool = False, verbose: bool = True,
                      input_format: str = "pixels", metadata: ModelMetadata | None = None) -> bytes:
    """Converts a Keras model to a TFLite flatbuffer in memory (see `to_tflite` for the arguments).

    The bytes carry no metadata; `to_tflite` embeds it.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: invalid arguments, missing calibration data for int8 / int16x8, unknown ``float_layers`` /
            ``float_ops``, or a converted model that contains Flex / custom operators (or, for int8 / int16x8
            without float layers, float tensors).
        EdgeCompatibilityError: (a ``ValueError``) the model fails the rules of ``target``.
    """
    model = resolve_model(model)
    if target is not None:
        from kerasseg.export.compat import TARGETS

        target = check_choice("target", target, TARGETS)
    converter = tflite_converter(model, mode, representative_data=representative_data,
                                 num_calibration_samples=num_calibration_samples, output=output, io_dtype=io_dtype,
                                 label_dtype=label_dtype, host_upsample=host_upsample, per_channel=per_channel,
                                 input_format=input_format, metadata=metadata, verbose=verbose)
    fallback = float_layers is not None or float_ops is not None
    if fallback:
        if mode != "int8":
            raise ValueError(f"Expected float_layers / float_ops only with mode='int8'. Received: mode={mode!r}")
        convert = lambda: quantize_with_float_layers(  # noqa: E731
            converter, float_layers, float_ops, model_name=model.name,
            layer_names=[layer.name for layer in model.layers],
            output_layer=exported_layer(model, output, host_upsample), num_samples=int(num_calibration_samples))
    else:
        convert = converter.convert
    try:
        with warnings.catch_warnings():
            # Emitted for every int8-input conversion: the statistics it asks for belong to the TF1 converter API.
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
            data = convert()
    except _converter_error() as e:
        # Only builtin operators are allowed, so an operator outside that set fails here rather than as a Flex op.
        raise ValueError(f"Expected model {model.name!r} to convert to TFLite builtin operators (mode={mode!r}, "
                         f"output={output!r}). Received: the converter's error\n{e}") from e

    if mode == "int8" and input_format == "pixels" and not fallback:
        # A file with float layers keeps float input and output (see quant_report.quantize_with_float_layers).
        data = pixel_input_quantization(data)
    non_builtin = custom_ops(data)
    if non_builtin:
        raise ValueError(f"Expected a model of TFLite builtin operators only. Received: model {model.name!r} "
                         f"converts (mode={mode!r}) with non-builtin operators {non_builtin}, which edge runtimes "
                         f"cannot run")
    if mode in INTEGER_MODES and not fallback:
        floats = float_tensors(data)
        if floats:
            raise ValueError(f"Expected a fully integer model for mode={mode!r}. Received: {len(floats)} float "
                             f"tensors left in model {model.name!r}, e.g. {floats[:5]}")
    if target is not None:
        from kerasseg.export.compat import TOOLCHAIN_RULES, check

        report = check(data, target)
        report.source = f"model {model.name!r} ({mode}, output={output!r})"
        # allow_cpu_fallback accepts what the real tool would leave to the CPU, never what no runtime can load.
        if any(not allow_cpu_fallback or f.rule not in TOOLCHAIN_RULES for f in report.failures):
            raise EdgeCompatibilityError(f"Expected the exported model to pass the {target!r} target's rules. "
                                         f"Received: {report.summary()}", report)
    return data


def to_tflite(model, path, mode: str = "fp32", *, representative_data=None, num_calibration_samples: int = 100,
              output: str = "logits", metadata: ModelMetadata | None = None, io_dtype: str | None = None,
              label_dtype: str = "int32", host_upsample: bool = False, per_channel: bool = True,
              float_layers=None, float_ops=None, target: str | None = None, allow_cpu_fallback: bool = False,
              verbose: bool = True, input_format: str = "pixels") -> str:
    """Converts a Keras model to a ``.tflite`` file with embedded metadata and writes its sidecar, both atomically.

    Args:
        model: a Keras model with one static-shaped input ``(B, H, W, C)`` and one logits output, or the path of
            a ``.keras`` file; a quantization-aware model is refused with a `TypeError` naming `qat_to_tflite`.
        path: destination ``.tflite`` file; the sidecar goes to ``os.path.splitext(path)[0] + ".json"``.
        mode: ``"fp32"``, ``"fp16"`` (float16 weights), ``"dynamic"`` (int8 weights, float activations),
            ``"int8"`` (full-integer: weights, activations, input and output) or ``"int16x8"`` (int16 activations,
            input and output, int8 weights: TFLite's ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``).
        representative_data: for ``"int8"`` / ``"int16x8"``, an iterable or ``tf.data.Dataset`` of normalised
            float32 images ``(H, W, C)``, batches ``(B, H, W, C)`` or ``(images, labels)`` tuples, typically the training split of
            the user's own pipeline (`kerasseg.data.load_dataset`). Images of another size are resized bilinearly to
            the model input.
        num_calibration_samples: number of single images drawn from ``representative_data``.
        output: the exported head: ``"logits"``, ``"probabilities"`` (softmax) or ``"labels"`` (in-graph argmax,
            a label map of ``label_dtype``; see `with_head`).
        metadata: overrides ``model.kerasseg_metadata``; without either, ImageNet normalisation is recorded.
        io_dtype: int8 mode only: ``"int8"`` or ``"uint8"`` input and output tensors; ``None`` (default) is uint8
            for pixel input (the only type pixels fit) and int8 for normalised input.
        per_channel: int8 mode: ``False`` quantises each weight tensor with one scale (per-tensor), for NPUs that
            require it; ``True`` (default) one scale per output channel.
        float_layers: int8 mode: keep layers in float, either the ``N`` worst of the per-layer report
            (`kerasseg.export.quant_report`) or a list of Keras layer names / TFLite tensor names. The model is then
            no longer fully integer (float input and output, QUANTIZE / DEQUANTIZE around the kept layers); the
            sidecar records ``fully_integer: false`` and the ``npu`` target refuses it.
        float_ops: int8 mode: TFLite operator names kept in float wherever they occur (e.g. ``["RESIZE_BILINEAR"]``).
        label_dtype: ``"int32"`` or ``"uint8"``: the label map type of the ``"labels"`` head.
        host_upsample: export the logits at the model's reduced resolution, without its final bilinear resize; the
            sidecar records the resize (``extra["export"]["host_upsample"]``) for the host to apply.
        target: ``None`` or one of `kerasseg.export.TARGETS` (``"cpu"``, ``"gpu"``, ``"npu"``,
            ``"ethos-u55-128"``, ...): refuse (write nothing) unless the converted model passes that target's check,
            which asks the real tool (LiteRT's GPU accelerator, Arm Vela; `kerasseg.export.check`); the error lists
            the operators that would fall back to the CPU, with the tool's reasons.
        allow_cpu_fallback: with a ``target``, write the model even when the tool leaves operators to the CPU (or,
            for an NPU, exceeds the SRAM budget); builtin operators, static shapes and, for an NPU, a fully integer
            graph stay required.
        verbose: print the calibration progress to stderr.
        input_format: ``"pixels"`` (default): the model takes RGB pixels 0..255 (uint8 for int8, float32 otherwise)
            and normalises them in its graph; ``"normalized"``: the model takes normalised float values (int8:
            quantised ones), the older contract. Calibration data is normalised images either way.

    Returns:
        ``path``.

    Raises:
        ValueError: unknown mode / output / io_dtype / target, no representative data for int8, a path not ending
            in ``.tflite``, or a converted model with Flex / custom operators (or float tensors for int8). Nothing
            is written then.
        EdgeCompatibilityError: (a ``ValueError``) the model fails the rules of ``target``; nothing is written.
    """
    model = resolve_model(model)
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"Expected a path ending in '.tflite'. Received: path={path!r}")
    from kerasseg.export.metadata import embed_metadata

    meta = export_metadata(model, metadata)
    data = convert_to_tflite(model, mode, representative_data=representative_data,
                             num_calibration_samples=num_calibration_samples, output=output, io_dtype=io_dtype,
                             label_dtype=label_dtype, host_upsample=host_upsample, per_channel=per_channel,
                             float_layers=float_layers, float_ops=float_ops, target=target,
                             allow_cpu_fallback=allow_cpu_fallback, verbose=verbose, input_format=input_format,
                             metadata=meta)
    details = io_details(data)
    upsampling = None
    if host_upsample:
        upsampling = {"method": "bilinear", "half_pixel_centers": True, "size": list(output_upsampling(model)[1])}
    meta.extra["export"] = {
        "format": "tflite",
        "mode": mode,
        "output": output,
        "input_format": input_format,
        "input_dtype": details["input_dtype"],
        "output_dtype": details["output_dtype"],
        "input_shape": details["input_shape"],
        "output_shape": details["output_shape"],
        "input_quantization": details["input_quantization"],
        "output_quantization": details["output_quantization"],
        "host_upsample": upsampling,
        "target": target,
    }
    if target is not None:
        meta.extra["export"]["allow_cpu_fallback"] = bool(allow_cpu_fallback)
    if mode in INTEGER_MODES:
        floats = float_tensors(data)
        if isinstance(float_layers, (int, np.integer)):
            float_layers = int(float_layers)
        elif float_layers is not None:
            float_layers = list(float_layers)
        meta.extra["export"].update(per_channel=per_channel, fully_integer=not floats, float_layers=float_layers,
                                    float_ops=None if float_ops is None else list(float_ops), float_tensors=floats)
    data = embed_metadata(data, meta)
    return write_with_sidecar(path, data, meta)
