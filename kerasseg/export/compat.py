"""Edge-compatibility report of a ``.tflite`` file: what a car's CPU, GPU or NPU will accept, asked of the real tools.

The report lists the operators with their counts, the non-builtin (Flex / custom) operators, the floating-point
tensors, the tensors with a dynamic dimension, and the verdict of the target's real toolchain. A target selects which
rules must pass:

``cpu``
    builtin operators only (the car's runtime has no Flex delegate) and static shapes.
``gpu``
    the ``cpu`` rules plus a GPU-only compilation on LiteRT's own GPU accelerator (`kerasseg.export.gpu`): every
    operator the delegate leaves to the CPU is a failure, with the delegate's reason.
``npu``, or an Ethos-U configuration by Vela's name (``"ethos-u55-128"``, ``"ethos-u65-256"``, ``"ethos-u85-256"``,
... see `kerasseg.export.vela.ETHOS_U_TARGETS`)
    the ``cpu`` rules plus a fully integer graph (no float tensor at all, integer model inputs and outputs), and Arm
    Vela's compilation for that NPU (``"npu"``: `DEFAULT_NPU`): every operator Vela leaves to the CPU is a failure,
    with Vela's reason, and so is SRAM use above ``sram_budget``.

The hand-written rules are a fast pre-check only: with ``toolchain=False`` no tool runs and they decide (the ``gpu``
rules for ``gpu``; the ``integer`` and ``ethos-u`` rules for the NPUs); with the toolchain (the default) they are
listed as context and the real tools decide. ``tests/export/test_precheck_vs_tools.py`` holds them to the verdicts of
LiteRT 2.3's GPU accelerator and Vela 5.2 on tiny graphs, in both directions: no rule passes what the tool leaves to
the CPU, none rejects what it accelerates.

``gpu``
    the GPU delegate's rules (``gpu_compatibility.cc`` and the tensor-type filter of its model builder, re-stated
    because ``tf.lite.experimental.Analyzer(gpu_compatibility=True)`` of the pinned wheels reports every model as
    compatible), and the one operator *version* limit that segmentation graphs meet: TRANSPOSE_CONV with a fused
    activation is version 4, and the accelerator takes version 3 at most. LiteRT 2.3's accelerator runs ARG_MAX,
    CAST from int32 to uint8 (the label heads) and dynamic-range models (it dequantises their int8 weights), so the
    rules pass them. Other operators' version limits are not in the rules: the flatbuffer reader does not expose
    operator versions, and only the accelerator knows its per-operator maximum.
``ethos-u``
    Vela 5.2's limits per Ethos-U generation (`kerasseg.export.ethos_u_rules`: operators per generation, resize scale
    factors, transposed-convolution strides); what they cannot know (weight sums, tensor sizes beyond the NPU's
    ranges, SRAM) is listed there.

Example::

    report = check("erfnet_int8.tflite", target="ethos-u55-128")
    print(report.format())
    assert report.ok, report.failures
"""

from __future__ import annotations

import dataclasses
import json
import os

from kerasseg.errors import EdgeCompatibilityError
from kerasseg.export.ethos_u_rules import VELA_VERSION, ethos_u_findings
from kerasseg.export.options import check_choice
from kerasseg.export.vela import ETHOS_U_TARGETS
from kerasseg.runtimes.flatbuffer import FLOAT_TYPES, enum_names, model_bytes, read_model, schema

__all__ = ["TARGETS", "RULES", "TARGET_RULES", "PRECHECK_RULES", "TOOLCHAIN_RULES", "DEFAULT_NPU", "GPU_OPS",
           "Finding", "CompatibilityReport", "check", "EdgeCompatibilityError"]

TARGETS = ("cpu", "gpu", "npu") + ETHOS_U_TARGETS
# The Ethos-U configuration that target "npu" compiles for.
DEFAULT_NPU = "ethos-u85-256"

