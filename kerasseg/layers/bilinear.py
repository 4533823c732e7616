"""Bilinear-interpolation kernels for transposed convolutions (FCN's "deconvolution" upsampling).

A ``Conv2DTranspose`` with a ``2f`` × ``2f`` kernel, stride ``f``, "same" padding and this kernel upsamples each
channel by ``f`` with bilinear interpolation aligned on pixel centres (the ``half_pixel_centers`` convention of
``tf.image.resize``), except in the outer ``f / 2`` pixels, where the missing neighbour counts as zero. Kept
non-trainable it is a fixed interpolation that still converts to a single TFLite TRANSPOSE_CONV.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerasseg.layers._twin import twin_class

__all__ = ["BilinearUpsamplingInitializer", "bilinear_initializer_class", "bilinear_kernel"]


def bilinear_kernel(size: int) -> np.ndarray:
    """The ``size`` × ``size`` bilinear interpolation filter for upsampling by ``ceil(size / 2)``.

    This is the filter FCN's authors fill their deconvolution layers with: a separable tent peaking at the kernel
    centre. Even sizes ``2f`` give weights ``(2k + 1) / 2f`` and ``1 - (2k + 1) / 2f``, so every output pixel is a
    convex combination of its two nearest inputs along each axis.
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    tent = 1.0 - np.abs(np.arange(size, dtype=np.float64) - center) / factor
    return np.outer(tent, tent).astype(np.float32)


class _BilinearMixin:
    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        if len(shape) != 4 or shape[0] != shape[1] or shape[2] != shape[3]:
            raise ValueError("Expected a square transposed-convolution kernel shape (size, size, channels, channels) "
                             f"with as many output as input channels. Received: shape={shape}")
        size, _, channels, _ = shape
        kernel = np.zeros(shape, np.float32)
        # One filter per channel on the diagonal: each class map is interpolated on its own, never mixed.
        kernel[:, :, np.arange(channels), np.arange(channels)] = bilinear_kernel(size)[:, :, None]
        return tf.constant(kernel, dtype=tf.as_dtype(dtype or "float32"))

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="kerasseg")
class BilinearUpsamplingInitializer(_BilinearMixin, keras.initializers.Initializer):
    """Initialises a ``(size, size, channels, channels)`` transposed-convolution kernel to per-channel bilinear
    interpolation (see `bilinear_kernel`)."""


def bilinear_initializer_class(keras_module=None) -> type:
    """`BilinearUpsamplingInitializer` for the given Keras module (``keras`` or ``tf_keras``)."""
    return twin_class(BilinearUpsamplingInitializer, keras_module, "initializers.Initializer")
