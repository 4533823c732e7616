"""Quantization-aware training (QAT) of kerasseg models with tensorflow-model-optimization, and its int8 export.

tensorflow-model-optimization (tfmot) only accepts ``tf_keras`` models, so a trained Keras 3 model is rebuilt with
``tf_keras`` by its own registry builder (every builder takes ``keras_module``), its weights are copied across layer
by layer and checked equal on a batch, transposed convolutions followed by batch norm are folded (tfmot folds
Conv2D / DepthwiseConv2D + BN itself, not Conv2DTranspose + BN), and the model is annotated with tfmot's default
8-bit scheme. Layers that scheme does not know (``Resizing``, kerasseg's ``MaxUnpooling2D``...) get an
output-quantising `QuantizeConfig`, so every tensor of the converted model has a trained int8 range. The result is a
``tf_keras`` model ready for ``fit``; `qat_to_tflite` converts it to a full-integer, builtin-only TFLite file.

This module is the only place kerasseg imports ``tf_keras`` and tfmot, and only inside functions. Importing tfmot
sets ``TF_USE_LEGACY_KERAS=1`` in the process environment, which would switch a user's later ``tf.keras`` to
``tf_keras``; `_tfmot` restores the variable right after the import.

Example::

    qat_model = quantize_aware(model)                       # model: a trained Keras 3 kerasseg model
    qat_model.compile(optimizer="adam", loss=...)
    qat_model.fit(train_data, epochs=2)
    qat_to_tflite(qat_model, "erfnet_qat_int8.tflite", metadata=model.kerasseg_metadata)
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import numpy as np

__all__ = ["quantize_aware", "rebuild_tf_keras", "fold_transposed_batchnorm", "annotate", "qat_to_tflite",
           "qat_to_tflite_bytes", "builder_kwargs_of", "fine_tune", "masked_sparse_crossentropy",
           "calibrate_ranges", "restore_input_order", "int8_scorer"]

# Builder arguments recorded by `kerasseg.build_model` that the rebuild drops: the backbone weights are already in
# the trained model and are copied from it, never loaded again.
_NOT_REBUILT = ("backbone_weights",)


def _tfmot():
    """Imports tfmot (and tf_keras), keeping ``TF_USE_LEGACY_KERAS`` as it was for the rest of the process."""
    import tensorflow as tf

    before = os.environ.get("TF_USE_LEGACY_KERAS")
    if before is None:
        # tf.keras picks its Keras on first use, from this variable: resolve it now, while it still means Keras 3,
        # so that setting it below cannot hand tf_keras to the user's later tf.keras calls.
        tf.keras.version()
    try:
        import tensorflow_model_optimization as tfmot
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot


def _tf_keras():
    _tfmot()
    import tf_keras

    return tf_keras


def _is_tf_keras_model(model) -> bool:
    return type(model).__module__.startswith("tf_keras")


def builder_kwargs_of(model) -> tuple[str, dict]:
    """The registry name and builder keyword arguments a Keras 3 model was built with.

    Read from ``model.kerasseg_metadata`` (``model_name`` and ``extra["builder_kwargs"]``, recorded by
    `kerasseg.build_model` and kept in ``.keras`` files).

    Raises:
        ValueError: the model carries no kerasseg metadata.
    """
    meta = getattr(model, "kerasseg_metadata", None)
    if meta is None:
        raise ValueError(f"Expected a model built by kerasseg.build_model (it records the registry name and builder "
                         f"arguments in model.kerasseg_metadata), or model_name= and builder_kwargs= given "
                         f"explicitly. Received: model {getattr(model, 'name', model)!r} without kerasseg_metadata")
    return meta.model_name, dict(meta.extra.get("builder_kwargs", {}))


def rebuild_tf_keras(model, *, model_name: str | None = None, builder_kwargs: dict | None = None,
                     check_batch=None, atol: float = 1e-4):
    """Builds ``model``'s architecture with ``tf_keras`` and copies its weights, checked equal on a batch.

    Args:
        model: a Keras 3 kerasseg model.
        model_name: registry name; read from ``model.kerasseg_metadata`` when omitted.
        builder_kwargs: builder keyword arguments besides ``num_classes`` and ``input_shape``; read from
            ``model.kerasseg_metadata.extra["builder_kwargs"]`` when omitted.
        check_batch: float images ``(B, H, W, C)`` both models are run on; a seeded random batch when omitted.
        atol: largest accepted difference between the two models' outputs, relative to the largest output
            magnitude when that exceeds 1.

    Returns:
        The ``tf_keras`` model, with the same layer names and weights.

    Raises:
        ValueError: a layer or weight shape that does not match, or outputs that differ by more than ``atol``.
    """
    from kerasseg.models.factory import get_model_info

    tf_keras = _tf_keras()
    if model_name is None or builder_kwargs is None:
        name, kwargs = builder_kwargs_of(model)
        model_name = model_name or name
        builder_kwargs = kwargs if builder_kwargs is None else builder_kwargs
    kwargs = {k: v for k, v in dict(builder_kwargs).items()
              if k not in ("num_classes", "input_shape", "keras_module") + _NOT_REBUILT}
    info = get_model_info(model_name)
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    num_classes = int(model.outputs[0].shape[-1])
    twin = info.builder(num_classes, input_shape=shape, keras_module=tf_keras, **kwargs)
    if twin.name != model.name:
        twin._name = model.name

    source = {layer.name: layer for layer in model.layers}
    target = {layer.name: layer for layer in twin.layers}
    if set(source) != set(target):
        raise ValueError(f"Expected the tf_keras rebuild of {model_name!r} to have the trained model's layers. "
                         f"Received: only in the trained model {sorted(set(source) - set(target))[:5]}, only in the "
                         f"rebuild {sorted(set(target) - set(source))[:5]} (builder_kwargs={kwargs})")
    for name, layer in source.items():
        weights = layer.get_weights()
        if not weights:
            continue
        expected = [w.shape for w in target[name].get_weights()]
        if [w.shape for w in weights] != expected:
            raise ValueError(f"Expected layer {name!r} to have the same weight shapes in both Keras versions. "
                             f"Received: {[w.shape for w in weights]} (Keras 3) and {expected} (tf_keras)")
        target[name].set_weights(weights)

    if check_batch is None:
        check_batch = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    check_batch = np.asarray(check_batch, np.float32)
    ref = np.asarray(model(check_batch, training=False), np.float32)
    got = np.asarray(twin(check_batch, training=False), np.float32)
    err = float(np.max(np.abs(ref - got)))
    # Relative to the outputs' magnitude: float32 sums over deep networks in another kernel order differ by a few
    # units in the last place, and a briefly trained network (batch-norm statistics still near their initial values)
    # can output logits of 1e4 and more.
    scale = float(np.max(np.abs(ref)))
    tolerance = atol * max(1.0, scale)
    if not err <= tolerance:
        raise ValueError(f"Expected the tf_keras rebuild to compute the trained model's outputs (max abs difference "
                         f"<= {atol} x max(1, max |output|) = {tolerance:.3g}). Received: a max abs difference of "
                         f"{err:.3g} for outputs up to {scale:.3g}")
    return twin


def _nodes(model, layer) -> list:
    # The calls of `layer` that belong to `model`: a layer reused in a rebuilt graph keeps its older calls too.
    return [node for i, node in enumerate(layer._inbound_nodes) if f"{layer.name}_ib-{i}" in model._network_nodes]


def _inbound_layers(model, layer) -> list:
    nodes = _nodes(model, layer)
    if len(nodes) != 1:
        return []
    inbound = nodes[0].inbound_layers
    return inbound if isinstance(inbound, list) else [inbound]


def _fresh_inputs(model):
    """New ``tf_keras.Input`` tensors like ``model``'s, for calling its layers again: ``({id(old): new}, [new])``."""
    tf_keras = _tf_keras()
    tensors, inputs = {}, []
    for inp in model.inputs:
        new = tf_keras.Input(shape=inp.shape[1:], batch_size=inp.shape[0], dtype=inp.dtype,
                             name=inp.name.split(":")[0])
        tensors[id(inp)] = new
        inputs.append(new)
    return tensors, inputs


