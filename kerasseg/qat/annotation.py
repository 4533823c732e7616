"""tfmot annotation of the ``tf_keras`` twin, its quantize configs, and the starting ranges of the QAT model.

`annotate` marks the twin for tfmot's default 8-bit scheme. Layers that scheme does not know (``Resizing``,
kerasseg's ``MaxUnpooling2D``...) get an output-quantising ``QuantizeConfig``, so every tensor of the converted model
has a trained int8 range. `quantize_aware` chains the whole preparation (twin, folding, annotation,
``quantize_apply``, input order, range calibration) and returns a ``tf_keras`` model ready for ``fit``.

Example::

    qat_model = quantize_aware(model, representative_data=images)   # model: a trained Keras 3 kerasseg model
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np

from kerasseg.export.formulations import edge_formulation
from kerasseg.qat.twin import (fold_transposed_batchnorm, import_tf_keras, import_tfmot, inbound_layers,
                               is_tf_keras_model, layer_nodes, rebuild_tf_keras, restore_input_order)

__all__ = ["annotate", "quantize_aware", "calibrate_ranges"]


def _output_quantize_config():
    """A QuantizeConfig that leaves the layer's computation float and fake-quantises its output to 8 bits."""
    import tensorflow as tf

    tfmot = import_tfmot()
    quantizers = tfmot.quantization.keras.quantizers

    # The methods are plain Python: autograph, which converts the wrapper's call, must call them as they are (its
    # conversion cache mixes up the methods of a class defined in a function).
    plain = tf.autograph.experimental.do_not_convert

    class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """Output-only 8-bit quantisation for layers without kernels that tfmot's default scheme rejects."""

        @plain
        def get_weights_and_quantizers(self, layer):
            return []

        @plain
        def get_activations_and_quantizers(self, layer):
            return []

        # The getters above hand tfmot no weights and no activations, so it never has any to set back here.
        @plain
        def set_quantize_weights(self, layer, quantize_weights):
            pass

        @plain
        def set_quantize_activations(self, layer, quantize_activations):
            pass

        @plain
        def get_output_quantizers(self, layer):
            return [quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                      narrow_range=False)]

        def get_config(self):
            return {}

    return OutputQuantizeConfig


def _folded_by_tfmot(model, layer, tf_keras) -> bool:
    # tfmot's Conv2D / DepthwiseConv2D + BatchNormalization transform only applies to a batch norm annotated without
    # a QuantizeConfig of its own; the converter then folds the batch norm into the convolution.
    if not isinstance(layer, tf_keras.layers.BatchNormalization):
        return False
    inbound = inbound_layers(model, layer)
    return (len(inbound) == 1 and type(inbound[0]).__name__ in ("Conv2D", "DepthwiseConv2D")
            and inbound[0].get_config().get("activation") in (None, "linear"))


def annotate(model):
    """Annotates a ``tf_keras`` model for tfmot's default 8-bit scheme, with output quantisation where it has none.

    Returns:
        ``(annotated model, scope)``: pass ``scope`` (custom objects) to ``tfmot.quantization.keras.quantize_scope``
        around ``quantize_apply``, and to ``tf_keras.models.load_model`` for a saved QAT model.
    """
    tfmot = import_tfmot()
    tf_keras = import_tf_keras()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry)

    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    config_class = _output_quantize_config()
    scope = {"OutputQuantizeConfig": config_class}
    for layer in model.layers:
        scope.setdefault(type(layer).__name__, type(layer))

    def clone(layer):
        if isinstance(layer, tf_keras.layers.InputLayer):
            return layer
        if registry.supports(layer) or _folded_by_tfmot(model, layer, tf_keras):
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        if hasattr(layer, "kernel") or hasattr(layer, "depthwise_kernel"):
            # A kernel left in float would keep the converted model from being fully integer.
            raise ValueError(f"Expected layers with kernels to be supported by tfmot's default 8-bit scheme. "
                             f"Received: layer {layer.name!r} of type {type(layer).__name__}")
        return tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=config_class())

    with tfmot.quantization.keras.quantize_scope(scope):
        annotated = tf_keras.models.clone_model(model, clone_function=clone)
    return annotated, scope