# What each rule family means, for the report.
RULES = {
    "builtin": "builtin TFLite operators only (no Flex / custom operators)",
    "static": "static tensor shapes",
    "integer": "fully integer graph (no float tensors, integer input and output)",
    "gpu": "TFLite GPU delegate rules (operators, parameters, tensor types), a hand-written pre-check",
    "ethos-u": f"Ethos-U rules of Vela {VELA_VERSION} (operators, resize factors, transposed-conv strides), a "
               f"hand-written pre-check",
    "litert-gpu": "GPU-only compilation on LiteRT's GPU accelerator",
    "vela": "every operator on the Ethos-U NPU within the SRAM budget (Arm Vela)",
}
# The rules each target requires when the real tools run (TARGET_RULES) and when only the pre-check does.
TARGET_RULES = {"cpu": ("builtin", "static"), "gpu": ("builtin", "static", "litert-gpu"),
                **{t: ("builtin", "static", "integer", "vela") for t in ("npu",) + ETHOS_U_TARGETS}}
PRECHECK_RULES = {"cpu": ("builtin", "static"), "gpu": ("builtin", "static", "gpu"),
                  **{t: ("builtin", "static", "integer", "ethos-u") for t in ("npu",) + ETHOS_U_TARGETS}}
TOOLCHAIN_RULES = ("litert-gpu", "vela")

# The operators the GPU delegate's compatibility checker accepts (custom ones aside), and ARG_MAX, which LiteRT 2.3's
# GPU accelerator runs.
GPU_OPS = frozenset({
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ATAN2", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CAST", "CEIL", "CONCATENATION",
    "CONV_2D", "COS", "CUMSUM", "DENSIFY", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV",
    "DYNAMIC_UPDATE_SLICE", "ELU", "EMBEDDING_LOOKUP", "EQUAL", "EXP", "FLOOR", "FLOOR_DIV", "FLOOR_MOD",
    "FULLY_CONNECTED", "GATHER", "GELU", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "LEAKY_RELU", "LESS",
    "LESS_EQUAL", "LOG", "LOGICAL_AND", "LOGISTIC", "LSTM", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM",
    "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL", "ONE_HOT", "PACK", "PAD", "PADV2", "POW", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SELECT", "SELECT_V2", "SIGN", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH",
    "SPLIT", "SPLIT_V", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "STABLEHLO_CLAMP", "STRIDED_SLICE", "SUB", "SUM",
    "TANH", "TILE", "TRANSPOSE", "TRANSPOSE_CONV",
})
# Custom operators the delegate implements itself.
_GPU_CUSTOM_OPS = frozenset({"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D", "Resampler"})