def fold_transposed_batchnorm(model):
    """A copy of a ``tf_keras`` functional model with every ``Conv2DTranspose`` → ``BatchNormalization`` pair folded.

    The batch norm's inference transform ``gamma * (y - mean) / sqrt(var + eps) + beta`` is per output channel, so it
    becomes a scale of the transposed kernel's output channels and a bias. tfmot folds only Conv2D and
    DepthwiseConv2D batch norms; an unfolded one would be quantised on its own and cost an extra requantisation.

    Returns:
        A new model computing the same function (in inference mode), whose folded transposed convolutions keep their
        names and have a bias; ``model`` itself when there is nothing to fold.
    """
    tf_keras = _tf_keras()
    layers = tf_keras.layers
    consumers: dict[str, int] = {}
    for layer in model.layers:
        for src in _inbound_layers(model, layer):
            consumers[src.name] = consumers.get(src.name, 0) + 1
    folds = {}
    for layer in model.layers:
        inbound = _inbound_layers(model, layer)
        if not isinstance(layer, layers.BatchNormalization) or len(inbound) != 1:
            continue
        src = inbound[0]
        if (isinstance(src, layers.Conv2DTranspose) and consumers.get(src.name) == 1
                and len(_nodes(model, src)) == 1 and src.get_config().get("activation") in (None, "linear")
                and layer.axis in ([3], [-1], 3, -1)):
            folds[src.name] = layer
    if not folds:
        return model

    tensors, inputs = _fresh_inputs(model)
    skipped = {bn.name for bn in folds.values()}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        (node,) = _nodes(model, layer)
        args = node.input_tensors
        mapped = ([tensors[id(t)] for t in args] if isinstance(args, (list, tuple)) else tensors[id(args)])
        if layer.name in skipped:
            tensors[id(layer.output)] = mapped
            continue
        if layer.name in folds:
            bn = folds[layer.name]
            gamma, beta, mean, var = _bn_params(bn)
            scale = gamma / np.sqrt(var + bn.epsilon)
            weights = layer.get_weights()
            kernel = weights[0] * scale[None, None, :, None]  # (kh, kw, out, in): output channels on axis 2
            bias = weights[1] if layer.use_bias else np.zeros_like(mean)
            config = dict(layer.get_config(), use_bias=True)
            folded = layers.Conv2DTranspose.from_config(config)
            out = folded(mapped)
            folded.set_weights([kernel, (bias - mean) * scale + beta])
            tensors[id(bn.output)] = out
            tensors[id(layer.output)] = out
            continue
        tensors[id(layer.output)] = layer(mapped)
    outputs = [tensors[id(t)] for t in model.outputs]
    return tf_keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _source_name(layer) -> str:
    # The name of the original layer behind a tfmot wrapper; tfmot's input QuantizeLayer stands for the model input.
    if type(layer).__name__ == "QuantizeLayer":
        inbound = layer._inbound_nodes[0].inbound_layers
        return _source_name(inbound[0] if isinstance(inbound, list) else inbound)
    return getattr(layer, "layer", layer).name


