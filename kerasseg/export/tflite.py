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
edge-compatibility rules (`kerasseg.export.check`) before anything is written.

Example::

    to_tflite(model, "erfnet_int8.tflite", "int8", representative_data=calibration_images)
    TFLiteModel("erfnet_int8.tflite")(normalised_batch)   # float logits; pixels and quantisation handled
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np

from kerasseg.errors import CalibrationDataError, InvalidFileError
from kerasseg.preprocessing import NORMALIZATIONS, ModelMetadata
from kerasseg.saving import atomic_path, resolve_model

__all__ = [
    "MODES",
    "OUTPUT_HEADS",
    "IO_DTYPES",
    "INPUT_FORMATS",
    "LABEL_DTYPES",
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

MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
# Full-integer modes: calibrated activations, integer input and output.
INTEGER_MODES = ("int8", "int16x8")
OUTPUT_HEADS = ("logits", "probabilities", "labels")
IO_DTYPES = ("int8", "uint8")
INPUT_FORMATS = ("pixels", "normalized")
LABEL_DTYPES = ("int32", "uint8")

_FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")


def check_choice(arg: str, value, choices) -> str:
    # Exact membership only: "int" must not silently mean "int8".
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Expected {arg} to be one of {list(choices)}. Received: {arg}={value!r}")
    return value


def sidecar_path(path) -> str:
    """The sidecar JSON path of an exported file: ``model.tflite`` -> ``model.json``."""
    return os.path.splitext(os.fspath(path))[0] + ".json"


def read_sidecar(path) -> ModelMetadata:
    """Reads the `ModelMetadata` sidecar of an exported model (the model path or the JSON path itself)."""
    path = os.fspath(path)
    json_path = path if path.endswith(".json") else sidecar_path(path)
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"Expected a metadata sidecar next to the model. Received: no file {json_path!r}")
    try:
        with open(json_path, encoding="utf-8") as f:
            return ModelMetadata.from_json(f.read())
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidFileError(f"{e} (in the sidecar {json_path!r})") from None


# --------------------------------------------------------------------------------------------------------------
# Inspecting converted models
# --------------------------------------------------------------------------------------------------------------