_LOGICAL_OPS = frozenset({"EQUAL", "NOT_EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "LOGICAL_AND"})
_GPU_TENSOR_TYPES = ("FLOAT32", "FLOAT16", "INT8", "UINT8")
# The highest TRANSPOSE_CONV version LiteRT's GPU accelerator takes; a fused activation makes it version 4.
_GPU_TRANSPOSE_CONV_MAX_VERSION = 3


@dataclasses.dataclass(frozen=True)
class Finding:
    """One broken rule.

    Attributes:
        rule: the rule family, a key of `RULES`.
        message: what is wrong, and where possible what to do instead.
        op: the operator name, when the finding is about an operator.
        op_index: its position in the main subgraph's execution order.
        tensor: the tensor name, when the finding is about a tensor.
    """

    rule: str
    message: str
    op: str | None = None
    op_index: int | None = None
    tensor: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CompatibilityReport:
    """The edge-compatibility report of one ``.tflite`` model (see the module docstring).

    Attributes:
        source: the file path, or ``"<bytes>"``.
        target: ``"cpu"``, ``"gpu"`` or ``"npu"``.
        ops: operator counts over all subgraphs.
        custom_ops: sorted names of the Flex / custom operators.
        float_tensors: names of the floating-point tensors (constants included).
        dynamic_tensors: names of the tensors with a dynamic (-1) dimension.
        inputs, outputs: ``{"name", "dtype", "shape", "quantization"}`` of the model's inputs and outputs.
        findings: every broken rule, whatever the target.
        size_bytes: size of the flatbuffer.
        toolchain: whether the real tool of the target ran (see the module docstring).
        gpu: the `kerasseg.export.gpu.GpuReport` of target ``gpu``, else ``None``.
        vela: the `kerasseg.export.vela.VelaReport` of an NPU target, else ``None``.
    """

    source: str
    target: str
    ops: dict
    custom_ops: list
    float_tensors: list
    dynamic_tensors: list
    inputs: list
    outputs: list
    findings: list
    size_bytes: int
    toolchain: bool = False
    gpu: object = None
    vela: object = None

    @property
    def required_rules(self) -> tuple:
        return (TARGET_RULES if self.toolchain else PRECHECK_RULES)[self.target]

    @property
    def failures(self) -> list:
        """The findings that break a rule the target requires."""
        return [f for f in self.findings if f.rule in self.required_rules]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def is_integer(self) -> bool:
        return not any(f.rule == "integer" for f in self.findings)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(gpu=self.gpu.to_dict() if self.gpu is not None else None,
                   vela=self.vela.to_dict() if self.vela is not None else None)
        out.update(ok=self.ok, required_rules=list(self.required_rules),
                   failures=[f.to_dict() for f in self.failures])
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """One line: the verdict and the first failures."""
        if self.ok:
            return f"{self.source}: compatible with target {self.target!r}"
        shown = "; ".join(_describe(f) for f in _grouped(self.failures)[:4])
        more = len(_grouped(self.failures)) - 4
        return (f"{self.source}: not compatible with target {self.target!r}: {shown}"
                + (f"; and {more} more" if more > 0 else ""))

    def format(self) -> str:
        """The full human-readable report."""
        lines = [f"model      {self.source} ({self.size_bytes / 2 ** 20:.2f} MiB)"]
        for kind, details in (("input", self.inputs), ("output", self.outputs)):
            for d in details:
                q = d["quantization"]
                quant = f", scale {q[0]:.6g} zero point {q[1]}" if q else ""
                lines.append(f"{kind:<10} {d['name']} {d['dtype']} {d['shape']}{quant}")
        total = sum(self.ops.values())
        lines.append(f"operators  {total} in {len(self.ops)} kinds: "
                     + ", ".join(f"{name} ×{n}" for name, n in sorted(self.ops.items(), key=lambda kv: -kv[1])))
        lines.append(f"flex/custom {', '.join(self.custom_ops) if self.custom_ops else 'none'}")
        lines.append(f"float tensors {len(self.float_tensors)}"
                     + (f" (e.g. {', '.join(self.float_tensors[:3])})" if self.float_tensors else ""))
        lines.append(f"dynamic shapes {', '.join(self.dynamic_tensors[:5]) if self.dynamic_tensors else 'none'}")
        lines.append("")
        ran = {"litert-gpu": self.gpu is not None, "vela": self.vela is not None,
               "ethos-u": self.target not in ("cpu", "gpu")}
        for rule, meaning in RULES.items():
            if not ran.get(rule, True) and rule not in self.required_rules:
                continue
            broken = [f for f in self.findings if f.rule == rule]
            required = rule in self.required_rules
            verdict = "ok" if not broken else ("FAIL" if required else "not met")
            if not ran.get(rule, True):
                verdict = "not run"
            lines.append(f"[{verdict:^7}] {meaning}{'' if required else ' (not required for ' + self.target + ')'}")
            # Findings of rules the target does not need are context only: a few examples suffice.
            limit = 12 if required else 3
            for f in _grouped(broken)[:limit]:
                lines.append(f"          - {_describe(f)}")
            if len(_grouped(broken)) > limit:
                lines.append(f"          - ... {len(_grouped(broken)) - limit} more")
        for tool in (self.gpu, self.vela):
            if tool is not None:
                lines.extend(["", tool.format()])
        lines.append("")
        lines.append(f"target {self.target}: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def _grouped(findings) -> list:
    """Findings with the same rule, operator and message merged (the first occurrence keeps its index)."""
    seen: dict = {}
    for f in findings:
        key = (f.rule, f.op, f.message)
        if key in seen:
            seen[key][1] += 1
        else:
            seen[key] = [f, 1]
    return [(f, n) for f, n in seen.values()]


def _describe(grouped) -> str:
    f, n = grouped
    index = f"op #{f.op_index}" if f.op_index is not None else "×1"
    if f.op_index is None and n > 1:
        index = f"×{n}"
    elif n > 1:
        index += f", and {n - 1} more"
    where = f"{f.op} ({index}): " if f.op else ""
    if not f.op and n > 1:
        return f"{f.message} (and {n - 1} more)"
    return where + f.message


# --------------------------------------------------------------------------------------------------------------
# GPU delegate rules
# --------------------------------------------------------------------------------------------------------------

def _runtime(tensors) -> list:
    return [t for t in tensors if t is not None and not t.is_const]


def _activation_finding(op, schema) -> str | None:
    options = op.options
    if options is None or not hasattr(options, "FusedActivationFunction"):
        return None
    if options.FusedActivationFunction() == schema.ActivationFunctionType.SIGN_BIT:
        return "fused activation SIGN_BIT is not supported"
    return None


def _broadcastable(a: tuple, b: tuple) -> bool:
    for x, y in zip(reversed(a), reversed(b)):
        if x != y and x != 1 and y != 1:
            return False
    return True


def _gpu_op_rule(op, schema) -> str | None:
    """Why the delegate rejects this operator's parameters, or None."""
    name, options = op.name, op.options
    runtime_inputs = _runtime(op.inputs)
    activation = _activation_finding(op, schema)
    if activation:
        return activation
    if name == "CAST":
        src, dst = op.inputs[0].type, op.outputs[0].type
        # int32 -> uint8 is the uint8 label head's cast, which LiteRT 2.3's accelerator runs.
        allowed = ((src == "BOOL" and dst in ("FLOAT16", "FLOAT32"))
                   or (src in ("FLOAT16", "FLOAT32") and dst == "BOOL")
                   or (src in ("FLOAT32", "INT32") and dst in ("FLOAT32", "INT32"))
                   or (src == "INT32" and dst == "UINT8"))
        if not allowed:
            return (f"CAST from {src} to {dst} is not supported (the delegate casts between bool and float, between "
                    f"float32 and int32, and from int32 to uint8, only)")
        return None
    if name == "TRANSPOSE_CONV" and options is not None \
            and options.FusedActivationFunction() != schema.ActivationFunctionType.NONE:
        activation = enum_names(schema.ActivationFunctionType).get(options.FusedActivationFunction(), "?")
        return (f"TRANSPOSE_CONV with a fused {activation} is operator version 4; LiteRT's GPU accelerator takes "
                f"version {_GPU_TRANSPOSE_CONV_MAX_VERSION} at most ('Max version supported: "
                f"{_GPU_TRANSPOSE_CONV_MAX_VERSION}. Requested version 4.'); kerasseg's export keeps the activation "
                f"apart (kerasseg.export.formulations)")
    if name in ("ADD", "MUL"):
        if len(op.inputs) != 2:
            return f"{name} needs exactly two inputs, not {len(op.inputs)}"
        a, b = op.inputs[0].shape, op.inputs[1].shape
        if name == "MUL" and len(a) == len(b):
            if any(x < y for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b)):
                return (f"MUL of {list(a)} by {list(b)}: neither operand is at least as large as the other in "
                        f"every dimension")
        elif len(a) > 1 and len(b) > 1 and not _broadcastable(a, b):
            return f"{name} cannot broadcast {list(a)} with {list(b)}"
        return None
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
        if len(runtime_inputs) > 2:
            return f"{name} with {len(runtime_inputs)} run-time inputs (at most 2)"
        if name == "DEPTHWISE_CONV_2D" and options is not None:
            multiplier = options.DepthMultiplier()
            in_channels = op.inputs[0].shape[-1] if op.inputs[0].shape else 0
            if multiplier != 1 and in_channels != 1:
                return (f"depth multiplier {multiplier} on {in_channels} input channels is not supported (a "
                        f"depthwise convolution with a multiplier > 1 must have one input channel)")
        return None
    if name == "RESIZE_BILINEAR" and options is not None:
        if options.AlignCorners() and options.HalfPixelCenters():
            return "align_corners and half_pixel_centers both set"
        return None
    if name == "SOFTMAX" and options is not None and options.Beta() != 1.0:
        return f"SOFTMAX with beta {options.Beta():g} (only 1 is supported)"
    if name == "STRIDED_SLICE":
        if options is not None:
            for mask in ("EllipsisMask", "NewAxisMask", "ShrinkAxisMask"):
                if getattr(options, mask)():
                    return f"STRIDED_SLICE with a non-zero {mask[:-4].lower()} mask"
        if len(op.inputs[0].shape) not in (3, 4):
            return f"STRIDED_SLICE of a rank-{len(op.inputs[0].shape)} tensor (3 or 4 only)"
        return None
    if name == "SLICE" and len(op.inputs[0].shape) not in (3, 4):
        return f"SLICE of a rank-{len(op.inputs[0].shape)} tensor (3 or 4 only)"
    if name in ("PAD", "PADV2", "MIRROR_PAD"):
        if name == "MIRROR_PAD" and options is not None and options.Mode() != schema.MirrorPadMode.REFLECT:
            return "MIRROR_PAD in SYMMETRIC mode (REFLECT only)"
        paddings = op.inputs[1].shape if len(op.inputs) > 1 and op.inputs[1] is not None else ()
        if len(paddings) != 2 or paddings[0] not in (3, 4) or paddings[1] != 2:
            return f"{name} paddings of shape {list(paddings)} (4×2 or 3×2 only)"
        return None
    if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
        axes = op.inputs[1] if len(op.inputs) > 1 else None
        if axes is None or not axes.is_const or axes.type != "INT32":
            return f"{name} with non-constant or non-int32 axes"
        return None
    if name in ("DEPTH_TO_SPACE", "SPACE_TO_DEPTH") and options is not None and options.BlockSize() <= 1:
        return f"{name} with block size {options.BlockSize()}"
    if name == "GATHER":
        if op.inputs[0].type == "INT32":
            return "GATHER of an int32 tensor"
        if len(op.inputs) < 2 or len(op.inputs[1].shape) != 1 or op.inputs[1].type != "INT32":
            return "GATHER needs 1-D int32 indices"
        return None
    if name in ("SELECT", "SELECT_V2"):
        # CheckSelectV2GpuDelegateCompatibility (tensorflow/lite/tools/versioning/gpu_compatibility.cc): condition
        # bool / float16 / float32, both branches float16 / float32, each the output's shape or a scalar.
        cond, a, b = op.inputs[:3]
        if cond.type not in ("BOOL", "FLOAT16", "FLOAT32") or a.type not in ("FLOAT16", "FLOAT32") \
                or b.type not in ("FLOAT16", "FLOAT32"):
            return (f"{name} with {a.type} / {b.type} operands (the delegate selects between float tensors only; "
                    f"a quantised graph gives it integer ones)")
        for branch in (a, b):
            if branch.shape and branch.shape != op.outputs[0].shape and (len(branch.shape) > 1 or branch.shape[0] > 1):
                return f"{name} branch of shape {list(branch.shape)} neither the output's shape nor a scalar"
        return None
    if name == "FULLY_CONNECTED" and options is not None:
        if options.WeightsFormat() != 0:
            return "FULLY_CONNECTED with shuffled weights"
        if op.inputs[0].is_const:
            return "FULLY_CONNECTED with a constant input"
        return None
    return None


def _gpu_tensor_rule(op) -> str | None:
    """Why the delegate rejects this operator's tensors (types of run-time tensors, ranks), or None."""
    allowed_in, allowed_out = set(_GPU_TENSOR_TYPES), set(_GPU_TENSOR_TYPES)
    if op.name in _LOGICAL_OPS:
        allowed_out.add("BOOL")
    if op.name == "CAST":
        allowed_in |= {"BOOL", "INT32"}
        allowed_out |= {"INT32", "BOOL"}
    if op.name == "ARG_MAX":
        allowed_out.add("INT32")
    if op.name in ("ONE_HOT", "GATHER"):
        allowed_in.add("INT32")
    if op.name in ("SELECT", "SELECT_V2", "LOGICAL_AND"):
        allowed_in.add("BOOL")
    if op.name == "LOGICAL_AND":
        allowed_out.add("BOOL")
    for kind, tensors, allowed in (("input", op.inputs, allowed_in), ("output", op.outputs, allowed_out)):
        for t in tensors:
            if t is None:
                continue
            if len(t.shape) >= 5:
                return f"{kind} tensor {t.name!r} of rank {len(t.shape)} (at most 4)"
            if not t.is_const and t.type not in allowed:
                return f"{kind} tensor {t.name!r} of type {t.type} (run-time tensors: {', '.join(sorted(allowed))})"
    # Hybrid kernels (float activations, int8 weights: a dynamic-range model) pass: the accelerator dequantises the
    # weights.
    return None


def _gpu_findings(ops, schema) -> list:
    findings = []
    for op in ops:
        if op.custom:
            if op.name not in _GPU_CUSTOM_OPS:
                findings.append(Finding("gpu", f"custom operator {op.name!r} is not supported by the GPU delegate",
                                        op.name, op.index))
            continue
        if op.name not in GPU_OPS:
            findings.append(Finding("gpu", f"{op.name} is not supported by the GPU delegate", op.name, op.index))
            continue
        reason = _gpu_op_rule(op, schema) or _gpu_tensor_rule(op)
        if reason:
            findings.append(Finding("gpu", reason, op.name, op.index))
    return findings


# --------------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------------

def check(model, target: str = "gpu", *, toolchain: bool = True, run: bool = False,
          system_config: str | None = None, memory_mode: str | None = None,
          sram_budget: int | None = None) -> CompatibilityReport:
    """Checks a ``.tflite`` model against an edge target, asking the target's real toolchain.

    Args:
        model: path to a ``.tflite`` file, or its bytes.
        target: one of `TARGETS`: ``"cpu"``, ``"gpu"``, ``"npu"`` or an Ethos-U configuration by Vela's name (see
            the module docstring); the report lists every finding, and ``report.ok`` tells whether the target's rules
            pass.
        toolchain: ask the real tool (LiteRT's GPU accelerator, Vela); ``False`` runs the hand-written pre-check
            only.
        run: target ``gpu``: also run one input on the GPU at full float precision and compare it with the CPU
            interpreter (``report.gpu.run``; slow on the software driver: shaders compile on the first run).
        system_config, memory_mode: NPU targets: Vela's system config and memory mode (defaults per NPU family,
            `kerasseg.export.vela.DEFAULT_SYSTEM_CONFIGS`).
        sram_budget: NPU targets: SRAM available to the model, in bytes; more SRAM use is a failure.

    Returns:
        A `CompatibilityReport`.

    Raises:
        ValueError: an unknown target or a file that is not a TFLite flatbuffer.
        FileNotFoundError: a missing file.
        kerasseg.export.gpu.GpuUnavailableError: target ``gpu`` and no Vulkan adapter could be created.
    """
    target = check_choice("target", target, TARGETS)
    data = model_bytes(model)
    source = "<bytes>" if isinstance(model, (bytes, bytearray, memoryview)) else os.fspath(model)
    subgraphs = read_model(data)
    fb = schema()

    ops: dict = {}
    custom: set = set()
    floats, dynamic = [], []
    findings: list = []
    for graph in subgraphs:
        tensors, graph_ops = graph.tensors, graph.operators
        for op in graph_ops:
            ops[op.name] = ops.get(op.name, 0) + 1
            if op.custom:
                custom.add(op.name)
        for t in tensors:
            if t.type in FLOAT_TYPES:
                floats.append(t.name)
            if any(d < 0 for d in t.signature):
                dynamic.append(t.name)
    for name in sorted(custom):
        kind = "Flex (TensorFlow) operator" if name.startswith("Flex") else "custom operator"
        findings.append(Finding("builtin", f"{kind} {name!r} needs a runtime the car does not have", name))
    for name in dynamic:
        findings.append(Finding("static", f"tensor {name!r} has a dynamic shape", tensor=name))

    # Read from the flatbuffer, not an interpreter: a model with Flex operators cannot even be allocated here.
    main_ops, inputs, outputs = subgraphs[0].operators, subgraphs[0].inputs, subgraphs[0].outputs
    io = {"inputs": [], "outputs": []}
    for key, tensors in (("inputs", inputs), ("outputs", outputs)):
        for t in tensors:
            io[key].append({"name": t.name, "dtype": t.type.lower(), "shape": list(t.shape),
                            "quantization": t.quantization})

    for name in floats:
        findings.append(Finding("integer", f"float tensor {name!r}", tensor=name))
    for key in ("inputs", "outputs"):
        for d in io[key]:
            if d["dtype"].upper() in FLOAT_TYPES:
                findings.append(Finding("integer", f"model {key[:-1]} {d['name']!r} is {d['dtype']}",
                                        tensor=d["name"]))
    findings.extend(_gpu_findings(main_ops, fb))
    for graph in subgraphs[1:]:
        findings.extend(_gpu_findings(graph.operators, fb))
    if target != "cpu" and target != "gpu":
        accelerator = DEFAULT_NPU if target == "npu" else target
        for graph in subgraphs:
            findings.extend(Finding("ethos-u", message, op.name, op.index)
                            for op, message in ethos_u_findings(graph.operators, accelerator))

    report = CompatibilityReport(source=source, target=target, ops=ops, custom_ops=sorted(custom),
                                 float_tensors=floats, dynamic_tensors=dynamic, inputs=io["inputs"],
                                 outputs=io["outputs"], findings=findings, size_bytes=len(data), toolchain=toolchain)
    if toolchain:
        _ask_toolchain(report, data, run=run, system_config=system_config, memory_mode=memory_mode,
                       sram_budget=sram_budget)
    return report


def _ask_toolchain(report: CompatibilityReport, data: bytes, **options) -> None:
    """Runs the target's real tool and adds its verdict to ``report`` (findings of rule "litert-gpu" / "vela")."""
    prerequisites = [rule for rule in TARGET_RULES[report.target] if rule not in TOOLCHAIN_RULES]
    # A model the runtime cannot load (Flex operators, dynamic shapes) or a float model for an NPU: the tool would
    # only repeat the pre-check's failures.
    if report.target == "cpu" or any(f.rule in prerequisites for f in report.findings):
        return
    if report.target == "gpu":
        from kerasseg.export.gpu import gpu_compile

        report.gpu = gpu_compile(data, run=options["run"])
        report.findings.extend(Finding("litert-gpu", f"runs on the CPU: {f.reason or 'the delegate gave no reason'}",
                                       f.op) for f in report.gpu.fallbacks)
        if not report.gpu.compiled and not report.gpu.fallbacks:
            report.findings.append(Finding("litert-gpu", f"GPU-only compilation failed: {report.gpu.error}"))
        return
    from kerasseg.export.vela import vela_compile

    accelerator = DEFAULT_NPU if report.target == "npu" else report.target
    vela = report.vela = vela_compile(data, accelerator, system_config=options["system_config"],
                                      memory_mode=options["memory_mode"], sram_budget=options["sram_budget"])
    if vela.error is not None:
        report.findings.append(Finding("vela", f"Vela {vela.version} failed for {accelerator}: {vela.error}"))
    report.findings.extend(Finding("vela", f"runs on the CPU ({accelerator}): {op.reason or 'Vela gave no reason'}",
                                   op.op, tensor=op.name) for op in vela.cpu_ops)
    if vela.over_budget:
        report.findings.append(Finding("vela", f"SRAM use {vela.sram_bytes / 1024:.1f} KiB exceeds the budget of "
                                               f"{vela.sram_budget / 1024:.1f} KiB ({accelerator})"))