def restore_input_order(qat_model, annotated):
    """Gives every multi-input layer of a ``quantize_apply`` result its inputs in the annotated model's order.

    tfmot's ``ConcatTransform`` can reconnect a ``Concatenate`` with its inputs permuted
    (tensorflow/model-optimization#1061): DeepLab's ASPP concatenation came out with the image-pooling branch first,
    so the projection after it, whose kernel was trained on the other channel order, computed something else. The
    layers are called again, in order, on new inputs (weights and quantizers are shared, nothing is re-created).

    Returns:
        ``(model, names of the layers whose inputs were reordered)``; ``qat_model`` itself when none was.
    """
    tf_keras = _tf_keras()
    expected = {}
    for layer in annotated.layers:
        inbound = _inbound_layers(annotated, layer)
        if len(inbound) > 1:
            expected[_source_name(layer)] = [_source_name(src) for src in inbound]
    fixed = []
    tensors, inputs = _fresh_inputs(qat_model)
    for layer in qat_model.layers:
        if isinstance(layer, tf_keras.layers.InputLayer):
            continue
        (node,) = _nodes(qat_model, layer)
        args = node.input_tensors
        if isinstance(args, (list, tuple)):
            mapped = [tensors[id(t)] for t in args]
            have = [_source_name(t._keras_history.layer) for t in args]
            want = expected.get(_source_name(layer))
            if want is not None and have != want and sorted(have) == sorted(want):
                remaining = list(range(len(have)))
                order = []
                for name in want:
                    k = next(i for i in remaining if have[i] == name)
                    remaining.remove(k)
                    order.append(k)
                mapped = [mapped[k] for k in order]
                fixed.append(_source_name(layer))
        else:
            mapped = tensors[id(args)]
        tensors[id(node.output_tensors)] = layer(mapped)
    if not fixed:
        return qat_model, []
    outputs = [tensors[id(t)] for t in qat_model.outputs]
    return tf_keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=qat_model.name), fixed


