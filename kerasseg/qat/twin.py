"""The ``tf_keras`` twin of a trained Keras 3 kerasseg model, and the graph surgery QAT needs on it.

tensorflow-model-optimization (tfmot) only accepts ``tf_keras`` models, so a trained Keras 3 model is rebuilt with
``tf_keras`` by its own registry builder (every builder takes ``keras_module``) and its weights are copied across
layer by layer and checked equal on a batch (`rebuild_tf_keras`). Transposed convolutions followed by batch norm are
folded (`fold_transposed_batchnorm`: tfmot folds Conv2D / DepthwiseConv2D + BN itself, not Conv2DTranspose + BN), and
`restore_input_order` undoes tfmot's permutation of multi-input layers.

This package is the only place kerasseg imports ``tf_keras`` and tfmot, and only inside functions. Importing tfmot
sets ``TF_USE_LEGACY_KERAS=1`` in the process environment, which would switch a user's later ``tf.keras`` to
``tf_keras``; `import_tfmot` restores the variable right after the import.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["import_tfmot", "import_tf_keras", "is_tf_keras_model", "builder_kwargs_of", "rebuild_tf_keras",
           "layer_nodes", "inbound_layers", "source_name", "fold_transposed_batchnorm", "restore_input_order"]

# Builder arguments recorded by `kerasseg.build_model` that the rebuild drops: the backbone weights are already in
# the trained model and are copied from it, never loaded again.
_NOT_REBUILT = ("backbone_weights",)


def import_tfmot():
    """Imports and returns tfmot (and tf_keras), keeping ``TF_USE_LEGACY_KERAS`` as it was for the process."""
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


def import_tf_keras():
    """Imports and returns ``tf_keras`` through `import_tfmot`, so that the environment is left alone."""
    import_tfmot()
    import tf_keras

    return tf_keras


def is_tf_keras_model(model) -> bool:
    """Whether ``model`` is a ``tf_keras`` object (the twin or its QAT copy) rather than a Keras 3 one."""
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

    tf_keras = import_tf_keras()
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


def layer_nodes(model, layer) -> list:
    """The calls (``tf_keras`` nodes) of ``layer`` that belong to ``model``.

    A layer reused in a rebuilt graph keeps its calls in the older graphs too; only those ``model`` records count.
    """
    return [node for i, node in enumerate(layer._inbound_nodes) if f"{layer.name}_ib-{i}" in model._network_nodes]


def inbound_layers(model, layer) -> list:
    """The layers feeding ``layer``'s single call in ``model``, in call order; ``[]`` when it is called other than
    once there."""
    nodes = layer_nodes(model, layer)
    if len(nodes) != 1:
        return []
    inbound = nodes[0].inbound_layers
    return inbound if isinstance(inbound, list) else [inbound]


def _fresh_inputs(model):
    """New ``tf_keras.Input`` tensors like ``model``'s, for calling its layers again: ``({id(old): new}, [new])``."""
    tf_keras = import_tf_keras()
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
    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    consumers: dict[str, int] = {}
    for layer in model.layers:
        for src in inbound_layers(model, layer):
            consumers[src.name] = consumers.get(src.name, 0) + 1
    folds = {}
    for layer in model.layers:
        inbound = inbound_layers(model, layer)
        if not isinstance(layer, layers.BatchNormalization) or len(inbound) != 1:
            continue
        src = inbound[0]
        if (isinstance(src, layers.Conv2DTranspose) and consumers.get(src.name) == 1
                and len(layer_nodes(model, src)) == 1 and src.get_config().get("activation") in (None, "linear")
                and layer.axis in ([3], [-1], 3, -1)):
            folds[src.name] = layer
    if not folds:
        return model

    tensors, inputs = _fresh_inputs(model)
    skipped = {bn.name for bn in folds.values()}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        (node,) = layer_nodes(model, layer)
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


def source_name(layer) -> str:
    """The name of the original layer behind a tfmot wrapper (tfmot's input ``QuantizeLayer`` stands for the model
    input it quantises)."""
    if type(layer).__name__ == "QuantizeLayer":
        inbound = layer._inbound_nodes[0].inbound_layers
        return source_name(inbound[0] if isinstance(inbound, list) else inbound)
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
    tf_keras = import_tf_keras()
    expected = {}
    for layer in annotated.layers:
        inbound = inbound_layers(annotated, layer)
        if len(inbound) > 1:
            expected[source_name(layer)] = [source_name(src) for src in inbound]
    fixed = []
    tensors, inputs = _fresh_inputs(qat_model)
    for layer in qat_model.layers:
        if isinstance(layer, tf_keras.layers.InputLayer):
            continue
        (node,) = layer_nodes(qat_model, layer)
        args = node.input_tensors
        if isinstance(args, (list, tuple)):
            mapped = [tensors[id(t)] for t in args]
            have = [source_name(t._keras_history.layer) for t in args]
            want = expected.get(source_name(layer))
            if want is not None and have != want and sorted(have) == sorted(want):
                remaining = list(range(len(have)))
                order = []
                for name in want:
                    k = next(i for i in remaining if have[i] == name)
                    remaining.remove(k)
                    order.append(k)
                mapped = [mapped[k] for k in order]
                fixed.append(source_name(layer))
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