def model_bytes(model) -> bytes:
    """The flatbuffer of ``model``: a path to a .tflite file, or its bytes."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        source = "the given bytes"
    else:
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Expected an existing .tflite file. Received: path={path!r}")
        with open(path, "rb") as f:
            data = f.read()
        source = repr(path)
    # Every TFLite flatbuffer carries the file identifier "TFL3" at bytes 4..8.
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"Expected a TFLite flatbuffer (file identifier 'TFL3'). Received: {source}, "
                         f"which is not one")
    return data


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _enum_names(enum_class) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def _walk_operators(data: bytes):
    """Yields ``(name, is_custom)`` for every operator of every subgraph."""
    schema = _schema()
    builtin_names = _enum_names(schema.BuiltinOperator)
    root = schema.Model.GetRootAs(data, 0)
    for s in range(root.SubgraphsLength()):
        subgraph = root.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            code = root.OperatorCodes(subgraph.Operators(o).OpcodeIndex())
            # Builtin codes above 127 live in `builtin_code`; older files only fill `deprecated_builtin_code`.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if builtin == schema.BuiltinOperator.CUSTOM:
                custom = code.CustomCode()
                yield (custom.decode("utf-8") if custom else "CUSTOM"), True
            else:
                yield builtin_names.get(builtin, f"BUILTIN_{builtin}"), False


def tflite_ops(model) -> dict[str, int]:
    """Operator counts of a TFLite model, over all subgraphs.

    Args:
        model: path to a ``.tflite`` file, or its bytes.

    Returns:
        ``{op name: count}``; builtin operators by their schema name (``"CONV_2D"``), custom operators by their custom
        code (Flex operators are ``"Flex<TfOpName>"``).
    """
    counts: dict[str, int] = {}
    for name, _ in _walk_operators(model_bytes(model)):
        counts[name] = counts.get(name, 0) + 1
    return counts


def custom_ops(model) -> list[str]:
    """Sorted names of the non-builtin operators of a TFLite model (Flex ``Flex*`` and custom ones)."""
    return sorted({name for name, is_custom in _walk_operators(model_bytes(model)) if is_custom})


def float_tensors(model) -> list[str]:
    """Names of the floating-point tensors of a TFLite model (all subgraphs), e.g. what int8 export left in float."""
    data = model_bytes(model)
    schema = _schema()
    type_names = _enum_names(schema.TensorType)
    root = schema.Model.GetRootAs(data, 0)
    names = []
    for s in range(root.SubgraphsLength()):
        subgraph = root.Subgraphs(s)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            if type_names.get(tensor.Type()) in _FLOAT_TYPES:
                names.append((tensor.Name() or b"").decode("utf-8", "replace"))
    return names


def _quantization(detail) -> list | None:
    scale, zero_point = detail["quantization"]
    return [float(scale), int(zero_point)] if scale else None


def io_details(model) -> dict:
    """Input / output dtype, shape and quantisation of a single-input, single-output TFLite model.

    Returns:
        dict with ``input_dtype``, ``output_dtype`` (numpy dtype names), ``input_shape``, ``output_shape`` and
        ``input_quantization`` / ``output_quantization`` as ``[scale, zero_point]`` or ``None`` for float tensors.
    """
    interpreter = _interpreter(model_bytes(model))
    inp, out = _single_io(interpreter)
    return {
        "input_dtype": np.dtype(inp["dtype"]).name,
        "output_dtype": np.dtype(out["dtype"]).name,
        "input_shape": [int(d) for d in inp["shape"]],
        "output_shape": [int(d) for d in out["shape"]],
        "input_quantization": _quantization(inp),
        "output_quantization": _quantization(out),
    }


def _interpreter(data: bytes, num_threads: int | None = None):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


def _single_io(interpreter):
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"Expected a TFLite model with one input and one output. Received: {len(inputs)} inputs "
                         f"and {len(outputs)} outputs")
    return inputs[0], outputs[0]


# --------------------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------------------

def static_input_shape(model) -> tuple[int, int, int]:
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"Expected a model with one input and one output. Received: model {model.name!r} with "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(f"Expected a model with a static (height, width, channels) input; edge runtimes need "
                         f"static shapes. Received: model {model.name!r} with input shape "
                         f"{tuple(model.inputs[0].shape)}")
    return tuple(int(d) for d in shape)


def calibration_samples(data, count: int, shape: tuple[int, int, int], verbose: bool = False, pixels=None):
    """Yields ``[image (1, H, W, C) float32]`` lists for a calibrating converter, ``count`` single images at most.

    Args:
        data: ``representative_data`` as `to_tflite` takes it.
        count: number of single images to draw.
        shape: the model input ``(H, W, C)``; other image sizes are resized bilinearly.
        verbose: print the progress to stderr.
        pixels: ``(mean, std)`` to turn the normalised images of the user's pipeline back into the pixel values a
            pixel-input graph takes; ``None`` yields them normalised.
    """
    import tensorflow as tf

    height, width, channels = shape
    interactive = verbose and sys.stderr.isatty()
    step = max(1, count // 10)
    done = 0
    for index, element in enumerate(data):
        where = f"representative_data element {index}"
        if isinstance(element, (tuple, list)):
            if not element:
                raise CalibrationDataError(f"Expected representative_data to yield images, (images, labels) tuples "
                                           f"or batches. Received: an empty tuple as {where}")
            element = element[0]
        batch = np.asarray(element)
        if not np.issubdtype(batch.dtype, np.floating):
            raise CalibrationDataError(f"Expected representative_data to yield normalised float images (the "
                                       f"model's input, not raw pixels). Received: dtype {batch.dtype} in {where}")
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != channels or 0 in batch.shape:
            raise CalibrationDataError(f"Expected representative_data to yield images (H, W, {channels}) or "
                                       f"batches (B, H, W, {channels}) for the model input {shape}. Received: shape "
                                       f"{np.shape(element)} in {where}")
        finite = np.isfinite(batch).reshape(len(batch), -1).all(axis=1)
        if not finite.all():
            raise CalibrationDataError(f"Expected finite calibration images. Received: NaN or infinite values in "
                                       f"{where}" + (f", image {int(np.argmin(finite))} of its batch"
                                                     if len(batch) > 1 else ""))
        batch = batch.astype(np.float32, copy=False)
        if batch.shape[1:3] != (height, width):
            # Bilinear resizing is linear, so resizing normalised images equals normalising resized ones.
            batch = tf.image.resize(batch, (height, width), method="bilinear").numpy()
        if pixels is not None:
            batch = batch * pixels[1] + pixels[0]
        for image in batch:
            done += 1
            if interactive:
                filled = int(24 * done / count)
                print(f"\rcalibrating {done}/{count} [{'#' * filled}{'.' * (24 - filled)}]", end="",
                      file=sys.stderr, flush=True)
            elif verbose and (done % step == 0 or done in (1, count)):
                print(f"calibrating {done}/{count}", file=sys.stderr, flush=True)
            yield [image[None]]
            if done >= count:
                break
        if done >= count:
            break
    if interactive:
        print(file=sys.stderr)
    if verbose and done < count:
        print(f"calibrated on {done} images only: representative_data ran out before "
              f"num_calibration_samples={count}", file=sys.stderr)


def _output_layer(model):
    """The layer that produces ``model``'s (single) output."""
    # Keras 3 records the producing operation of every symbolic tensor in its history.
    return model.outputs[0]._keras_history.operation