def _bn_params(bn):
    # gamma / beta are absent when scale / center are off; the weight list follows that order.
    weights = list(bn.get_weights())
    channels = weights[-1].shape[0]
    gamma = weights.pop(0) if bn.scale else np.ones(channels, np.float32)
    beta = weights.pop(0) if bn.center else np.zeros(channels, np.float32)
    mean, var = weights
    return gamma, beta, mean, var


def _output_quantize_config():
    """A QuantizeConfig that leaves the layer's computation float and fake-quantises its output to 8 bits."""
    import tensorflow as tf

    tfmot = _tfmot()
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
    inbound = _inbound_layers(model, layer)
    return (len(inbound) == 1 and type(inbound[0]).__name__ in ("Conv2D", "DepthwiseConv2D")
            and inbound[0].get_config().get("activation") in (None, "linear"))


def annotate(model):
    """Annotates a ``tf_keras`` model for tfmot's default 8-bit scheme, with output quantisation where it has none.

    Returns:
        ``(annotated model, scope)``: pass ``scope`` (custom objects) to ``tfmot.quantization.keras.quantize_scope``
        around ``quantize_apply``, and to ``tf_keras.models.load_model`` for a saved QAT model.
    """
    tfmot = _tfmot()
    tf_keras = _tf_keras()
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

    Steps: `rebuild_tf_keras` (same builder, weights copied, outputs checked), `fold_transposed_batchnorm`,
    `annotate` (default 8-bit scheme, output quantisation for the layers it rejects), ``quantize_apply``. The
    returned model carries ``kerasseg_metadata`` (a copy of the trained model's) and ``qat_scope`` (the custom
    objects needed to reload it with ``tf_keras``).

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
    if _is_tf_keras_model(model):
        raise ValueError(f"Expected a Keras 3 model (the trained kerasseg model). Received: a tf_keras model "
                         f"{model.name!r}; quantize_aware rebuilds it with tf_keras itself")
    tfmot = _tfmot()
    twin = rebuild_tf_keras(model, model_name=model_name, builder_kwargs=builder_kwargs, check_batch=check_batch,
                            atol=atol)
    if not isinstance(freeze_batch_norm, bool):
        raise ValueError(f"Expected freeze_batch_norm to be True or False. "
                         f"Received: freeze_batch_norm={freeze_batch_norm!r}")
    folded = fold_transposed_batchnorm(twin)
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

    tf_keras = _tf_keras()
    shape = static_input_shape(float_model)
    images = np.concatenate([s[0] for s in calibration_samples(representative_data, int(num_calibration_samples),
                                                                 shape, False)])
    layers = [layer for layer in float_model.layers if not isinstance(layer, tf_keras.layers.InputLayer)]
    # The output of each layer's call in this model (a reused layer also keeps its calls in older graphs).
    probe = tf_keras.Model(float_model.inputs, [_nodes(float_model, layer)[0].output_tensors for layer in layers])
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


