"""Shared building blocks: small functions that take a tensor and return a tensor.

Every block requires a ``name`` prefix so that each layer it creates has a stable, readable name (weights can be
ported between versions and heads can find layers by name). Blocks receive the Keras module to build with
(``keras_module``): Keras 3 by default, ``tf_keras`` for quantization-aware training, which builds the same graph.
"""

from __future__ import annotations

from typing import Sequence

from kerasseg.layers.bilinear import bilinear_initializer_class

__all__ = [
    "resolve_keras",
    "conv_bn_act",
    "separable_conv_bn_act",
    "upsample_bilinear",
    "upsample_transposed_bilinear",
    "check_input_shape",
    "check_positive_int",
    "check_rate",
]


def resolve_keras(keras_module=None):
    """Returns the Keras module to build with (Keras 3 unless another one is given)."""
    if keras_module is None:
        import keras

        return keras
    for attr in ("layers", "Input", "Model"):
        if not hasattr(keras_module, attr):
            raise ValueError(
                f"Expected a Keras module such as `keras` or `tf_keras`. Received: keras_module={keras_module!r} "
                f"(it has no attribute {attr!r})")
    return keras_module


def check_input_shape(input_shape, *, multiple_of: int = 1, min_size: int = 1, channels: int | None = None,
                      arg: str = "input_shape") -> tuple[int, int, int]:
    """Validates a static ``(height, width, channels)`` input shape and returns it as a tuple of ints."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"Expected {arg} to be (height, width, channels) with integer sizes. "
                         f"Received: {arg}={input_shape!r}") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"Expected {arg} to be (height, width, channels) with positive sizes. "
                         f"Received: {arg}={input_shape!r}")
    h, w, c = shape
    if channels is not None and c != channels:
        raise ValueError(f"Expected {arg} with {channels} channels. Received: {arg}={input_shape!r}")
    if h % multiple_of or w % multiple_of:
        raise ValueError(f"Expected height and width in {arg} to be multiples of {multiple_of}. "
                         f"Received: {arg}={input_shape!r}")
    if h < min_size or w < min_size:
        raise ValueError(f"Expected height and width in {arg} to be at least {min_size}. "
                         f"Received: {arg}={input_shape!r}")
    return shape


def check_positive_int(value, arg: str) -> int:
    """Returns ``value`` if it is a positive ``int`` (not a bool); raises ``ValueError`` naming ``arg`` otherwise."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Expected {arg} to be a positive integer. Received: {arg}={value!r}")
    return value


def check_rate(value, arg: str = "dropout") -> float:
    """Returns ``value`` as a float if it is a rate in [0, 1); raises ``ValueError`` naming ``arg`` otherwise."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"Expected {arg} in [0, 1). Received: {arg}={value!r}")
    return float(value)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(i) for i in v)


def conv_bn_act(x, filters: int, kernel_size=3, *, name: str, strides=1, dilation_rate=1, use_bias: bool = False,
                batch_norm: bool = True, activation: str | None = "relu", padding: str = "same",
                bn_epsilon: float = 1e-5, bn_momentum: float = 0.99, kernel_initializer="he_normal",
                keras_module=None):
    """Convolution, optional batch norm, optional activation.

    Layers are named ``{name}_conv``, ``{name}_bn`` and ``{name}_{activation}``. Convolutions followed by batch norm
    usually have no bias (the BN offset replaces it).
    """
    layers = resolve_keras(keras_module).layers
    x = layers.Conv2D(filters, _pair(kernel_size), strides=_pair(strides), dilation_rate=_pair(dilation_rate),
                      padding=padding, use_bias=use_bias, kernel_initializer=kernel_initializer,
                      name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(epsilon=bn_epsilon, momentum=bn_momentum, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def separable_conv_bn_act(x, filters: int, kernel_size=3, *, name: str, strides=1, dilation_rate=1,
                          activation: str | None = "relu", bn_epsilon: float = 1e-5, bn_momentum: float = 0.99,
                          depth_activation: bool = True, keras_module=None):
    """Depthwise-separable convolution as in DeepLab v3+ / Xception: depthwise conv + BN (+ act), 1×1 conv + BN + act.

    Layers are named ``{name}_depthwise``, ``{name}_depthwise_bn``, ``{name}_pointwise``, ``{name}_pointwise_bn``.
    """
    layers = resolve_keras(keras_module).layers
    x = layers.DepthwiseConv2D(_pair(kernel_size), strides=_pair(strides), dilation_rate=_pair(dilation_rate),
                               padding="same", use_bias=False, name=f"{name}_depthwise")(x)
    x = layers.BatchNormalization(epsilon=bn_epsilon, momentum=bn_momentum, name=f"{name}_depthwise_bn")(x)
    if depth_activation and activation:
        x = layers.Activation(activation, name=f"{name}_depthwise_{activation}")(x)
    x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal", name=f"{name}_pointwise")(x)
    x = layers.BatchNormalization(epsilon=bn_epsilon, momentum=bn_momentum, name=f"{name}_pointwise_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_pointwise_{activation}")(x)
    return x


def upsample_bilinear(x, size: Sequence[int], *, name: str, keras_module=None):
    """Bilinear resize of ``x`` to the static spatial ``size`` ``(height, width)``.

    Uses a static-size resize (``RESIZE_BILINEAR`` in TFLite, supported by the GPU delegate and NPUs) rather than a
    shape computed at run time, which would add SHAPE / STRIDED_SLICE ops that edge delegates reject.
    """
    layers = resolve_keras(keras_module).layers
    h, w = int(size[0]), int(size[1])
    if tuple(x.shape[1:3]) == (h, w):
        return x
    in_h, in_w = x.shape[1], x.shape[2]
    if in_h and in_w and h % in_h == 0 and w % in_w == 0 and h // in_h == w // in_w:
        return layers.UpSampling2D(size=(h // in_h, w // in_w), interpolation="bilinear", name=name)(x)
    return layers.Resizing(h, w, interpolation="bilinear", name=name)(x)


def upsample_transposed_bilinear(x, factor: int, *, name: str, trainable: bool = False, keras_module=None):
    """Per-channel ×``factor`` upsampling by a transposed convolution initialised to bilinear interpolation.

    FCN's upsampling: a ``2·factor`` × ``2·factor`` kernel with stride ``factor`` and "same" padding, no bias, so
    the output is exactly ``factor`` times the input size for any input size (no Caffe-style crop offsets) and
    interior pixels equal half-pixel-centred bilinear resizing. With ``trainable=False`` the kernel stays the fixed
    interpolation and is not counted among the trainable weights; the kernel initializer is a registered class, so
    a model rebuilt from its config gets the same kernel. The layer is named ``name``.
    """
    keras = resolve_keras(keras_module)
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
        raise ValueError(f"Expected an integer upsampling factor >= 2. Received: factor={factor!r}")
    return keras.layers.Conv2DTranspose(
        int(x.shape[-1]), 2 * factor, strides=factor, padding="same", use_bias=False,
        kernel_initializer=bilinear_initializer_class(keras)(), trainable=trainable, name=name)(x)
