"""Which layers int8 quantisation hurts, and int8 exports that keep those layers in float.

The per-layer report runs TFLite's ``tf.lite.experimental.QuantizationDebugger`` on the converter of an int8 export
(`kerasseg.export.tflite.tflite_converter`, so the debugger quantises exactly what `to_tflite` would). The debugger
inserts a NumericVerify operator after every quantised operator: it runs the float kernel on the same dequantised
input as the int8 kernel and records the difference. Each layer's figure is therefore the error its own
quantisation introduces, not the error accumulated upstream, which is what is needed to decide which layers to keep
in float. LiteRT's newer quantizer (``ai-edge-quantizer``) is not a pinned dependency and quantises LiteRT models
with recipes of its own rather than the converter path every other kerasseg export takes, so the debugger serves
better here.

Layers are ranked by ``rmse/scale``: the root-mean-square error in units of the layer's output quantisation step.
Rounding alone gives 1/sqrt(12) = 0.289 whatever the layer's magnitude, so layers are comparable, and a layer well
above that floor loses more than rounding: clipped calibration ranges, coarse per-tensor weights, a requantised
concatenation. The debugger quantises to int8 only (its ``mlir_quantize`` call has no 16-bit activation type), so
the report covers ``mode="int8"``.

`quantize_with_float_layers` uses the same debugger's ``denylisted_nodes`` / ``denylisted_ops`` to build an int8
model with some layers left in float (``to_tflite(..., float_layers=2)`` keeps the two worst). Such a model carries
QUANTIZE / DEQUANTIZE pairs around its float layers and float input and output (the debugger's quantiser exposes no
input / output type): it is no longer fully integer, the sidecar says so, and the ``npu`` target refuses it.

Example::

    report = quant_report(model, calibration_images, num_calibration_samples=32)
    print(report.format(top=10))
    to_tflite(model, "model_int8_fb2.tflite", "int8", representative_data=calibration_images, float_layers=2)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import re
import warnings

import numpy as np

from kerasseg.export.converter import tflite_converter
from kerasseg.runtimes.flatbuffer import tflite_ops
from kerasseg.saving import atomic_path

__all__ = ["RANK_METRIC", "ROUNDING_FLOOR", "LayerError", "QuantReport", "quant_report", "report_from_converter",
           "quantize_with_float_layers", "layer_tensors", "exported_layer"]

RANK_METRIC = "rmse/scale"
# The rms error of uniform rounding, in quantisation steps: 1/sqrt(12).
ROUNDING_FLOOR = 1.0 / math.sqrt(12.0)


@dataclasses.dataclass
class LayerError:
    """The error one quantised operator introduces (TFLite QuantizationDebugger layer statistics).

    Attributes:
        tensor: the TFLite output tensor name (what ``denylisted_nodes`` takes).
        layers: the Keras layers whose computation this operator carries (fused operators carry several).
        op: the TFLite operator, e.g. ``"CONV_2D"``.
        rmse_per_scale: root-mean-square error in output quantisation steps (the ranking figure).
        rmse: root-mean-square error.
        max_abs_error: largest absolute error.
        mean_error: mean error (a bias).
        scale: the output quantisation step.
        num_elements: output elements per image.
    """

    tensor: str
    layers: list
    op: str
    rmse_per_scale: float
    rmse: float
    max_abs_error: float
    mean_error: float
    scale: float
    num_elements: int

    def to_dict(self) -> dict:
        """JSON-ready copy of the fields."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class QuantReport:
    """The ranked per-layer report of an int8 export, worst layer first.

    Attributes:
        model_name: the Keras model's name.
        mode: ``"int8"``.
        per_channel: whether weights were quantised per channel.
        num_samples: calibration images (also the images the errors are averaged over).
        layers: `LayerError` per quantised operator, ranked by ``rmse_per_scale``, worst first.
    """

    model_name: str
    mode: str
    per_channel: bool
    num_samples: int
    layers: list

    def worst(self, n: int) -> list:
        """The tensor names of the ``n`` worst layers (``n`` from 0 to the number of layers)."""
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or not 0 <= n <= len(self.layers):
            raise ValueError(f"Expected a number of layers from 0 to {len(self.layers)} (the quantised operators of "
                             f"model {self.model_name!r}). Received: float_layers={n!r}")
        return [layer.tensor for layer in self.layers[:int(n)]]

    def to_dict(self) -> dict:
        return {"model_name": self.model_name, "mode": self.mode, "per_channel": self.per_channel,
                "num_samples": self.num_samples, "rank_metric": RANK_METRIC, "rounding_floor": ROUNDING_FLOOR,
                "layers": [layer.to_dict() for layer in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def format(self, top: int | None = 20) -> str:
        """The ranking as a plain-text table (the ``top`` worst layers; all with ``None``)."""
        shown = self.layers if top is None else self.layers[:top]
        header = ("rank", "rmse/scale", "rmse", "max |err|", "op", "Keras layers", "tensor")
        rows = [(str(i + 1), f"{e.rmse_per_scale:.3f}", f"{e.rmse:.4g}", f"{e.max_abs_error:.4g}", e.op,
                 ",".join(e.layers) or "-", e.tensor if len(e.tensor) <= 60 else e.tensor[:57] + "...")
                for i, e in enumerate(shown)]
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
        line = lambda cells: " | ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        out = [f"{self.model_name} {self.mode} ({'per-channel' if self.per_channel else 'per-tensor'} weights): "
               f"{len(self.layers)} quantised operators, errors over {self.num_samples} calibration images, "
               f"ranked by {RANK_METRIC} (rounding alone: {ROUNDING_FLOOR:.3f})",
               line(header), "-+-".join("-" * w for w in widths)]
        out += [line(r) for r in rows]
        if top is not None and len(self.layers) > top:
            out.append(f"... {len(self.layers) - top} more")
        return "\n".join(out)

    def write(self, path, *, top: int | None = None) -> tuple[str, str]:
        """Writes the report as JSON to ``path`` and its table to ``path`` with ``.txt``, each atomically."""
        path = os.fspath(path)
        if not path.endswith(".json"):
            raise ValueError(f"Expected a report path ending in '.json'. Received: path={path!r}")
        text_path = path[:-5] + ".txt"
        with atomic_path(path, suffix=".json") as tmp_json, atomic_path(text_path, suffix=".txt") as tmp_text:
            with open(tmp_json, "w", encoding="utf-8") as f:
                f.write(self.to_json())
            with open(tmp_text, "w", encoding="utf-8") as f:
                f.write(self.format(top=top) + "\n")
        return path, text_path


_SCOPE_SUFFIX = re.compile(r"_\d+$")
# The converter names the traced function's output tensor this way instead of after the layer computing it.
_OUTPUT_TENSOR = "Identity"


def _keras_layers(tensor: str, layer_names: set) -> list:
    """Keras layers named in a TFLite tensor name such as ``model_1/conv_1/Relu;model_1/bn_1/batchnorm/mul_1``."""
    found = []
    for part in tensor.split(";"):
        for component in part.split("/"):
            # Tracing a Keras 3 model scopes each layer as its name plus "_<call count>".
            for name in (component, _SCOPE_SUFFIX.sub("", component)):
                if name in layer_names and name not in found:
                    found.append(name)
                    break
    return found


def _replayable(converter, num_samples: int) -> list:
    """Draws the converter's representative dataset once and makes it replayable for calibration and debugging."""
    samples = []
    for sample in converter.representative_dataset():
        samples.append(sample)
        if len(samples) >= num_samples:
            break
    converter.representative_dataset = lambda: iter(samples)
    return samples


@contextlib.contextmanager
def _quiet():
    # The debugger runs tf.lite.Interpreter, which warns of its deprecation each time, and its converter call asks
    # for TF1 input statistics; neither concerns the user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        yield


def _debugger(converter, samples, debug_samples=None):
    import tensorflow as tf

    debug_samples = samples if debug_samples is None else debug_samples
    with _quiet():
        return tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                         debug_dataset=lambda: iter(debug_samples))