def qat_to_tflite_bytes(qat_model, *, representative_data=None, num_calibration_samples: int = 20,
                        io_dtype: str = "int8") -> bytes:
    """Converts a quantization-aware ``tf_keras`` model to full-integer TFLite bytes (builtin operators only).

    The conversion starts from a static batch-1 concrete function, like every kerasseg export. The fake-quant
    ranges learnt during training set the int8 scales; ``representative_data`` (normalised float images, optional)
    only covers tensors without a trained range.

    Raises:
        ValueError: a model that is not quantization-aware, or a converted model with non-builtin operators or float
            tensors.
    """
    import tensorflow as tf

    from kerasseg.export.tflite import calibration_samples, static_input_shape, custom_ops, float_tensors

    if not _is_tf_keras_model(qat_model) or not any("quant" in type(l).__name__.lower() for l in qat_model.layers):
        raise ValueError(f"Expected a quantization-aware tf_keras model from quantize_aware(). "
                         f"Received: qat_model={getattr(qat_model, 'name', qat_model)!r}")
    if io_dtype not in ("int8", "uint8"):
        raise ValueError(f"Expected io_dtype to be one of ['int8', 'uint8']. Received: io_dtype={io_dtype!r}")
    shape = static_input_shape(qat_model)

    @tf.function(input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="image")])
    def serve(image):
        return qat_model(image, training=False)

    from kerasseg.layers.unpooling import integer_unpooling

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
        from kerasseg.export.check import EdgeCompatibilityError, check

        report = check(data, target)
        if not report.ok:
            raise EdgeCompatibilityError(f"Expected the QAT model to pass the {target!r} target's rules. "
                                         f"Received: {report.summary()}", report)
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