def quantize_aware(model, *, model_name: str | None = None, builder_kwargs: dict | None = None, check_batch=None,
                   atol: float = 1e-4, freeze_batch_norm: bool = True, representative_data=None,
                   num_calibration_samples: int = 20):
    """A ``tf_keras`` quantization-aware copy of a trained Keras 3 kerasseg model, ready for ``compile`` / ``fit``.

    Steps: `rebuild_tf_keras` (same builder, weights copied, outputs checked), `kerasseg.export.edge_formulation`
    (the operators edge compilers accept, as for every TFLite export), `fold_transposed_batchnorm`, `annotate`
    (default 8-bit scheme, output quantisation for the layers it rejects), ``quantize_apply``. The returned model
    carries ``kerasseg_metadata`` (a copy of the trained model's) and ``qat_scope`` (the custom objects needed to
    reload it with ``tf_keras``).

    Args:
        model: a Keras 3 model built by `kerasseg.build_model` (or any registry builder, with ``model_name`` and
            ``builder_kwargs``).
        model_name: registry name, when the model does not record it.
        builder_kwargs: builder keyword arguments, when the model does not record them.
        check_batch: images the two Keras versions are compared on (a random batch by default).
        atol: tolerance of that comparison.
        freeze_batch_norm: keep the batch norms in inference mode with their trained statistics during the
            fine-tune. QAT runs a few epochs, often on small batches, whose batch statistics would move the folded
            scales away from the ones the float model (and the int8 ranges) were trained with.
        representative_data: normalised float images (as for `kerasseg.export.to_tflite`); when given, every
            activation range starts at the min / max the float model reaches on them (see `calibrate_ranges`)
            instead of tfmot's [-6, 6], which its moving averages (decay 0.999) leave only slowly.
        num_calibration_samples: images drawn from ``representative_data``.

    Returns:
        The quantization-aware ``tf_keras`` model (fake-quantised weights and activations).

    Raises:
        ValueError: the model cannot be rebuilt, its weights do not match, or one of its layers with weights is
            outside tfmot's default scheme.
    """
    if is_tf_keras_model(model):
        raise ValueError(f"Expected a Keras 3 model (the trained kerasseg model). Received: a tf_keras model "
                         f"{model.name!r}; quantize_aware rebuilds it with tf_keras itself")
    tfmot = import_tfmot()
    twin = rebuild_tf_keras(model, model_name=model_name, builder_kwargs=builder_kwargs, check_batch=check_batch,
                            atol=atol)
    if not isinstance(freeze_batch_norm, bool):
        raise ValueError(f"Expected freeze_batch_norm to be True or False. "
                         f"Received: freeze_batch_norm={freeze_batch_norm!r}")
    # The export formulations (kerasseg.export.formulations), applied before the fine-tune so that the ranges are
    # learnt on the operators the file runs.
    folded = fold_transposed_batchnorm(edge_formulation(twin, import_tf_keras()))
    if freeze_batch_norm:
        for layer in folded.layers:
            if type(layer).__name__ == "BatchNormalization":
                layer.trainable = False  # a non-trainable tf_keras batch norm also runs in inference mode
    annotated, scope = annotate(folded)
    with tfmot.quantization.keras.quantize_scope(scope), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qat = tfmot.quantization.keras.quantize_apply(annotated)
        qat, _ = restore_input_order(qat, annotated)
    if representative_data is not None:
        calibrate_ranges(qat, folded, representative_data, num_calibration_samples)
    meta = getattr(model, "kerasseg_metadata", None)
    if meta is not None:
        qat.kerasseg_metadata = dataclasses.replace(meta, extra=json.loads(json.dumps(meta.extra)))
    qat.qat_scope = scope
    return qat


def calibrate_ranges(qat_model, float_model, representative_data, num_calibration_samples: int = 20) -> int:
    """Sets the activation / output ranges of a QAT model to the min / max of the float model's layer outputs.

    Each ``quant_<name>`` wrapper quantises the output of layer ``<name>`` (after its activation), and the input
    input ``QuantizeLayer`` the input, so the float model's outputs on the calibration images give the starting
    ranges.
    Kernel ranges are set to the kernels' own (symmetric, per channel); training updates them at every step.

    Args:
        qat_model: the model from ``quantize_apply``.
        float_model: the ``tf_keras`` float model it was annotated from (same layer names).
        representative_data: normalised float images, batches or ``(images, labels)`` pairs.
        num_calibration_samples: images used.

    Returns:
        The number of range variables set.
    """
    from kerasseg.export.tflite import calibration_samples, static_input_shape

    tf_keras = import_tf_keras()
    shape = static_input_shape(float_model)
    images = np.concatenate([s[0] for s in calibration_samples(representative_data, int(num_calibration_samples),
                                                                 shape, False)])
    layers = [layer for layer in float_model.layers if not isinstance(layer, tf_keras.layers.InputLayer)]
    # The output of each layer's call in this model (a reused layer also keeps its calls in older graphs).
    probe = tf_keras.Model(float_model.inputs, [layer_nodes(float_model, layer)[0].output_tensors for layer in layers])
    lows, highs = {}, {}
    for start in range(0, len(images), 4):
        outs = probe(images[start:start + 4], training=False)
        for layer, out in zip(layers, outs):
            out = np.asarray(out)
            lows[layer.name] = min(lows.get(layer.name, 0.0), float(out.min()))
            highs[layer.name] = max(highs.get(layer.name, 0.0), float(out.max()))
    input_range = min(0.0, float(images.min())), max(0.0, float(images.max()))
    count = 0
    for layer in qat_model.layers:
        # Symmetric (per output channel) kernel ranges: tfmot only sets them at the first training step, and the
        # model would run with their initial [-6, 6] until then.
        for weight, _, quantizer_vars in getattr(layer, "_weight_vars", []):
            low, high = quantizer_vars.get("min_var"), quantizer_vars.get("max_var")
            bound = None if low is None or high is None else _kernel_bound(weight, tuple(high.shape))
            if bound is not None:
                low.assign(-bound)
                high.assign(bound)
                count += 2
        # tfmot names the input quantiser "quantize_layer" with Keras' unique-name counter ("quantize_layer_1" for
        # the second model of a process), so it is found by type.
        if type(layer).__name__ == "QuantizeLayer":
            low, high = input_range
        else:
            name = layer.name[len("quant_"):] if layer.name.startswith("quant_") else layer.name
            if name not in lows:
                continue
            low, high = lows[name], highs[name]
        for var in layer.non_trainable_weights:
            short = var.name.split("/")[-1].split(":")[0]
            if "kernel" in short or not short.endswith(("_min", "_max")):
                continue
            var.assign(low if short.endswith("_min") else high)
            count += 1
    return count


def _kernel_bound(kernel, shape):
    # As tfmot's LastValueQuantize computes them in training: per channel of the kernel's last axis, or one range.
    if kernel is None:
        return None
    k = np.abs(np.asarray(kernel))
    if shape in ((), (1,)):
        return np.full(shape, k.max(), np.float32)
    if len(shape) == 1 and shape[0] == k.shape[-1]:
        return k.reshape(-1, k.shape[-1]).max(axis=0).astype(np.float32)
    return None
