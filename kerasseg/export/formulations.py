"""Export formulations: the Keras model as edge compilers accept it, computing the same function.

The models stay faithful to their papers for training; `edge_formulation` rewrites, for export only, the layers
whose standard TFLite lowering an accelerator refuses, into equivalent layers it runs:

- Bilinear up-sampling (``UpSampling2D(interpolation="bilinear")`` or ``Resizing(interpolation="bilinear")``) by
  integer factors other than 2 becomes `kerasseg.layers.edge_ops.PooledBilinearUpsampling2D` (RESIZE_NEAREST_NEIGHBOR
  and AVERAGE_POOL_2D; exact in float, see `kerasseg.layers.edge_ops.bilinear_upsample`). Vela places
  RESIZE_BILINEAR on the CPU unless the factor is 2 on Ethos-U55 / U65 (DeepLab v3+'s ×4) or a power of two on
  Ethos-U85 (PSPNet's pyramid bins, e.g. ×45 at 720×720); ×2 stays RESIZE_BILINEAR, which every target runs.
- A ReLU that follows a transposed convolution (directly or through batch norm, ERFNet's up-samplers) becomes a
  ``PReLU`` whose slopes are zero, the same function. The TFLite converter fuses a ReLU into TRANSPOSE_CONV, which
  makes it a version-4 operator, and LiteRT's GPU accelerator takes TRANSPOSE_CONV up to version 3 only. A
  ``LeakyReLU(negative_slope=0)`` is no way out: the converter turns it back into a fused ReLU where the activation
  feeds a residual addition (ERFNet). It keeps PRELU, which the GPU delegate and Vela both run.

SegNet's unpooling needs no rewrite: `kerasseg.layers.MaxUnpooling2D` is built from operators every target runs
(full-integer exports trace its integer switch arithmetic, see `kerasseg.layers.unpooling.integer_unpooling`). Its
float graph is exact on the GPU at float16 too; SegNet's lower agreement there comes from float16 pre-pool maps, not
the unpooling.

The rewrite is a copy (Keras' ``clone_model`` with the original weights) that `kerasseg.export.to_tflite` makes for
every TFLite export; the model itself is left as it is. Quantization-aware training (`kerasseg.qat.quantize_aware`)
rewrites its ``tf_keras`` twin the same way before the fine-tune, so QAT files are formulated too and their ranges
are learnt on the operators they run.
"""

from __future__ import annotations

__all__ = ["edge_formulation", "formulation_plan"]


def _single_input(layer):
    """The one input tensor of ``layer``, when it has a single input and is called once; else ``None``."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if len(nodes) != 1:
        return None
    inputs = nodes[0].input_tensors
    # tf_keras gives a single input as the tensor itself, Keras 3 as a one-element list.
    inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    return inputs[0] if len(inputs) == 1 else None


def _producer(layer):
    """The layer whose output ``layer`` takes, when it has a single input and is called once; else ``None``."""
    tensor = _single_input(layer)
    if tensor is None:
        return None
    history = tensor._keras_history
    # Keras 3 records the operation, tf_keras the layer.
    return getattr(history, "operation", None) or getattr(history, "layer", None)


def _integer_factors(layer, keras):
    """``(factor_h, factor_w)`` of a bilinear up-sampling layer by integer factors, else ``None``."""
    if isinstance(layer, keras.layers.UpSampling2D):
        if layer.interpolation != "bilinear" or layer.data_format != "channels_last":
            return None
        return tuple(int(f) for f in layer.size)
    if isinstance(layer, keras.layers.Resizing):
        if (layer.interpolation != "bilinear" or getattr(layer, "crop_to_aspect_ratio", False)
                or getattr(layer, "pad_to_aspect_ratio", False)):
            return None
        tensor = _single_input(layer)
        size = None if tensor is None else tuple(tensor.shape[1:3])
        if size is None or not all(size) or layer.height % size[0] or layer.width % size[1]:
            return None
        return layer.height // size[0], layer.width // size[1]
    return None


def _is_plain_relu(layer, keras) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return layer.max_value is None and not layer.negative_slope and not layer.threshold
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", None) == "relu"
    return False


def _follows_transposed_conv(layer, keras) -> bool:
    producer = _producer(layer)
    if isinstance(producer, keras.layers.BatchNormalization):
        producer = _producer(producer)
    return isinstance(producer, keras.layers.Conv2DTranspose) and producer.activation.__name__ == "linear"


def formulation_plan(model, keras_module=None) -> dict[str, str]:
    """What `edge_formulation` rewrites in ``model``: ``{layer name: description of the replacement}``.

    Args:
        model: a functional model.
        keras_module: the Keras module ``model`` is built with (``keras``, the default, or ``tf_keras``).
    """
    from kerasseg.layers.blocks import resolve_keras

    keras = resolve_keras(keras_module)
    plan = {}
    for layer in model.layers:
        factors = _integer_factors(layer, keras)
        if factors is not None and factors != (2, 2) and factors != (1, 1):
            plan[layer.name] = f"PooledBilinearUpsampling2D(size={factors})"
        elif _is_plain_relu(layer, keras) and _follows_transposed_conv(layer, keras):
            plan[layer.name] = "PReLU(alpha=0)"
    return plan


def _replacement(layer, description: str, keras):
    from kerasseg.layers.edge_ops import pooled_bilinear_class

    if description.startswith("PooledBilinear"):
        return pooled_bilinear_class(keras)(_integer_factors(layer, keras), name=layer.name,
                                            dtype=layer.dtype_policy)
    # One slope per channel, as TFLite's PRELU broadcasts it; zero slopes make it exactly a ReLU.
    return keras.layers.PReLU(alpha_initializer="zeros", shared_axes=[1, 2], name=layer.name,
                              dtype=layer.dtype_policy)


def edge_formulation(model, keras_module=None):
    """``model`` with the export formulations of this module (see the module docstring).

    Args:
        model: a functional model.
        keras_module: the Keras module ``model`` is built with: ``keras`` (default) or ``tf_keras``, whose
            quantization-aware models `kerasseg.qat.quantize_aware` formulates before they are trained.

    Returns:
        ``model`` itself when nothing needs rewriting, else a new functional model with copies of ``model``'s other
        layers and weights (and its ``kerasseg_metadata``) that computes the same function.
    """
    from kerasseg.layers.blocks import resolve_keras

    keras = resolve_keras(keras_module)
    plan = formulation_plan(model, keras)
    if not plan:
        return model
    replacements = {name: _replacement(model.get_layer(name), description, keras)
                    for name, description in plan.items()}

    def clone(layer):
        # Fresh copies rather than the shared layers: calling a layer again adds an inbound node to it, which would
        # change what `formulation_plan` and `kerasseg.export.output_upsampling` see in ``model`` afterwards.
        return replacements.get(layer.name) or layer.__class__.from_config(layer.get_config())

    rewritten = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.name not in replacements and layer.weights:
            rewritten.get_layer(layer.name).set_weights(layer.get_weights())
    if getattr(model, "kerasseg_metadata", None) is not None:
        rewritten.kerasseg_metadata = model.kerasseg_metadata
    return rewritten