def masked_sparse_crossentropy(ignore_label: int | None = 255, class_weights=None):
    """Pixel-wise cross-entropy on logits for ``tf_keras`` training, ignoring ``ignore_label`` pixels.

    kerasseg's own losses are Keras 3 objects, which a ``tf_keras`` model cannot compile with. With
    ``class_weights`` each pixel is weighted by its true class and the sum is normalised by the sum of the weights,
    as `kerasseg.losses.CrossEntropyLoss` does, so a model trained with weights is fine-tuned on the same objective.
    """
    import tensorflow as tf

    if class_weights is not None:
        class_weights = [float(w) for w in class_weights]
        if not class_weights or any(not w >= 0 for w in class_weights):
            raise ValueError(f"Expected class_weights to be a list of non-negative numbers. "
                             f"Received: class_weights={class_weights!r}")

    def loss(labels, logits):
        labels = tf.cast(labels, tf.int32)
        if labels.shape.rank == logits.shape.rank:
            labels = tf.squeeze(labels, -1)
        valid = tf.ones_like(labels, tf.bool) if ignore_label is None else tf.not_equal(labels, ignore_label)
        safe = tf.where(valid, labels, tf.zeros_like(labels))
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=tf.cast(logits, tf.float32))
        weights = tf.cast(valid, tf.float32)
        if class_weights is not None:
            weights *= tf.gather(tf.constant(class_weights, tf.float32), safe)
            return tf.reduce_sum(ce * weights) / tf.maximum(tf.reduce_sum(weights), 1e-6)
        return tf.reduce_sum(ce * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

    return loss


def _best_epoch_callback(qat_model, score, verbose):
    """A tf_keras callback that scores the model (``score(qat_model) -> mIoU``) before training and after every
    epoch, and restores the best state's weights (quantiser ranges included) when training ends."""
    tf_keras = _tf_keras()

    class KeepBestEpoch(tf_keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.scores, self.best, self.best_epoch, self.best_weights = [], -1.0, 0, None

        def _score(self, epoch):
            miou = float(score(qat_model))
            self.scores.append(miou)
            if miou > self.best:
                self.best, self.best_epoch, self.best_weights = miou, epoch, qat_model.get_weights()
            if verbose:
                print(f"QAT epoch {epoch}: validation mIoU {100 * miou:.2f}")
            return miou

        def on_train_begin(self, logs=None):
            self._score(0)

        def on_epoch_end(self, epoch, logs=None):
            miou = self._score(epoch + 1)
            if logs is not None:
                logs["val_miou"] = miou

        def on_train_end(self, logs=None):
            qat_model.set_weights(self.best_weights)

    return KeepBestEpoch()


def int8_scorer(validation_data, num_classes: int, ignore_label: int | None = 255, *, representative_data=None,
                num_calibration_samples: int = 20, max_images: int | None = None):
    """A ``score(qat_model) -> mIoU`` for `fine_tune` that converts the model to its int8 TFLite file (in memory)
    and scores that file, i.e. what will be shipped, rather than the fake-quantised graph."""
    from kerasseg.evaluation import evaluate
    from kerasseg.export.tflite import TFLiteModel

    def score(qat_model):
        data = qat_to_tflite_bytes(qat_model, representative_data=representative_data,
                                   num_calibration_samples=num_calibration_samples)
        return evaluate(TFLiteModel(data), validation_data, num_classes=num_classes, ignore_label=ignore_label,
                        max_images=max_images).miou

    return score


def fine_tune(qat_model, train_data, *, epochs: int = 2, learning_rate: float = 1e-4, steps_per_epoch=None,
              ignore_label: int | None = 255, class_weights=None, verbose: int = 2, validation_data=None,
              num_classes: int | None = None, max_validation_images: int | None = None, score=None):
    """Compiles ``qat_model`` (Adam, ignore-aware cross-entropy) and fine-tunes it with ``fit``.

    With ``validation_data`` (or a ``score`` function) the model is scored before the first step and after every
    epoch, and the best of those states is kept, as ``tools/train.py`` keeps ``best.keras``: when the float model
    has converged, post-training quantisation is already close to lossless and a few epochs on the training split
    can move the validation score either way by a few tenths of a point.

    Args:
        qat_model: the model returned by `quantize_aware`.
        train_data: ``tf.data.Dataset`` of batched ``(normalised images, labels)``, or an ``(images, labels)``
            tuple of arrays.
        epochs: fine-tuning epochs; QAT starts from trained weights, so a few suffice.
        learning_rate: Adam learning rate, typically 10-100 times below the float training's.
        steps_per_epoch: batches per epoch (the whole dataset when ``None``).
        ignore_label: label excluded from the loss.
        class_weights: per-class loss weights (those of the float training, e.g. ``"median"`` weights resolved
            with `kerasseg.data.class_weights.resolve_class_weights`), or ``None``.
        verbose: ``fit`` verbosity.
        validation_data: ``(normalised image, labels)`` pairs on which the fake-quantised model is scored to select
            the state, or ``None``.
        num_classes: number of classes (required with ``validation_data``).
        max_validation_images: score at most this many validation images.
        score: instead of ``validation_data``, a function ``score(qat_model) -> mIoU``, e.g. `int8_scorer`, which
            scores the converted int8 file.

    Returns:
        The ``fit`` history dict; when selecting, also ``val_miou_per_epoch`` (epoch 0 = before training) and
        ``best_epoch``.
    """
    tf_keras = _tf_keras()
    for arg, value in (("epochs", epochs),):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"Expected {arg} to be a positive integer. Received: {arg}={value!r}")
    if not float(learning_rate) > 0:
        raise ValueError(f"Expected a positive learning_rate. Received: learning_rate={learning_rate!r}")
    if score is None and validation_data is not None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"Expected num_classes to be a positive integer with validation_data. "
                             f"Received: num_classes={num_classes!r}")
        from kerasseg.evaluation import evaluate, keras_predict_fn

        predict = keras_predict_fn(qat_model)

        def score(model):
            return evaluate(predict, validation_data, num_classes=num_classes, ignore_label=ignore_label,
                            max_images=max_validation_images).miou

    callbacks = [] if score is None else [_best_epoch_callback(qat_model, score, verbose)]
    qat_model.compile(optimizer=tf_keras.optimizers.Adam(float(learning_rate)),
                      loss=masked_sparse_crossentropy(ignore_label, class_weights))
    if isinstance(train_data, tuple) and len(train_data) == 2:
        # In-memory (images, labels) arrays; a tuple passed as x would be read as a two-input batch.
        history = qat_model.fit(*train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose,
                                callbacks=callbacks)
    else:
        history = qat_model.fit(train_data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose,
                                callbacks=callbacks)
    result = dict(history.history)
    if callbacks:
        result["val_miou_per_epoch"] = list(callbacks[0].scores)
        result["best_epoch"] = callbacks[0].best_epoch
    return result



