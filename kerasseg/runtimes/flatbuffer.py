"""The one reader of TFLite flatbuffers: operators, tensors, inputs / outputs, straight from the file.

Read from the flatbuffer rather than an interpreter, so that a model with Flex or custom operators (which no
interpreter here can allocate) can still be inspected. `kerasseg.export.compat` builds its edge-compatibility report
on `read_model`; `tflite_ops`, `custom_ops` and `float_tensors` are the summaries the exporters check.
"""

from __future__ import annotations

import dataclasses

from kerasseg.runtimes.inputs import file_bytes

__all__ = ["FLOAT_TYPES", "Tensor", "Operator", "Subgraph", "model_bytes", "schema", "enum_names", "read_model",
           "tflite_ops", "custom_ops", "float_tensors"]

FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph.

    Attributes:
        name: the tensor name.
        type: the schema's type name (``"FLOAT32"``, ``"INT8"``...).
        shape: the static shape.
        signature: the shape signature (``-1`` for a dynamic dimension).
        is_const: whether it holds data (weights), or is the output of a DEQUANTIZE / DENSIFY of constants.
        quantization: ``[scale, zero point]`` of a per-tensor quantised tensor, else ``None``.
    """

    name: str
    type: str
    shape: tuple
    signature: tuple
    is_const: bool
    quantization: list | None


@dataclasses.dataclass(frozen=True)
class Operator:
    """One operator of a subgraph, in execution order.

    Attributes:
        index: its position in the subgraph.
        name: the builtin name (``"CONV_2D"``) or the custom code (Flex operators are ``"Flex<TfOpName>"``).
        custom: whether it is a custom (or Flex) operator.
        inputs: `Tensor` or ``None`` (an omitted optional input) per input.
        outputs: `Tensor` per output.
        options: the schema's options table, or ``None``.
    """

    index: int
    name: str
    custom: bool
    inputs: tuple
    outputs: tuple
    options: object


@dataclasses.dataclass(frozen=True)
class Subgraph:
    """Tensors, operators and the input / output tensors of one subgraph."""

    tensors: list
    operators: list
    inputs: list
    outputs: list


def model_bytes(model) -> bytes:
    """The flatbuffer of ``model``: a path to a .tflite file, or its bytes.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: data that is not a TFLite flatbuffer.
    """
    data, source = file_bytes(model, ".tflite")
    # Every TFLite flatbuffer carries the file identifier "TFL3" at bytes 4..8.
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"Expected a TFLite flatbuffer (file identifier 'TFL3'). Received: {source}, "
                         f"which is not one")
    return data


def schema():
    """LiteRT's generated flatbuffer schema module (``ai_edge_litert.schema_py_generated``)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def enum_names(enum_class) -> dict[int, str]:
    """``{value: name}`` of a generated schema enum class."""
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def read_model(model, *, options: bool = True) -> list[Subgraph]:
    """Every subgraph of a TFLite model, main subgraph first.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        options: also decode each operator's builtin options table (`Operator.options`).
    """
    data = model_bytes(model)
    fb = schema()
    builtin_names = enum_names(fb.BuiltinOperator)
    type_names = enum_names(fb.TensorType)
    option_names = enum_names(fb.BuiltinOptions)
    root = fb.Model.GetRootAs(data, 0)

    def has_data(buffer_index: int) -> bool:
        if buffer_index <= 0 or buffer_index >= root.BuffersLength():
            return False
        buffer = root.Buffers(buffer_index)
        # Buffers above 2 GiB live outside the flatbuffer and are described by offset / size.
        return buffer.DataLength() > 0 or buffer.Size() > 0

    subgraphs = []
    for s in range(root.SubgraphsLength()):
        graph = root.Subgraphs(s)
        raw_tensors = [graph.Tensors(t) for t in range(graph.TensorsLength())]
        constant = {t for t, tensor in enumerate(raw_tensors) if has_data(tensor.Buffer())}
        raw_ops = []
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            code = root.OperatorCodes(op.OpcodeIndex())
            # Builtin codes above 127 live in `builtin_code`; older files only fill `deprecated_builtin_code`.
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = builtin == fb.BuiltinOperator.CUSTOM
            if custom:
                name = code.CustomCode().decode("utf-8") if code.CustomCode() else "CUSTOM"
            else:
                name = builtin_names.get(builtin, f"BUILTIN_{builtin}")
            ins = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
            outs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
            # Weights stored as float16 (or sparse) reach their operator through DEQUANTIZE (or DENSIFY) of a
            # constant; delegates fold those into constant weights, so their outputs count as constants.
            if name in ("DEQUANTIZE", "DENSIFY") and ins and all(i in constant for i in ins if i >= 0):
                constant.update(outs)
            raw_ops.append((o, name, custom, ins, outs, op))
        tensors = []
        for t, tensor in enumerate(raw_tensors):
            shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
            signature = (tuple(int(d) for d in tensor.ShapeSignatureAsNumpy()) if tensor.ShapeSignatureLength()
                         else shape)
            quant = tensor.Quantization()
            quantization = None
            if quant is not None and quant.ScaleLength() == 1 and quant.ZeroPointLength() == 1:
                quantization = [float(quant.Scale(0)), int(quant.ZeroPoint(0))]
            tensors.append(Tensor((tensor.Name() or b"").decode("utf-8", "replace"),
                                  type_names.get(tensor.Type(), str(tensor.Type())), shape, signature,
                                  t in constant, quantization))
        ops = []
        for o, name, custom, ins, outs, op in raw_ops:
            table_options = None
            table = op.BuiltinOptions() if options else None
            option_class = getattr(fb, option_names.get(op.BuiltinOptionsType(), ""), None)
            if table is not None and option_class is not None:
                table_options = option_class()
                table_options.Init(table.Bytes, table.Pos)
            ops.append(Operator(o, name, custom, tuple(tensors[i] if i >= 0 else None for i in ins),
                                tuple(tensors[i] for i in outs), table_options))
        subgraphs.append(Subgraph(tensors, ops,
                                  [tensors[i] for i in graph.InputsAsNumpy()] if graph.InputsLength() else [],
                                  [tensors[i] for i in graph.OutputsAsNumpy()] if graph.OutputsLength() else []))
    return subgraphs


def tflite_ops(model) -> dict[str, int]:
    """Operator counts of a TFLite model, over all subgraphs.

    Args:
        model: path to a ``.tflite`` file, or its bytes.

    Returns:
        ``{op name: count}``; builtin operators by their schema name (``"CONV_2D"``), custom operators by their custom
        code (Flex operators are ``"Flex<TfOpName>"``).
    """
    counts: dict[str, int] = {}
    for graph in read_model(model, options=False):
        for op in graph.operators:
            counts[op.name] = counts.get(op.name, 0) + 1
    return counts


def custom_ops(model) -> list[str]:
    """Sorted names of the non-builtin operators of a TFLite model (Flex ``Flex*`` and custom ones)."""
    return sorted({op.name for graph in read_model(model, options=False) for op in graph.operators if op.custom})


def float_tensors(model) -> list[str]:
    """Names of the floating-point tensors of a TFLite model (all subgraphs), e.g. what int8 export left in float."""
    return [t.name for graph in read_model(model, options=False) for t in graph.tensors if t.type in FLOAT_TYPES]
