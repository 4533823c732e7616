"""Arm Vela 5.2's operator limits for the Ethos-U NPUs, restated as a fast, dependency-free pre-check.

`ethos_u_findings` judges the operators of an int8 ``.tflite`` model (read with `kerasseg.runtimes.flatbuffer`) the
way Vela 5.2 places them on one Ethos-U generation, without importing or running Vela. It knows the limits that decide
a segmentation graph's placement:

- the operators each generation runs at all (Vela's ``Unsupported opType``): the TFLite operator lists of Vela's C++
  core, ``ethosu.regor.tflite_operator_constraints("EthosU55")`` (also used for U65) and ``("EthosU85")``;
  SPACE_TO_DEPTH / DEPTH_TO_SPACE run on none, EQUAL / SELECT_V2 / CAST and the other comparisons on U85 only;
- RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR scale factors: on U55 / U65 2×, 4× or 8× (equal in height and width), and
  a half-pixel bilinear resize (what Keras and ``tf.image.resize`` convert to) 2× only; on U85 a bilinear resize by an
  integer power of two (each dimension on its own) and a nearest-neighbour resize by any factor up to 1024 (2048
  with ``align_corners``); ``align_corners`` with ``half_pixel_centers`` on none; a 1x1 map (a broadcast) or an
  unchanged size on all; bilinear down-scaling (a factor below 1) on none;
- TRANSPOSE_CONV strides: 1×1 or 2×2 on U55 / U65 (2×1 / 1×2 only for a one-row / one-column input and kernel); any
  stride on U85.

Each message names the operator and the limit, with Vela's own words where it has them. The rules were checked
against Vela 5.2 on tiny graphs (``tests/export/test_precheck_vs_tools.py`` holds them to Vela's verdicts).

What the rules cannot know, and leave to Vela (``check(path, target)`` with the toolchain): limits on weight values
(Vela's sum of absolute weights per kernel, bias magnitudes), tensor dimensions beyond the NPU's ranges, quantisation
parameters (zero points, scales) Vela refuses, operators Vela rewrites before placing them, the generic data-type
constraints per operator, and SRAM use. An operator these rules pass may still run on the CPU for one of those
reasons; the rules pass nothing Vela refuses for the reasons above.
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["ETHOS_U_OPS", "VELA_VERSION", "ethos_u_findings", "ethos_u_generation"]

# The Vela release whose limits these rules restate.
VELA_VERSION = "5.2"

_U55_OPS = frozenset({
    "ABS", "ADD", "ARG_MAX", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
    "ELU", "EXP", "EXPAND_DIMS", "FULLY_CONNECTED", "GELU", "HARD_SWISH", "LEAKY_RELU", "LOG", "LOGISTIC", "MAXIMUM",
    "MAX_POOL_2D", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NEG", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_0_TO_1", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "RSQRT", "SLICE", "SOFTMAX", "SPLIT", "SPLIT_V", "SQUARED_DIFFERENCE",
    "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TILE", "TRANSPOSE", "TRANSPOSE_CONV",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "UNPACK",
})
_U85_OPS = _U55_OPS | frozenset({
    "ASSIGN_VARIABLE", "CAST", "DIV", "EQUAL", "GATHER", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL",
    "LOGICAL_AND", "LOGICAL_NOT", "LOGICAL_OR", "NOT_EQUAL", "READ_VARIABLE", "REDUCE_ALL", "REDUCE_ANY",
    "SCATTER_ND", "SELECT", "SELECT_V2",
})
# The TFLite operators each Ethos-U generation runs (Vela 5.2; U65 shares U55's list).
ETHOS_U_OPS = {"ethos-u55": _U55_OPS, "ethos-u65": _U55_OPS, "ethos-u85": _U85_OPS}
_NAMES = {"ethos-u55": "Ethos-U55", "ethos-u65": "Ethos-U65", "ethos-u85": "Ethos-U85"}
_RESIZE_OPS = ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")


def ethos_u_generation(accelerator: str) -> str:
    """``"ethos-u55"``, ``"ethos-u65"`` or ``"ethos-u85"`` of a Vela accelerator name such as ``"ethos-u55-128"``.

    Raises:
        ValueError: a name of no Ethos-U generation.
    """
    generation = accelerator.rsplit("-", 1)[0]
    if generation not in ETHOS_U_OPS:
        raise ValueError(f"Expected an Ethos-U accelerator name such as 'ethos-u55-128'. "
                         f"Received: accelerator={accelerator!r}")
    return generation


def _hw(tensor) -> tuple | None:
    shape = tensor.shape if tensor is not None else ()
    return (shape[1], shape[2]) if len(shape) == 4 else None


def _scale(ifm: int, ofm: int, align_corners: bool) -> Fraction:
    # Vela: with align_corners the scale is (OFM - 1) / (IFM - 1), else OFM / IFM.
    if align_corners and ifm > 1 and ofm > 1:
        return Fraction(ofm - 1, ifm - 1)
    return Fraction(ofm, ifm)


def _text(scale: Fraction) -> str:
    return str(scale.numerator) if scale.denominator == 1 else f"{float(scale):g}"


def _resize_rule(op, generation: str) -> str | None:
    options = op.options
    align = bool(options.AlignCorners()) if options is not None else False
    half_pixel = bool(options.HalfPixelCenters()) if options is not None else False
    name, where = op.name, _NAMES[generation]
    if align and half_pixel:
        return f"{name} with align_corners and half_pixel_centers both set (Vela: they are mutually exclusive)"
    ifm, ofm = _hw(op.inputs[0]), _hw(op.outputs[0])
    if ifm is None or ofm is None:
        return f"{name} of a tensor that is not 4-D (Vela resizes NHWC feature maps only)"
    size = f"{ifm[0]}x{ifm[1]} -> {ofm[0]}x{ofm[1]}"
    sh, sw = (_scale(i, o, align) for i, o in zip(ifm, ofm))
    # A 1x1 map (a broadcast, e.g. after global pooling) or an unchanged size runs on every generation.
    if ifm == (1, 1) or ifm == ofm:
        return None
    if generation == "ethos-u85":
        limit = 2048 if align else 1024
        if max(sh, sw) > limit:
            return f"{name} {size}: scale factor {_text(max(sh, sw))} above Vela's maximum of {limit} on {where}"
        if name == "RESIZE_BILINEAR":
            # Vela checks the width first.
            for dim, s in (("width", sw), ("height", sh)):
                if s.denominator != 1 or s.numerator & (s.numerator - 1):
                    return (f"{name} {size}: {dim} scale factor {_text(s)} on {where}, where "
                            f"Vela runs bilinear resizes by integer powers of two only ('{dim} scale-factor must "
                            f"be an integer power of two'); it runs on the CPU")
        return None
    if sh != sw and not ((ofm[0] == 1 and sh == 1) or (ofm[1] == 1 and sw == 1)):
        return (f"{name} {size}: different height and width scale factors ({_text(sh)}, {_text(sw)}); Vela on "
                f"{where} takes equal factors only ('HW scale-factor is not equal'); it runs on the CPU")
    scale = sw if ofm[1] != 1 else sh
    allowed = (2,) if name == "RESIZE_BILINEAR" and half_pixel else (2, 4, 8)
    if scale not in allowed:
        kind = ("a half-pixel bilinear resize (Keras' and tf.image.resize's) by 2 only"
                if allowed == (2,) else "factors 2, 4 or 8 only")
        return (f"{name} {size}: scale factor {_text(scale)} on {where}, where Vela takes {kind} ('operation has "
                f"unsupported scale-factor={float(scale):g}'); it runs on the CPU")
    return None


def _transpose_conv_rule(op, generation: str) -> str | None:
    if generation == "ethos-u85" or op.options is None:
        return None
    sw, sh = op.options.StrideW(), op.options.StrideH()
    if (sw, sh) in ((1, 1), (2, 2)):
        return None
    # Input 2 is the feature map (0: output shape, 1: weights of shape (O, kH, kW, I)).
    ifm = _hw(op.inputs[2]) if len(op.inputs) > 2 else None
    kernel = op.inputs[1].shape[1:3] if len(op.inputs) > 1 and len(op.inputs[1].shape) == 4 else None
    if ifm and kernel and ((sw, sh) == (2, 1) and ifm[0] == kernel[0] == 1
                           or (sw, sh) == (1, 2) and ifm[1] == kernel[1] == 1):
        return None
    return (f"TRANSPOSE_CONV stride {sw}x{sh} (WxH) on {_NAMES[generation]}, where Vela takes 1x1 or 2x2 only "
            f"('stride out of range: ({sw},{sh})'); it runs on the CPU")


def ethos_u_findings(operators, accelerator: str) -> list:
    """``[(operator, message)]`` for each operator Vela 5.2 would leave to the CPU of ``accelerator``, by the rules
    of the module docstring.

    Args:
        operators: `kerasseg.runtimes.flatbuffer.Operator` of one subgraph, in execution order.
        accelerator: a Vela accelerator name (``"ethos-u55-128"``, ``"ethos-u85-256"``...).
    """
    generation = ethos_u_generation(accelerator)
    supported, where = ETHOS_U_OPS[generation], _NAMES[generation]
    found = []
    for op in operators:
        if op.custom or op.name not in supported:
            found.append((op, f"{op.name} is not supported on {where} (Vela {VELA_VERSION}: 'Unsupported opType'); "
                              f"it runs on the CPU"))
        elif op.name in _RESIZE_OPS:
            reason = _resize_rule(op, generation)
            if reason:
                found.append((op, reason))
        elif op.name == "TRANSPOSE_CONV":
            reason = _transpose_conv_rule(op, generation)
            if reason:
                found.append((op, reason))
    return found