def _statistics(debugger, *, model_name: str, layer_names, num_samples: int, per_channel: bool,
                output_layer: str | None = None) -> QuantReport:
    with _quiet():
        debugger.run()
    # layer_statistics_dump is the debugger's public view that pairs each statistic with its operator, tensor name
    # and quantisation step.
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    names = set(layer_names)
    layers = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        scale = float(row["scale"])
        rmse = math.sqrt(max(0.0, float(row["mean_squared_error"])))
        found = _keras_layers(row["tensor_name"], names)
        if not found and output_layer is not None and row["tensor_name"] == _OUTPUT_TENSOR:
            found = [output_layer]
        layers.append(LayerError(
            tensor=row["tensor_name"], layers=found, op=row["op_name"],
            rmse_per_scale=rmse / scale if scale > 0 else float("inf"), rmse=rmse,
            max_abs_error=float(row["max_abs_error"]), mean_error=float(row["mean_error"]), scale=scale,
            num_elements=int(float(row["num_elements"]))))
    layers.sort(key=lambda e: -e.rmse_per_scale)
    return QuantReport(model_name, "int8", per_channel, num_samples, layers)


def report_from_converter(converter, *, model_name: str, layer_names=(), output_layer: str | None = None,
                          num_samples: int = 100) -> QuantReport:
    """The per-layer report of a configured int8 converter (`kerasseg.export.tflite.tflite_converter`).

    Args:
        converter: an int8 ``tf.lite.TFLiteConverter`` with a representative dataset (drawn here, once).
        model_name: for the report.
        layer_names: the Keras model's layer names, to attribute operators to layers.
        output_layer: the Keras layer whose output is the exported output, if any.
        num_samples: calibration images drawn.
    """
    samples = _replayable(converter, num_samples)
    per_channel = not converter._experimental_disable_per_channel  # set by tflite_converter; no public getter
    return _statistics(_debugger(converter, samples), model_name=model_name, layer_names=layer_names,
                       num_samples=len(samples), per_channel=per_channel, output_layer=output_layer)