def output_upsampling(model):
    """The bilinear resize that ends ``model``, if any: ``(layer, (height, width))`` of its output, else ``None``.

    Only a parameter-free ``UpSampling2D(interpolation="bilinear")`` or ``Resizing(interpolation="bilinear")``
    without cropping or padding qualifies: the host can then reproduce it exactly (half-pixel centres).
    """
    import keras

    if len(model.outputs) != 1:
        return None
    layer = _output_layer(model)
    bilinear = (isinstance(layer, keras.layers.UpSampling2D) and layer.interpolation == "bilinear") or (
        isinstance(layer, keras.layers.Resizing) and layer.interpolation == "bilinear"
        and not getattr(layer, "crop_to_aspect_ratio", False) and not getattr(layer, "pad_to_aspect_ratio", False))
    if not bilinear or len(layer._inbound_nodes) != 1:
        return None
    shape = model.outputs[0].shape
    return layer, (int(shape[1]), int(shape[2]))


def with_head(model, output: str = "logits", *, label_dtype: str = "int32", host_upsample: bool = False):
    """The Keras model that an export with this head converts.

    Args:
        model: a Keras model with one logits output ``(B, H, W, K)``.
        output: ``"logits"``, ``"probabilities"`` (a float32 ``Softmax``) or ``"labels"`` (an `ArgMax` layer; the
            resulting model saves to ``.keras`` and loads with ``safe_mode=True``).
        label_dtype: ``"int32"`` or ``"uint8"`` label map (``"labels"`` only).
        host_upsample: drop the final bilinear resize (see `output_upsampling`); the logits stay at the model's
            reduced resolution and the host up-samples them. Logits head only.

    Returns:
        ``model`` itself for plain logits, otherwise a new functional model sharing its layers (and its
        ``kerasseg_metadata``).

    Raises:
        ValueError: an unknown output / label dtype, a label dtype too narrow for the classes, or ``host_upsample``
            with another head or with a model that does not end in a bilinear resize.
    """
    import keras

    from kerasseg.layers.argmax import ArgMax

    output = check_choice("output", output, OUTPUT_HEADS)
    label_dtype = check_choice("label_dtype", label_dtype, LABEL_DTYPES)
    if not isinstance(host_upsample, bool):
        raise ValueError(f"Expected host_upsample to be True or False. Received: host_upsample={host_upsample!r}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"Expected a model with one input and one output. Received: model {model.name!r} with "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
    last = _output_layer(model)
    if isinstance(last, ArgMax):
        # A model saved with its label head (e.g. a .keras file loaded back) is exported as it is.
        if output == "labels" and last.output_dtype == label_dtype and not host_upsample:
            return model
        raise ValueError(f"Expected a logits model, or output='labels' with label_dtype={last.output_dtype!r} for a "
                         f"model that already ends in an ArgMax label head. Received: output={output!r}, "
                         f"label_dtype={label_dtype!r}, host_upsample={host_upsample} for model {model.name!r}")
    num_classes = int(model.outputs[0].shape[-1])
    if output == "labels" and label_dtype == "uint8" and num_classes > 256:
        raise ValueError(f"Expected at most 256 classes for label_dtype='uint8'. Received: {num_classes} classes")
    logits = model.outputs[0]
    if host_upsample:
        if output != "logits":
            raise ValueError(f"Expected output='logits' with host_upsample=True: the host up-samples logits before "
                             f"its argmax. Received: output={output!r}")
        found = output_upsampling(model)
        if found is None:
            raise ValueError(f"Expected a model whose output layer is a bilinear UpSampling2D / Resizing for "
                             f"host_upsample=True. Received: model {model.name!r} whose output layer {last.name!r} "
                             f"is a {type(last).__name__}")
        logits = found[0].input
    elif output == "logits":
        return model
    if output == "probabilities":
        out = keras.layers.Softmax(axis=-1, dtype="float32", name="probabilities")(logits)
    elif output == "labels":
        out = ArgMax(axis=-1, output_dtype=label_dtype, name="labels")(logits)
    else:
        out = logits
    # The single input tensor, not a one-element list: calling the model on a plain tensor then matches its structure.
    head = keras.Model(model.inputs[0], out, name=model.name)
    if getattr(model, "kerasseg_metadata", None) is not None:
        head.kerasseg_metadata = model.kerasseg_metadata
    return head


def _converter_error():
    # The converter's exception class has no public name; without it, conversion errors propagate unchanged.
    try:
        from tensorflow.lite.python.convert_phase import ConverterError
    except ImportError:
        return ()
    return ConverterError


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


def _io_dtype(io_dtype, input_format: str) -> str:
    if io_dtype is None:
        return "uint8" if input_format == "pixels" else "int8"
    io_dtype = check_choice("io_dtype", io_dtype, IO_DTYPES)
    if input_format == "pixels" and io_dtype != "uint8":
        raise ValueError(f"Expected io_dtype='uint8' (or None) with input_format='pixels': camera pixels are 0..255. "
                         f"Received: io_dtype={io_dtype!r}")
    return io_dtype


def _pixel_input_quantization(data: bytes) -> bytes:
    """``data`` with its uint8 input quantised as the pixels themselves (scale 1, zero point 0).

    The converter derives the input scale from the calibration images' range, so a frame whose darkest / brightest
    pixels are not exactly 0 / 255 would need a host-side requantisation. Its uint8 input feeds a QUANTIZE operator
    (uint8 -> int8), which requantises from whatever scale its input declares, so declaring (1, 0) moves the
    rescaling into that operator and makes the raw frame bytes the input.
    """
    schema = _schema()
    buffer = bytearray(data)
    root = schema.Model.GetRootAs(buffer, 0)
    subgraph = root.Subgraphs(0)
    index = subgraph.Inputs(0)
    consumers = [subgraph.Operators(o) for o in range(subgraph.OperatorsLength())
                 if index in [subgraph.Operators(o).Inputs(i) for i in range(subgraph.Operators(o).InputsLength())]]
    codes = {max(root.OperatorCodes(op.OpcodeIndex()).BuiltinCode(),
                 root.OperatorCodes(op.OpcodeIndex()).DeprecatedBuiltinCode()) for op in consumers}
    tensor = subgraph.Tensors(index)
    params = tensor.Quantization()
    if (tensor.Type() != schema.TensorType.UINT8 or codes != {schema.BuiltinOperator.QUANTIZE} or params is None
            or params.ScaleLength() != 1 or params.ZeroPointLength() != 1):
        raise ValueError("Expected the converted int8 model's uint8 input to feed QUANTIZE operators only, with one "
                         "scale and zero point. Received: another structure, which pixel input cannot rescale")
    # Scalars in a bytearray-backed flatbuffer are views into it: rewriting them edits the model in place.
    params.ScaleAsNumpy()[0] = 1.0
    params.ZeroPointAsNumpy()[0] = 0
    return bytes(buffer)


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
    mode = check_choice("mode", mode, MODES)
    output = check_choice("output", output, OUTPUT_HEADS)
    input_format = check_choice("input_format", input_format, INPUT_FORMATS)
    _check_quantization_options(mode, io_dtype, per_channel)
    if mode != "int16x8":  # int16x8 input is int16 whatever the format
        io_dtype = _io_dtype(io_dtype, input_format)
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
        from kerasseg.export.check import TARGETS

        target = check_choice("target", target, TARGETS)
    converter = tflite_converter(model, mode, representative_data=representative_data,
                                 num_calibration_samples=num_calibration_samples, output=output, io_dtype=io_dtype,
                                 label_dtype=label_dtype, host_upsample=host_upsample, per_channel=per_channel,
                                 input_format=input_format, metadata=metadata, verbose=verbose)
    fallback = float_layers is not None or float_ops is not None
    if fallback:
        if mode != "int8":
            raise ValueError(f"Expected float_layers / float_ops only with mode='int8'. Received: mode={mode!r}")
        from kerasseg.export.quant_report import exported_layer, quantize_with_float_layers

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
        data = _pixel_input_quantization(data)
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
        from kerasseg.export.check import TOOLCHAIN_RULES, EdgeCompatibilityError, check

        report = check(data, target)
        report.source = f"model {model.name!r} ({mode}, output={output!r})"
        # allow_cpu_fallback accepts what the real tool would leave to the CPU, never what no runtime can load.
        if any(not allow_cpu_fallback or f.rule not in TOOLCHAIN_RULES for f in report.failures):
            raise EdgeCompatibilityError(f"Expected the exported model to pass the {target!r} target's rules. "
                                         f"Received: {report.summary()}", report)
    return data


def export_metadata(model, metadata: ModelMetadata | None = None) -> ModelMetadata:
    """A copy of the metadata an export records: ``metadata``, else ``model.kerasseg_metadata``, else defaults.

    The defaults name the model, its class count and input shape, and ImageNet normalisation.
    """
    metadata = metadata if metadata is not None else getattr(model, "kerasseg_metadata", None)
    if metadata is None:
        mean, std = NORMALIZATIONS["imagenet"]
        shape = [int(d) if d is not None else None for d in model.inputs[0].shape[1:]]
        return ModelMetadata(model_name=model.name, num_classes=int(model.outputs[0].shape[-1]), input_shape=shape,
                             normalization="imagenet", mean=list(mean), std=list(std))
    if not isinstance(metadata, ModelMetadata):
        raise ValueError(f"Expected metadata to be a kerasseg ModelMetadata. Received: metadata={metadata!r}")
    # A copy: the export record must not leak into the model's own metadata.
    return dataclasses.replace(metadata, extra=json.loads(json.dumps(metadata.extra)))


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
        target: ``None`` or one of `kerasseg.export.check.TARGETS` (``"cpu"``, ``"gpu"``, ``"npu"``,
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
    # Both temporary files are complete before either is renamed; the sidecar lands first so that a model file is
    # never newer than its description.
    with atomic_path(path) as tmp_model, atomic_path(sidecar_path(path), suffix=".json") as tmp_json:
        with open(tmp_model, "wb") as f:
            f.write(data)
        with open(tmp_json, "w", encoding="utf-8") as f:
            f.write(meta.to_json())
    return path


# --------------------------------------------------------------------------------------------------------------
# Running converted models
# --------------------------------------------------------------------------------------------------------------

class TFLiteModel:
    """Runs a batch-1 TFLite segmentation model on normalised float batches, hiding the input contract and quantisation.

    A pixel-input model (``extra["export"]["input_format"] == "pixels"``) gets the batch turned back into pixels
    (rounded to uint8 for an int8 model, as a camera frame would be), so Keras and TFLite are scored on the same
    pipeline output whatever the contract.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        num_threads: interpreter CPU threads (LiteRT's default when ``None``).
        metadata: the export's `ModelMetadata`; by default the sidecar next to a model path, if any. Without
            metadata the model is taken to have normalised input.

    Attributes:
        input_shape: ``(H, W, C)`` of the model input.
        head: ``"labels"`` for an integer label-map output, ``"scores"`` for logits or probabilities.
        input_dtype, output_dtype: numpy dtypes of the model's input and output tensors.
        input_quantization, output_quantization: ``(scale, zero_point)`` or ``None``.
    """

    def __init__(self, model, *, num_threads: int | None = None, metadata: ModelMetadata | None = None):
        if metadata is None and not isinstance(model, (bytes, bytearray, memoryview)) and os.path.isfile(
                sidecar_path(model)):
            metadata = read_sidecar(model)
        export = (metadata.extra.get("export") or {}) if metadata is not None else {}
        self.input_format = export.get("input_format", "normalized")
        self._pixels = None
        if self.input_format == "pixels":
            self._pixels = (np.asarray(metadata.mean, np.float32), np.asarray(metadata.std, np.float32))
        self.interpreter = _interpreter(model_bytes(model), num_threads)
        self._input, self._output = _single_io(self.interpreter)
        shape = tuple(int(d) for d in self._input["shape"])
        if len(shape) != 4 or shape[0] != 1:
            raise ValueError(f"Expected a batch-1 image model with input (1, H, W, C). Received: input shape "
                             f"{shape}")
        self.input_shape = shape[1:]
        self.input_dtype = np.dtype(self._input["dtype"])
        self.output_dtype = np.dtype(self._output["dtype"])
        self.input_quantization = _quantization(self._input)
        self.output_quantization = _quantization(self._output)
        integer_out = np.issubdtype(self.output_dtype, np.integer)
        self.head = "labels" if integer_out and self.output_quantization is None else "scores"

    def _quantize(self, image: np.ndarray) -> np.ndarray:
        if self.input_quantization is None:
            return image.astype(self.input_dtype, copy=False)
        scale, zero_point = self.input_quantization
        info = np.iinfo(self.input_dtype)
        q = np.round(image / np.float32(scale)) + zero_point
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def _dequantize(self, raw: np.ndarray) -> np.ndarray:
        if self.output_quantization is None:
            return raw if self.head == "labels" else raw.astype(np.float32, copy=False)
        scale, zero_point = self.output_quantization
        return (raw.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)

    def __call__(self, images) -> np.ndarray:
        """Runs the model image by image.

        Args:
            images: normalised float images ``(B, H, W, C)`` or one image ``(H, W, C)`` at the model input size.

        Returns:
            Float32 scores ``(B, H, W, K)`` (logits or probabilities, dequantised), or int32 labels ``(B, H, W)``
            for a label head; without the batch axis when a single image was given.
        """
        batch = np.asarray(images, np.float32)
        single = batch.ndim == 3
        if single:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise ValueError(f"Expected images of shape (B, {', '.join(map(str, self.input_shape))}) or "
                             f"{self.input_shape}. Received: images of shape {np.shape(images)}")
        results = []
        if self._pixels is not None:
            batch = batch * self._pixels[1] + self._pixels[0]
        for image in batch:
            self.interpreter.set_tensor(self._input["index"], self._quantize(image[None]))
            self.interpreter.invoke()
            results.append(self._dequantize(self.interpreter.get_tensor(self._output["index"]))[0])
        out = np.stack(results)
        return out[0] if single else out

    def predict_labels(self, images) -> np.ndarray:
        """Int32 label maps ``(B, H, W)`` (or ``(H, W)``) of normalised float images."""
        out = self(images)
        return out.astype(np.int32) if self.head == "labels" else np.argmax(out, axis=-1).astype(np.int32)


# --------------------------------------------------------------------------------------------------------------
# Export with an accuracy check
# --------------------------------------------------------------------------------------------------------------

class AccuracyDropError(RuntimeError):
    """Raised by `export_verified` when the TFLite model loses more mIoU than allowed; ``report`` holds the figures."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def export_verified(model, path, mode: str = "fp32", *, eval_data, representative_data=None,
                    num_calibration_samples: int = 100, output: str = "logits", metadata: ModelMetadata | None = None,
                    io_dtype: str | None = None, label_dtype: str = "int32", host_upsample: bool = False,
                    per_channel: bool = True, float_layers=None, float_ops=None,
                    target: str | None = None, allow_cpu_fallback: bool = False, max_miou_drop: float | None = None,
                    force: bool = False, max_eval_images: int | None = None, num_threads: int | None = None,
                    verbose: bool = True, input_format: str = "pixels") -> dict:
    """Exports like `to_tflite`, scores Keras and TFLite on ``eval_data``, and installs the file only if it holds up.

    The model is converted into a temporary folder next to ``path``; the file and its sidecar are moved onto
    ``path`` only when the TFLite mIoU is at most ``max_miou_drop`` points below the Keras mIoU (or ``force``).
    The evaluation figures are added to the sidecar under ``extra["export"]["evaluation"]``.

    Args:
        model, path, mode, representative_data, num_calibration_samples, output, metadata, io_dtype, label_dtype,
            host_upsample, per_channel, float_layers, float_ops, target, allow_cpu_fallback, verbose, input_format:
            see `to_tflite`.
        eval_data: iterable / ``tf.data.Dataset`` of ``(normalised images, labels)``, batched or not.
        max_miou_drop: the largest accepted mIoU drop, in points (1.0 = one mIoU percentage point); ``None`` takes
            the mode's bound from `kerasseg.export.parity.MIOU_BOUNDS` (fp32 0.01, fp16 0.1, dynamic and int8 1.0).
        force: install the file even when the drop is larger.
        max_eval_images: score at most this many images.
        num_threads: LiteRT interpreter threads for the evaluation.

    Returns:
        The `kerasseg.evaluation.compare.compare_keras_tflite` report plus ``miou_drop`` (points), ``path``,
        ``tflite_bytes``, ``accepted`` (bool) and ``forced`` (bool).

    Raises:
        AccuracyDropError: the drop exceeds ``max_miou_drop`` and ``force`` is false; nothing is written.
    """
    from kerasseg.evaluation.compare import compare_keras_tflite
    from kerasseg.export.metadata import embed_metadata
    from kerasseg.export.parity import MIOU_BOUNDS
    from kerasseg.layers.argmax import ArgMax

    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"Expected a path ending in '.tflite'. Received: path={path!r}")
    model = resolve_model(model)
    mode = check_choice("mode", mode, MODES)
    if isinstance(_output_layer(model), ArgMax):
        raise ValueError(f"Expected a logits model to verify the export against. Received: model {model.name!r}, "
                         f"which ends in an ArgMax label head; export its logits model with output='labels'")
    if max_miou_drop is None:
        max_miou_drop = MIOU_BOUNDS[mode]
    try:
        max_miou_drop = float(max_miou_drop)
    except (TypeError, ValueError):
        raise ValueError(f"Expected max_miou_drop to be a number of mIoU points. "
                         f"Received: max_miou_drop={max_miou_drop!r}") from None
    meta = export_metadata(model, metadata)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        tmp_path = os.path.join(tmp_dir, os.path.basename(path))
        to_tflite(model, tmp_path, mode, representative_data=representative_data,
                  num_calibration_samples=num_calibration_samples, output=output, metadata=meta,
                  io_dtype=io_dtype, label_dtype=label_dtype, host_upsample=host_upsample, per_channel=per_channel,
                  float_layers=float_layers, float_ops=float_ops, target=target,
                  allow_cpu_fallback=allow_cpu_fallback, verbose=verbose, input_format=input_format)
        report = compare_keras_tflite(model, tmp_path, eval_data, meta.num_classes, meta.ignore_label,
                                      max_images=max_eval_images, num_threads=num_threads)
        report.update(path=path, mode=mode, tflite_bytes=os.path.getsize(tmp_path),
                      max_miou_drop=max_miou_drop, forced=False)
        drop = report["miou_drop"]
        report["accepted"] = bool(np.isfinite(drop) and drop <= max_miou_drop)
        if not report["accepted"]:
            if not force:
                raise AccuracyDropError(
                    f"Expected the TFLite ({mode}) mIoU to be at most {max_miou_drop:g} points below the Keras "
                    f"mIoU. Received: Keras {100 * report['keras_miou']:.2f}, TFLite {100 * report['tflite_miou']:.2f}"
                    f" (a drop of {drop:.2f} points); {path!r} was not written (force=True overrides)", report)
            report["forced"] = True
        tmp_json = sidecar_path(tmp_path)
        written = read_sidecar(tmp_json)
        written.extra["export"]["evaluation"] = {
            k: report[k] for k in ("keras_miou", "tflite_miou", "miou_drop", "pixel_agreement",
                                   "max_abs_logit_error", "num_images", "forced")}
        with open(tmp_json, "w", encoding="utf-8") as f:
            f.write(written.to_json())
        # The embedded record carries the same figures as the sidecar.
        with open(tmp_path, "rb") as f:
            data = embed_metadata(f.read(), written)
        with open(tmp_path, "wb") as f:
            f.write(data)
        # Sidecar first, so that the model file is never newer than its description.
        os.replace(tmp_json, sidecar_path(path))
        os.replace(tmp_path, path)
        return report
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