def quant_report(model, representative_data, *, num_calibration_samples: int = 100, per_channel: bool = True,
                 output: str = "logits", io_dtype: str | None = None, host_upsample: bool = False,
                 verbose: bool = False) -> QuantReport:
    """The per-layer quantisation report of ``model``'s int8 export.

    Args:
        model: a Keras model with one static-shaped input and one logits output.
        representative_data: calibration images, as for `kerasseg.export.to_tflite`.
        num_calibration_samples: calibration images; the errors are averaged over the same images.
        per_channel, output, io_dtype, host_upsample: the export's settings (see `kerasseg.export.to_tflite`).
        verbose: calibration progress to stderr.

    Returns:
        A `QuantReport`, worst layer first.

    Raises:
        ValueError: bad arguments or missing calibration data.
    """

    converter = tflite_converter(model, "int8", representative_data=representative_data,
                                 num_calibration_samples=num_calibration_samples, output=output, io_dtype=io_dtype,
                                 host_upsample=host_upsample, per_channel=per_channel, verbose=verbose)
    return report_from_converter(converter, model_name=model.name, layer_names=[layer.name for layer in model.layers],
                                 output_layer=exported_layer(model, output, host_upsample),
                                 num_samples=int(num_calibration_samples))


def exported_layer(model, output: str = "logits", host_upsample: bool = False) -> str | None:
    """The Keras layer whose output an export's output tensor is: the model's last layer for a plain logits head."""
    return model.layers[-1].name if output == "logits" and not host_upsample else None


def layer_tensors(report: QuantReport, names) -> list:
    """The TFLite tensor names of ``names``: Keras layer names (all their operators) or tensor names of the report.

    Raises:
        ValueError: a name that is neither, with the known Keras layers listed.
    """
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"Expected float_layers to be a number of worst layers or a list of layer names. "
                         f"Received: float_layers={names!r}")
    tensors, unknown = [], []
    for name in names:
        found = [e.tensor for e in report.layers if e.tensor == name or name in e.layers]
        if not found:
            unknown.append(name)
        tensors += [t for t in found if t not in tensors]
    if unknown:
        known = sorted({layer for e in report.layers for layer in e.layers})
        raise ValueError(f"Expected float_layers to name quantised layers of model {report.model_name!r} (Keras layer "
                         f"names, e.g. {known[:8]}, or TFLite tensor names from its quant_report). "
                         f"Received: unknown {unknown}")
    return tensors


def quantize_with_float_layers(converter, float_layers=None, float_ops=None, *, model_name: str = "model",
                               layer_names=(), output_layer: str | None = None, num_samples: int = 100) -> bytes:
    """An int8 flatbuffer with some layers kept in float, from a configured int8 converter.

    Args:
        converter: from `kerasseg.export.tflite.tflite_converter` (mode ``"int8"``).
        float_layers: ``None``, a number ``N`` (the ``N`` worst layers of the per-layer report), or a list of Keras
            layer names / TFLite tensor names.
        float_ops: ``None`` or TFLite operator names kept in float wherever they occur, e.g. ``["RESIZE_BILINEAR"]``.
        model_name, layer_names, output_layer: the Keras model's name, layer names and exported layer
            (`exported_layer`), to resolve Keras layer names.
        num_samples: calibration images drawn from the converter's representative dataset.

    Returns:
        The flatbuffer bytes (float input and output, float tensors around the kept layers).

    Raises:
        ValueError: an unknown layer or operator name, or ``N`` outside 0..number of quantised layers.
    """
    import tensorflow as tf


    if float_ops is not None and (isinstance(float_ops, str) or not all(isinstance(o, str) for o in float_ops)):
        raise ValueError(f"Expected float_ops to be a list of TFLite operator names. Received: "
                         f"float_ops={float_ops!r}")
    ranked = isinstance(float_layers, (int, np.integer)) and not isinstance(float_layers, bool)
    samples = _replayable(converter, num_samples)
    per_channel = not converter._experimental_disable_per_channel  # set by tflite_converter; no public getter
    # The debugger calibrates on every sample; named layers only need one debug run to list the operators.
    debugger = _debugger(converter, samples, debug_samples=samples if ranked else samples[:1])
    nodes = ops = None
    if float_layers is not None:
        report = _statistics(debugger, model_name=model_name, layer_names=layer_names, num_samples=len(samples),
                             per_channel=per_channel, output_layer=output_layer)
        if ranked:
            nodes = report.worst(int(float_layers))
        else:
            nodes = layer_tensors(report, float_layers)
    if float_ops is not None:
        present = set(tflite_ops(debugger.get_debug_quantized_model())) - {"NumericVerify"}
        unknown = [o for o in float_ops if o not in present]
        if unknown:
            raise ValueError(f"Expected float_ops to name operators of model {model_name!r} ({sorted(present)}). "
                             f"Received: unknown {unknown}")
        ops = list(float_ops)
    with _quiet():
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes, denylisted_ops=ops)
        return debugger.get_nondebug_quantized_model()
